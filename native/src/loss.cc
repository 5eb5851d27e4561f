// Cross-entropy over rows of logits [n, V] with a numerically stable log-sum-exp; rows in
// parallel. Each row is read completely (max, sum, the label's logit) before its gradient is
// written, so dlogits may alias logits.
#include <algorithm>
#include <cmath>
#include <string>

#include "args.h"
#include "registry.h"
#include "threads.h"
#include "vec.h"

namespace qlora {
namespace {

using namespace vec;

float row_max(const float* x, int64_t n) {
  V m = set1(-INFINITY);
  int64_t j = 0;
  for (; j + W <= n; j += W) m = vec::max(m, load(x + j));
  float r = hmax(m);
  for (; j < n; j++) r = x[j] > r ? x[j] : r;
  return r;
}

// Σ exp(x - m), four independent f32 lane accumulators combined in double.
double row_sum_exp(const float* x, int64_t n, float m) {
  const V mv = set1(m);
  V a0 = zero(), a1 = zero(), a2 = zero(), a3 = zero();
  int64_t j = 0;
  for (; j + 4 * W <= n; j += 4 * W) {
    a0 = add(a0, vec::exp(sub(load(x + j), mv)));
    a1 = add(a1, vec::exp(sub(load(x + j + W), mv)));
    a2 = add(a2, vec::exp(sub(load(x + j + 2 * W), mv)));
    a3 = add(a3, vec::exp(sub(load(x + j + 3 * W), mv)));
  }
  for (; j + W <= n; j += W) a0 = add(a0, vec::exp(sub(load(x + j), mv)));
  double s = static_cast<double>(hsum(a0)) + static_cast<double>(hsum(a1)) + static_cast<double>(hsum(a2)) +
             static_cast<double>(hsum(a3));
  if (j < n) {
    const int r = static_cast<int>(n - j);
    // Masked-off lanes load 0 and would add exp(-m): mask them out of the sum explicitly.
    float tail[W > 1 ? W : 1];
    store(tail, vec::exp(sub(load_n(x + j, r), mv)));
    for (int k = 0; k < r; k++) s += static_cast<double>(tail[k]);
  }
  return s;
}

// crossEntropy(logits, labels, losses, dlogits|null, n, V, ignoreIndex, gradScale, softcap)
// softcap > 0 takes the loss over y = cap·tanh(x / cap), computed into a per-thread row buffer (so
// dlogits may still alias logits), and multiplies the gradient by dy/dx = 1 - (y / cap)².
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t n = intArg(info, 4, "n");
  const int64_t vocab = intArg(info, 5, "V");
  const double ignoreNum = numArg(info, 6, "ignoreIndex");
  const float gradScale = static_cast<float>(numArg(info, 7, "gradScale"));
  const float softcap = static_cast<float>(numArg(info, 8, "softcap"));
  require(softcap >= 0.0f && std::isfinite(softcap), env, "crossEntropy: softcap must be ≥ 0 and finite");
  Span<float> logits = f32Arg(info, 0, "logits", n * vocab);
  Span<int32_t> labels = i32Arg(info, 1, "labels", n);
  Span<float> losses = f32Arg(info, 2, "losses", n);
  const bool withGrad = !isNullish(info, 3);
  Span<float> dlogits = withGrad ? f32Arg(info, 3, "dlogits", n * vocab) : Span<float>{nullptr, 0};
  for (int64_t i = 0; i < n; i++) {
    const int32_t y = labels.data[i];
    if (static_cast<double>(y) != ignoreNum && (y < 0 || y >= vocab)) {
      fail(env, "crossEntropy: label " + std::to_string(y) + " at row " + std::to_string(i) +
                    " is out of range [0, " + std::to_string(vocab) + ")");
    }
  }
  require(vocab > 0 || n == 0, env, "crossEntropy: empty vocabulary");
  const int64_t grain = vocab >= 4096 ? 1 : 4096 / vocab + 1;
  parallel_for_grain(n, grain, [&](int64_t lo, int64_t hi, int) {
    thread_local Scratch capped;
    for (int64_t i = lo; i < hi; i++) {
      const float* x = logits.data + i * vocab;
      float* dx = withGrad ? dlogits.data + i * vocab : nullptr;
      const int32_t y = labels.data[i];
      if (static_cast<double>(y) == ignoreNum) {
        losses.data[i] = 0.0f;
        if (dx != nullptr) {
          for (int64_t j = 0; j < vocab; j++) dx[j] = 0.0f;
        }
        continue;
      }
      if (softcap > 0.0f) {
        float* c = capped.get(static_cast<size_t>(vocab));
        std::copy(x, x + vocab, c);
        softcap_inplace(c, vocab, softcap);
        x = c;
      }
      const float m = row_max(x, vocab);
      const double sum = row_sum_exp(x, vocab, m);
      const double lse = static_cast<double>(m) + std::log(sum);
      losses.data[i] = static_cast<float>(lse - static_cast<double>(x[y]));
      if (dx == nullptr) continue;
      // dx = gradScale·exp(x - m)/sum, minus gradScale at the label.
      const V mv = set1(m);
      const V k = set1(static_cast<float>(static_cast<double>(gradScale) / sum));
      if (softcap > 0.0f) {
        // ·(1 - (y/cap)²), the label's term included.
        const V inv = set1(1.0f / softcap), one = set1(1.0f);
        const float ty = x[y] / softcap;
        const float labelGrad = gradScale * (1.0f - ty * ty);
        int64_t j = 0;
        for (; j + W <= vocab; j += W) {
          const V yc = load(x + j), t = mul(yc, inv);
          store(dx + j, mul(mul(vec::exp(sub(yc, mv)), k), fnmadd(t, t, one)));
        }
        if (j < vocab) {
          const int r = static_cast<int>(vocab - j);
          const V yc = load_n(x + j, r), t = mul(yc, inv);
          store_n(dx + j, mul(mul(vec::exp(sub(yc, mv)), k), fnmadd(t, t, one)), r);
        }
        dx[y] -= labelGrad;
        continue;
      }
      int64_t j = 0;
      for (; j + W <= vocab; j += W) store(dx + j, mul(vec::exp(sub(load(x + j), mv)), k));
      if (j < vocab) {
        const int r = static_cast<int>(vocab - j);
        store_n(dx + j, mul(vec::exp(sub(load_n(x + j, r), mv)), k), r);
      }
      dx[y] -= gradScale;
    }
  });
  return env.Undefined();
}

QLORA_EXPORT("crossEntropyF32", CrossEntropy);

}  // namespace
}  // namespace qlora
