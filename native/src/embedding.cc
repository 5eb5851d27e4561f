// Embedding lookup and its gradient. Ids are checked on the calling thread before any work, so a
// bad id is a JS exception and nothing is written.
#include <cstring>
#include <string>

#include "args.h"
#include "registry.h"
#include "threads.h"

namespace qlora {
namespace {

void check_ids(Napi::Env env, const char* op, const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      fail(env, std::string(op) + ": id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                    " is out of range [0, " + std::to_string(vocab) + ")");
    }
  }
}

// embedding(ids i32 [n], table [vocab, d], out [n, d], n, vocab, d)
Napi::Value Embedding(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  const int64_t vocab = intArg(info, 4, "vocab");
  const int64_t d = intArg(info, 5, "d");
  Span<int32_t> ids = i32Arg(info, 0, "ids", n);
  Span<float> table = f32Arg(info, 1, "table", vocab * d);
  Span<float> out = f32Arg(info, 2, "out", n * d);
  check_ids(info.Env(), "embedding", ids.data, n, vocab);
  if (d == 0) return info.Env().Undefined();
  const int64_t grain = d >= 4096 ? 1 : 4096 / d + 1;
  parallel_for_grain(n, grain, [&](int64_t lo, int64_t hi, int) {
    for (int64_t i = lo; i < hi; i++) {
      std::memcpy(out.data + i * d, table.data + static_cast<int64_t>(ids.data[i]) * d,
                  static_cast<size_t>(d) * sizeof(float));
    }
  });
  return info.Env().Undefined();
}

// dtable[ids[i], :] += dout[i, :]. Threads own disjoint column ranges and visit rows in order, so
// repeated ids accumulate in a fixed order (deterministic for any thread count) without races.
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  const int64_t vocab = intArg(info, 4, "vocab");
  const int64_t d = intArg(info, 5, "d");
  Span<int32_t> ids = i32Arg(info, 0, "ids", n);
  Span<float> dout = f32Arg(info, 1, "dout", n * d);
  Span<float> dtable = f32Arg(info, 2, "dtable", vocab * d);
  check_ids(info.Env(), "embeddingBackward", ids.data, n, vocab);
  // Column ranges of whole cache lines; a single range when the work is small.
  const int64_t grain = n * d < (1 << 15) ? d : 16;
  parallel_for_grain(d, grain, [&](int64_t c0, int64_t c1, int) {
    for (int64_t i = 0; i < n; i++) {
      float* dst = dtable.data + static_cast<int64_t>(ids.data[i]) * d;
      const float* src = dout.data + i * d;
      for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
    }
  });
  return info.Env().Undefined();
}

QLORA_EXPORT("embeddingF32", Embedding);
QLORA_EXPORT("embeddingBackwardF32", EmbeddingBackward);

}  // namespace
}  // namespace qlora
