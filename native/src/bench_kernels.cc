// Micro-benchmarks that measure this machine's ceilings, for bench/engine.ts:
//   benchFmaPeak(iterations) — register-only FMA loop on every pool thread (no memory traffic);
//   benchMemcpy(dst, src, reps) — parallel memcpy bandwidth over large buffers.
// Both return { seconds, ... } measured natively around the parallel region.
#include <chrono>
#include <cstdint>
#include <cstring>

#include "args.h"
#include "gemm.h"  // SIMD includes (and GCC 12 intrinsic-warning suppression)
#include "registry.h"
#include "threads.h"

namespace qlora {
namespace {

// Independent accumulator chains: enough to cover FMA latency × throughput (4 cycles × 2 pipes
// on current x86 cores) with room to spare.
constexpr int CHAINS = 16;

// Runs `iterations` rounds of CHAINS vector FMAs; returns the flops done and a value the compiler
// must keep (so the loop is not optimized away).
double fma_loop(int64_t iterations, float* sink) {
#if defined(__AVX512F__)
  constexpr int LANES = 16;
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
  *sink = _mm512_reduce_add_ps(s);
#elif defined(__AVX2__) && defined(__FMA__)
  constexpr int LANES = 8;
  __m256 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iterations; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  alignas(32) float lanes[8];
  __m256 s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
  _mm256_store_ps(lanes, s);
  *sink = lanes[0];
#else
  constexpr int LANES = 8;
  float acc[CHAINS][LANES];
  for (int i = 0; i < CHAINS; i++)
    for (int l = 0; l < LANES; l++) acc[i][l] = 0.001f * i;
  for (int64_t it = 0; it < iterations; it++)
    for (int i = 0; i < CHAINS; i++)
      for (int l = 0; l < LANES; l++) acc[i][l] = acc[i][l] * 0.999999f + 1e-7f;
  *sink = acc[0][0] + acc[CHAINS - 1][LANES - 1];
#endif
  return 2.0 * LANES * CHAINS * static_cast<double>(iterations);
}

#if QLORA_HAVE_BF16_KERNELS
// The same loop with vdpbf16ps: each instruction is 16 lanes × 2 products × (multiply + add).
QLORA_BF16_TARGET double dpbf16_loop(int64_t iterations, float* sink) {
  __m512 acc[CHAINS];
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  const __m512bh y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-4f), _mm512_set1_ps(1e-4f));
  for (int64_t it = 0; it < iterations; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
  }
  __m512 s = acc[0];
  for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
  *sink = _mm512_reduce_add_ps(s);
  return 4.0 * 16 * CHAINS * static_cast<double>(iterations);
}
#endif

// benchFmaPeak(iterationsPerThread, dtype = 'f32' | 'bf16') -> { seconds, flops, threads }
// 'bf16' times vdpbf16ps (fails where bf16 compute is unavailable: see bf16Available).
Napi::Value BenchFmaPeak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t iterations = intArg(info, 0, "iterations");
  const bool bf16 = info.Length() > 1 && info[1].IsString() && info[1].As<Napi::String>().Utf8Value() == "bf16";
  require(!bf16 || gemm::bf16_available(), env, "benchFmaPeak: bf16 compute is not available on this CPU/build");
  const int threads = num_threads();
  double flops[256] = {};
  float sinks[256] = {};
  const auto t0 = std::chrono::steady_clock::now();
  parallel_for(threads, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
#if QLORA_HAVE_BF16_KERNELS
      if (bf16) {
        flops[t] = dpbf16_loop(iterations, &sinks[t]);
        continue;
      }
#endif
      flops[t] = fma_loop(iterations, &sinks[t]);
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total = 0;
  for (int t = 0; t < threads; t++) total += flops[t];
  Napi::Object o = Napi::Object::New(env);
  o.Set("seconds", seconds);
  o.Set("flops", total);
  o.Set("threads", threads);
  o.Set("sink", static_cast<double>(sinks[0]));
  return o;
}

// benchMemcpy(dst: Uint8Array, src: Uint8Array, reps) -> { seconds, bytes } (bytes = copied bytes)
Napi::Value BenchMemcpy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Span<uint8_t> dst = u8Arg(info, 0, "dst");
  Span<uint8_t> src = u8Arg(info, 1, "src", dst.length);
  const int64_t reps = intArg(info, 2, "reps");
  const int64_t n = static_cast<int64_t>(dst.length);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < reps; r++) {
    parallel_for_grain(n, 4096, [&](int64_t b, int64_t e, int) { std::memcpy(dst.data + b, src.data + b, e - b); });
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Napi::Object o = Napi::Object::New(env);
  o.Set("seconds", seconds);
  o.Set("bytes", static_cast<double>(n) * static_cast<double>(reps));
  return o;
}

QLORA_EXPORT("benchFmaPeak", BenchFmaPeak);
QLORA_EXPORT("benchMemcpy", BenchMemcpy);

}  // namespace
}  // namespace qlora
