// AdamW with PyTorch semantics (torch.optim.AdamW, amsgrad=False, maximize=False):
//   p -= lr·wd·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
//   p -= (lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "args.h"
#include "registry.h"
#include "threads.h"
#include "vec.h"

namespace qlora {
namespace {

using namespace vec;

struct AdamConstants {
  float decay;      // 1 - lr·wd
  float beta1, oneMinusBeta1, beta2, oneMinusBeta2;
  float stepSize;   // lr / (1 - β1^t)
  float invSqrtBc2; // 1 / sqrt(1 - β2^t)
  float eps;
};

inline void adam_vec(const AdamConstants& k, V g, V* p, V* m, V* v) {
  *p = mul(*p, set1(k.decay));
  *m = fmadd(set1(k.beta1), *m, mul(set1(k.oneMinusBeta1), g));
  *v = fmadd(set1(k.beta2), *v, mul(set1(k.oneMinusBeta2), mul(g, g)));
  const V denom = fmadd(vec::sqrt(*v), set1(k.invSqrtBc2), set1(k.eps));
  *p = fnmadd(set1(k.stepSize), div(*m, denom), *p);
}

// adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, step)
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 4, "n");
  Span<float> param = f32Arg(info, 0, "param", n);
  Span<float> grad = f32Arg(info, 1, "grad", n);
  Span<float> mom = f32Arg(info, 2, "m", n);
  Span<float> var = f32Arg(info, 3, "v", n);
  const double lr = numArg(info, 5, "lr");
  const double beta1 = numArg(info, 6, "beta1");
  const double beta2 = numArg(info, 7, "beta2");
  const double eps = numArg(info, 8, "eps");
  const double wd = numArg(info, 9, "weightDecay");
  const int64_t step = intArg(info, 10, "step");
  require(step >= 1, info.Env(), "adamw: step must be ≥ 1");
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  const AdamConstants k{
      static_cast<float>(1.0 - lr * wd),
      static_cast<float>(beta1),
      static_cast<float>(1.0 - beta1),
      static_cast<float>(beta2),
      static_cast<float>(1.0 - beta2),
      static_cast<float>(lr / bc1),
      static_cast<float>(1.0 / std::sqrt(bc2)),
      static_cast<float>(eps),
  };
  parallel_for_grain(n, 1 << 14, [&](int64_t lo, int64_t hi, int) {
    int64_t i = lo;
    for (; i + W <= hi; i += W) {
      V p = load(param.data + i), m = load(mom.data + i), v = load(var.data + i);
      adam_vec(k, load(grad.data + i), &p, &m, &v);
      store(param.data + i, p);
      store(mom.data + i, m);
      store(var.data + i, v);
    }
    if (i < hi) {
      const int r = static_cast<int>(hi - i);
      V p = load_n(param.data + i, r), m = load_n(mom.data + i, r), v = load_n(var.data + i, r);
      adam_vec(k, load_n(grad.data + i, r), &p, &m, &v);
      store_n(param.data + i, p, r);
      store_n(mom.data + i, m, r);
      store_n(var.data + i, v, r);
    }
  });
  return info.Env().Undefined();
}

QLORA_EXPORT("adamwF32", AdamW);

}  // namespace
}  // namespace qlora

// 8-bit blockwise AdamW (bitsandbytes kOptimizerStatic8bit2StateBlockwise), to the rounding the
// Backend contract specifies (src/backends/adamw8bit-host.ts is the reference): float64 arithmetic
// with float32 roundings at fixed points, evaluated exactly as written — no FMA contraction (the
// optimize attribute / clang pragma below) and no flush-to-zero (the pool's threads flush
// denormals; ExactDenormals turns that off for the kernel) — so ref and cpu agree to the bit and
// checkpoints move between them.
namespace qlora {
namespace {

struct ExactDenormals {
#if defined(__x86_64__) || defined(_M_X64)
  ExactDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved & ~0x8040u); }
  ~ExactDenormals() { _mm_setcsr(saved); }
  unsigned saved;
#endif
};

struct Adam8 {
  const float* qmap1;
  const float* qmap2;
  double mids1[255];
  double mids2[255];
  double beta1, beta2, oneMinusBeta1, oneMinusBeta2;
  double stepSize;  // -lr·sqrt(1-β2^t)/(1-β1^t), computed in JS
  double epsHat;    // eps·sqrt(1-β2^t)
  double decay;     // 1 - lr·wd
  bool applyDecay;  // wd > 0
};

// The number of midpoints below s (bucketize); NaN gives 0, as in the TypeScript reference.
inline int nearest(const double* mids, double s) {
  int lo = 0, hi = 255;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (mids[mid] < s) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Math.max semantics: a NaN operand wins (passed through, so its bits match V8's).
inline double jsMax(double a, double b) {
  if (a != a) return a;
  if (b != b) return b;
  return a > b ? a : b;
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void adam8Block(const Adam8& k, float* w, const float* g, uint8_t* c1, uint8_t* c2, float* absmax1, float* absmax2, int64_t len) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  float m[256];
  float v[256];
  const double a1 = *absmax1;
  const double a2 = *absmax2;
  double max1 = 0, max2 = 0;
  for (int64_t j = 0; j < len; j++) {
    const double gi = g[j];
    if (!std::isfinite(gi)) {
      m[j] = 0;
      v[j] = 0;
      continue;
    }
    const double d1 = static_cast<float>(static_cast<double>(k.qmap1[c1[j]]) * a1);
    const double d2 = static_cast<float>(static_cast<double>(k.qmap2[c2[j]]) * a2);
    const double t1 = k.beta1 * d1;
    const double u1 = k.oneMinusBeta1 * gi;
    const float mj = static_cast<float>(t1 + u1);
    const double t2 = k.beta2 * d2;
    const double u2 = (k.oneMinusBeta2 * gi) * gi;
    const float vj = static_cast<float>(t2 + u2);
    m[j] = mj;
    v[j] = vj;
    max1 = jsMax(max1, std::fabs(static_cast<double>(mj)));
    max2 = jsMax(max2, static_cast<double>(vj));
  }
  for (int64_t j = 0; j < len; j++) {
    if (!std::isfinite(static_cast<double>(g[j]))) continue;
    const double denom = std::sqrt(static_cast<double>(v[j])) + k.epsHat;
    const double ratio = static_cast<double>(m[j]) / denom;
    const double step = k.stepSize * ratio;
    double wj = static_cast<double>(w[j]) + step;
    if (k.applyDecay) wj *= k.decay;
    w[j] = static_cast<float>(wj);
  }
  *absmax1 = static_cast<float>(max1);
  *absmax2 = static_cast<float>(max2);
  const double inv1 = max1 > 0 ? 1 / max1 : 0;
  const double inv2 = max2 > 0 ? 1 / max2 : 0;
  for (int64_t j = 0; j < len; j++) {
    const double s1 = static_cast<double>(m[j]) * inv1;
    int q1 = nearest(k.mids1, s1);
    // bnb: keep the sign of m (a tiny m must not flip to a code of the other sign).
    const float q = k.qmap1[q1];
    if (s1 > 0 && q < 0) q1++;
    else if (s1 < 0 && q > 0) q1--;
    c1[j] = static_cast<uint8_t>(q1);
    c2[j] = static_cast<uint8_t>(nearest(k.mids2, static_cast<double>(v[j]) * inv2));
  }
}

// adamw8bit(param, grad, state1, state2, absmax1, absmax2, qmap1, qmap2, n,
//           beta1, beta2, stepSize, epsHat, decay, applyDecay)
Napi::Value AdamW8bit(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 8, "n");
  const int64_t blocks = (n + 255) / 256;
  Span<float> param = f32Arg(info, 0, "param", n);
  Span<float> grad = f32Arg(info, 1, "grad", n);
  Span<uint8_t> state1 = u8Arg(info, 2, "state1", n);
  Span<uint8_t> state2 = u8Arg(info, 3, "state2", n);
  Span<float> absmax1 = f32Arg(info, 4, "absmax1", blocks);
  Span<float> absmax2 = f32Arg(info, 5, "absmax2", blocks);
  Span<float> qmap1 = f32Arg(info, 6, "qmap1", 256);
  Span<float> qmap2 = f32Arg(info, 7, "qmap2", 256);
  Adam8 k;
  k.qmap1 = qmap1.data;
  k.qmap2 = qmap2.data;
  for (int i = 0; i < 255; i++) {
    // Exact in float64 (sums of two floats halved), like the reference's midpoints.
    k.mids1[i] = (static_cast<double>(qmap1.data[i]) + static_cast<double>(qmap1.data[i + 1])) / 2;
    k.mids2[i] = (static_cast<double>(qmap2.data[i]) + static_cast<double>(qmap2.data[i + 1])) / 2;
  }
  k.beta1 = numArg(info, 9, "beta1");
  k.beta2 = numArg(info, 10, "beta2");
  k.oneMinusBeta1 = 1 - k.beta1;
  k.oneMinusBeta2 = 1 - k.beta2;
  k.stepSize = numArg(info, 11, "stepSize");
  k.epsHat = numArg(info, 12, "epsHat");
  k.decay = numArg(info, 13, "decay");
  k.applyDecay = boolArg(info, 14);
  parallel_for_grain(blocks, 16, [&](int64_t lo, int64_t hi, int) {
    ExactDenormals exact;
    for (int64_t b = lo; b < hi; b++) {
      const int64_t start = b * 256;
      const int64_t len = std::min<int64_t>(256, n - start);
      adam8Block(k, param.data + start, grad.data + start, state1.data + start, state2.data + start,
                 absmax1.data + b, absmax2.data + b, len);
    }
  });
  return info.Env().Undefined();
}

QLORA_EXPORT("adamw8bitF32", AdamW8bit);

}  // namespace
}  // namespace qlora
