// tanh-approximation GELU and GeGLU (Gemma's gated MLP), forward and backward.
// gelu_tanh(x) = 0.5·x·(1 + tanh(z)) = x·σ(2z), z = √(2/π)·(x + 0.044715·x³): the sigmoid form
// needs only vec::exp (clamped, so σ saturates to exactly 0 or 1 without inf or NaN) and has no
// cancellation near the tails. Derivative: σ(2z) + x·2σ(1 - σ)·√(2/π)·(1 + 3·0.044715·x²).
// Shapes and aliasing are validated in TypeScript (src/backends/cpu/gelu.ts); every array is
// length-checked here before any work. Outputs may be their inputs: each vector is fully read
// before its results are stored.
#include "args.h"
#include "registry.h"
#include "threads.h"
#include "vec.h"

namespace qlora {
namespace {

using namespace vec;

constexpr int64_t kGrain = 1 << 15;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// Beyond |x| = 10, σ(2z) is 1 or below 2e-38 in f32: clamping there changes no result by more
// than that, and keeps x³ and the slope's x² finite for any finite x. The operand order keeps a
// NaN x NaN (x86 min/max return their second operand when either is NaN).
constexpr float kSaturate = 10.0f;
inline V clamp_x(V x) { return max(set1(-kSaturate), min(set1(kSaturate), x)); }

// σ(2z) for the (clamped) x given.
inline V gate_sigmoid(V x) {
  const V x2 = mul(x, x);
  const V z = mul(mul(set1(kSqrt2OverPi), x), fmadd(set1(kCubic), x2, set1(1.0f)));
  return div(set1(1.0f), add(set1(1.0f), vec::exp(mul(set1(-2.0f), z))));
}

// Below -10 the value is x·σ with σ < 2e-38, which is not small for x near -FLT_MAX: the factor
// max(x, -10) keeps it below 2e-37 there, as the exact value is (and a NaN x stays NaN).
inline V gelu_from(V x, V s) { return mul(max(set1(-kSaturate), x), s); }
inline V gelu(V x) { return gelu_from(x, gate_sigmoid(clamp_x(x))); }

// value = gelu_tanh(x), slope = gelu_tanh'(x)
inline void gelu_and_slope(V x, V* value, V* slope) {
  const V xc = clamp_x(x);
  const V s = gate_sigmoid(xc);
  const V x2 = mul(xc, xc);
  const V dz = mul(set1(kSqrt2OverPi), fmadd(set1(3.0f * kCubic), x2, set1(1.0f)));
  const V ds = mul(mul(set1(2.0f), mul(s, sub(set1(1.0f), s))), dz);
  *value = gelu_from(x, s);
  *slope = fmadd(xc, ds, s);
}

// Runs f(i, lanes) over [lo, hi) in full vectors, then one masked tail.
template <typename F>
inline void each_vector(int64_t lo, int64_t hi, F f) {
  int64_t i = lo;
  for (; i + W <= hi; i += W) f(i, W);
  if (i < hi) f(i, static_cast<int>(hi - i));
}

inline V ld(const float* p, int r) { return r == W ? load(p) : load_n(p, r); }
inline void st(float* p, V v, int r) {
  if (r == W)
    store(p, v);
  else
    store_n(p, v, r);
}

Napi::Value GeluTanh(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 2, "n");
  Span<float> x = f32Arg(info, 0, "x", n);
  Span<float> out = f32Arg(info, 1, "out", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    each_vector(lo, hi, [&](int64_t i, int r) { st(out.data + i, gelu(ld(x.data + i, r)), r); });
  });
  return info.Env().Undefined();
}

Napi::Value GeluTanhBackward(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  Span<float> dout = f32Arg(info, 0, "dout", n);
  Span<float> x = f32Arg(info, 1, "x", n);
  Span<float> dx = f32Arg(info, 2, "dx", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    each_vector(lo, hi, [&](int64_t i, int r) {
      V value, slope;
      gelu_and_slope(ld(x.data + i, r), &value, &slope);
      st(dx.data + i, mul(ld(dout.data + i, r), slope), r);
    });
  });
  return info.Env().Undefined();
}

Napi::Value Geglu(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  Span<float> gate = f32Arg(info, 0, "gate", n);
  Span<float> up = f32Arg(info, 1, "up", n);
  Span<float> out = f32Arg(info, 2, "out", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    each_vector(lo, hi, [&](int64_t i, int r) {
      st(out.data + i, mul(gelu(ld(gate.data + i, r)), ld(up.data + i, r)), r);
    });
  });
  return info.Env().Undefined();
}

// dgate = dout·up·gelu_tanh'(gate), dup = dout·gelu_tanh(gate).
Napi::Value GegluBackward(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 5, "n");
  Span<float> dout = f32Arg(info, 0, "dout", n);
  Span<float> gate = f32Arg(info, 1, "gate", n);
  Span<float> up = f32Arg(info, 2, "up", n);
  Span<float> dgate = f32Arg(info, 3, "dgate", n);
  Span<float> dup = f32Arg(info, 4, "dup", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    each_vector(lo, hi, [&](int64_t i, int r) {
      V value, slope;
      gelu_and_slope(ld(gate.data + i, r), &value, &slope);
      const V d = ld(dout.data + i, r);
      const V u = ld(up.data + i, r);
      st(dgate.data + i, mul(mul(d, u), slope), r);
      st(dup.data + i, mul(d, value), r);
    });
  });
  return info.Env().Undefined();
}

QLORA_EXPORT("geluTanhF32", GeluTanh);
QLORA_EXPORT("geluTanhBackwardF32", GeluTanhBackward);
QLORA_EXPORT("gegluF32", Geglu);
QLORA_EXPORT("gegluBackwardF32", GegluBackward);

}  // namespace
}  // namespace qlora
