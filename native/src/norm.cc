// RMSNorm forward and backward over rows of x [n, d]. Row statistics are accumulated in double;
// the weight gradient is summed per thread in double and the partials added in thread order.
#include <cmath>
#include <vector>

#include "args.h"
#include "registry.h"
#include "threads.h"
#include "vec.h"

namespace qlora {
namespace {

using namespace vec;

int64_t row_grain(int64_t d) { return d >= 8192 ? 1 : 8192 / (d == 0 ? 1 : d) + 1; }

// out[i, :] = x[i, :] · rstd[i] · weight, rstd[i] = 1/sqrt(mean(x[i, :]²) + eps)
// rmsnorm(x, weight, out, rstd, n, d, eps)
Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 4, "n");
  const int64_t d = intArg(info, 5, "d");
  const double eps = numArg(info, 6, "eps");
  Span<float> x = f32Arg(info, 0, "x", n * d);
  Span<float> weight = f32Arg(info, 1, "weight", d);
  Span<float> out = f32Arg(info, 2, "out", n * d);
  Span<float> rstd = f32Arg(info, 3, "rstd", n);
  parallel_for_grain(n, row_grain(d), [&](int64_t lo, int64_t hi, int) {
    const float* w = weight.data;
    for (int64_t i = lo; i < hi; i++) {
      const float* xr = x.data + i * d;
      float* o = out.data + i * d;
      const double ms = d > 0 ? sum_squares(xr, static_cast<size_t>(d)) / static_cast<double>(d) : 0.0;
      const float r = static_cast<float>(1.0 / std::sqrt(ms + eps));
      rstd.data[i] = r;
      const V rv = set1(r);
      int64_t j = 0;
      for (; j + W <= d; j += W) store(o + j, mul(mul(load(xr + j), rv), load(w + j)));
      if (j < d) {
        const int rem = static_cast<int>(d - j);
        store_n(o + j, mul(mul(load_n(xr + j, rem), rv), load_n(w + j, rem)), rem);
      }
    }
  });
  return info.Env().Undefined();
}

// With y = x·r·w and r = (mean(x²) + eps)^-1/2:
//   dx = r·(g·w - x·r²·mean(g·w·x)),  dweight += Σ_rows g·x·r.
// rmsnormBackward(dout, x, weight, rstd, dx, dweight|null, n, d)
Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 6, "n");
  const int64_t d = intArg(info, 7, "d");
  Span<float> dout = f32Arg(info, 0, "dout", n * d);
  Span<float> x = f32Arg(info, 1, "x", n * d);
  Span<float> weight = f32Arg(info, 2, "weight", d);
  Span<float> rstd = f32Arg(info, 3, "rstd", n);
  Span<float> dx = f32Arg(info, 4, "dx", n * d);
  const bool withWeightGrad = !isNullish(info, 5);
  Span<float> dweight = withWeightGrad ? f32Arg(info, 5, "dweight", d) : Span<float>{nullptr, 0};
  const int threads = num_threads();
  std::vector<double> partial(withWeightGrad ? static_cast<size_t>(threads) * static_cast<size_t>(d) : 0, 0.0);
  parallel_for_grain(n, row_grain(d), [&](int64_t lo, int64_t hi, int t) {
    const float* w = weight.data;
    double* pw = withWeightGrad ? partial.data() + static_cast<size_t>(t) * static_cast<size_t>(d) : nullptr;
    for (int64_t i = lo; i < hi; i++) {
      const float* g = dout.data + i * d;
      const float* xr = x.data + i * d;
      float* o = dx.data + i * d;
      const float r = rstd.data[i];
      // Σ g·w·x in f32 lanes, then c = r²/d · Σ.
      V acc = zero();
      int64_t j = 0;
      for (; j + W <= d; j += W) acc = fmadd(mul(load(g + j), load(w + j)), load(xr + j), acc);
      if (j < d) {
        const int rem = static_cast<int>(d - j);
        acc = fmadd(mul(load_n(g + j, rem), load_n(w + j, rem)), load_n(xr + j, rem), acc);
      }
      const float c = static_cast<float>(static_cast<double>(hsum(acc)) * r * r / static_cast<double>(d));
      if (pw != nullptr) {
        // Before dx is written: dx may not alias, but keep reads of g and x ahead of the store anyway.
        const double rd = r;
        for (int64_t k = 0; k < d; k++) pw[k] += static_cast<double>(g[k]) * static_cast<double>(xr[k]) * rd;
      }
      const V rv = set1(r), cv = set1(c);
      for (j = 0; j + W <= d; j += W) {
        const V gw = mul(load(g + j), load(w + j));
        store(o + j, mul(rv, fnmadd(load(xr + j), cv, gw)));
      }
      if (j < d) {
        const int rem = static_cast<int>(d - j);
        const V gw = mul(load_n(g + j, rem), load_n(w + j, rem));
        store_n(o + j, mul(rv, fnmadd(load_n(xr + j, rem), cv, gw)), rem);
      }
    }
  });
  if (withWeightGrad) {
    for (int64_t k = 0; k < d; k++) {
      double s = 0.0;
      for (int t = 0; t < threads; t++) s += partial[static_cast<size_t>(t) * static_cast<size_t>(d) + static_cast<size_t>(k)];
      dweight.data[k] = static_cast<float>(static_cast<double>(dweight.data[k]) + s);
    }
  }
  return info.Env().Undefined();
}

QLORA_EXPORT("rmsnormF32", Rmsnorm);
QLORA_EXPORT("rmsnormBackwardF32", RmsnormBackward);

}  // namespace
}  // namespace qlora
