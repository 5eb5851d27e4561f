// Native memory for tensors: 64-byte aligned blocks handed to JS as external ArrayBuffers.
// Lifetime is explicit (free() detaches the buffer and releases the memory at once); if a buffer
// is never freed, the GC finalizer releases it. A per-allocation record makes the two paths safe
// against double frees even when an address is reused.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "args.h"
#include "gemm.h"
#include "registry.h"

namespace qlora {
namespace {

struct Block {
  void* data;
  size_t bytes;
  bool freed;
};

std::mutex mu;
std::unordered_map<void*, Block*> live;  // data pointer -> record, for free()
std::atomic<int64_t> allocated{0};
std::atomic<int64_t> peak{0};

void release(Block* b) {
  if (b->freed) return;
  b->freed = true;
  std::free(b->data);
  allocated.fetch_sub(static_cast<int64_t>(b->bytes));
}

// Set while Alloc is inside napi_create_external_arraybuffer. When the runtime refuses the buffer
// (Node: larger than buffer.constants.MAX_LENGTH, 4 GiB on Node 20) it runs the finalizer at once
// and still reports failure. The finalizer must then leave the block to Alloc: releasing it there
// too freed it twice (and node-addon-api's ArrayBuffer::New also deleted its finalizer record a
// second time: the "double free detected in tcache 2" of arenas merged past 4 GiB).
thread_local Block* creating = nullptr;

void finalize(napi_env, void*, void* hint) {
  Block* b = static_cast<Block*>(hint);
  if (b == creating) return;
  {
    std::lock_guard<std::mutex> lk(mu);
    if (!b->freed) {
      live.erase(b->data);
      release(b);
    }
  }
  delete b;
}

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t bytes = intArg(info, 0, "bytes");
  size_t rounded = static_cast<size_t>((bytes + 63) / 64 * 64);
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) fail(env, "out of memory allocating " + std::to_string(bytes) + " bytes");
  Block* b = new Block{p, rounded, false};
  {
    std::lock_guard<std::mutex> lk(mu);
    live[p] = b;
  }
  allocated.fetch_add(static_cast<int64_t>(rounded));
  // The JS view covers exactly the requested bytes; the rounding is slack for vector tails. The
  // raw C call (not Napi::ArrayBuffer::New) so a refusal leaves exactly one owner: this function.
  napi_value value = nullptr;
  creating = b;
  const napi_status status =
      napi_create_external_arraybuffer(env, p, static_cast<size_t>(bytes), finalize, b, &value);
  creating = nullptr;
  if (status != napi_ok) {
    {
      std::lock_guard<std::mutex> lk(mu);
      live.erase(p);
      release(b);
    }
    delete b;
    std::string reason;
    if (env.IsExceptionPending()) reason = ": " + env.GetAndClearPendingException().Message();
    fail(env, "alloc: the runtime refused an ArrayBuffer of " + std::to_string(bytes) + " bytes" + reason);
  }
  // Zeroed only once it is ours for good: a refused block is never touched (no pages committed).
  std::memset(p, 0, rounded);
  const int64_t now = allocated.load();
  int64_t prev = peak.load();
  while (now > prev && !peak.compare_exchange_weak(prev, now)) {
  }
  return Napi::ArrayBuffer(env, value);
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require(info.Length() >= 1 && info[0].IsArrayBuffer(), env, "free: expected an ArrayBuffer");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  void* p = ab.Data();
  if (p == nullptr) return env.Undefined();  // already detached
  {
    std::lock_guard<std::mutex> lk(mu);
    auto it = live.find(p);
    require(it != live.end(), env, "free: not a buffer from alloc()");
    Block* b = it->second;
    live.erase(it);
    release(b);
  }
  ab.Detach();
  return env.Undefined();
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocatedBytes", Napi::Number::New(env, static_cast<double>(allocated.load())));
  o.Set("peakBytes", Napi::Number::New(env, static_cast<double>(peak.load())));
  {
    std::lock_guard<std::mutex> lk(mu);
    o.Set("liveBlocks", Napi::Number::New(env, static_cast<double>(live.size())));
  }
  return o;
}

// The instruction set the kernels were compiled for. Only avx512 and avx2 have hand-written
// kernels; every other build (ARM included: there are no NEON kernels) reports "scalar".
Napi::Value SimdLevel(const Napi::CallbackInfo& info) {
#if defined(__AVX512F__)
  const char* level = "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  const char* level = "avx2";
#else
  // The portable code, which the compiler may auto-vectorize.
  const char* level = "scalar";
#endif
  return Napi::String::New(info.Env(), level);
}

// Whether matmul4bit can compute in bf16 here (AVX-512 build, CPU with AVX512_BF16).
Napi::Value Bf16Available(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), gemm::bf16_available());
}

QLORA_EXPORT("alloc", Alloc);
QLORA_EXPORT("bf16Available", Bf16Available);
QLORA_EXPORT("free", Free);
QLORA_EXPORT("memoryStats", Stats);
QLORA_EXPORT("simdLevel", SimdLevel);

}  // namespace
}  // namespace qlora
