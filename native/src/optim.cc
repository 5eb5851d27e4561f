// AdamW with PyTorch semantics (torch.optim.AdamW, amsgrad=False, maximize=False):
//   p -= lr·wd·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
//   p -= (lr / (1 - β1^t)) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)
#include <cmath>

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
