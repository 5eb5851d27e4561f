// Elementwise kernels: memory-bound loops split across the pool in large contiguous ranges.
// Shapes are validated in TypeScript (src/backends/cpu/elementwise.ts); here every array is
// length-checked against the element count before any work.
#include <cmath>
#include <vector>

#include "args.h"
#include "registry.h"
#include "threads.h"
#include "vec.h"

namespace qlora {
namespace {

using namespace vec;

// Below this many elements a call runs on the calling thread (waking workers costs more).
constexpr int64_t kGrain = 1 << 15;

Napi::Value Fill(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 1, "n");
  Span<float> out = f32Arg(info, 0, "out", n);
  const float value = static_cast<float>(numArg(info, 2, "value"));
  parallel_for_grain(n, kGrain, [&](int64_t b, int64_t e, int) {
    float* o = out.data;
    for (int64_t i = b; i < e; i++) o[i] = value;
  });
  return info.Env().Undefined();
}

Napi::Value Copy(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 2, "n");
  Span<float> src = f32Arg(info, 0, "src", n);
  Span<float> dst = f32Arg(info, 1, "dst", n);
  parallel_for_grain(n, kGrain, [&](int64_t b, int64_t e, int) {
    std::memmove(dst.data + b, src.data + b, static_cast<size_t>(e - b) * sizeof(float));
  });
  return info.Env().Undefined();
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  Span<float> a = f32Arg(info, 0, "a", n);
  Span<float> b = f32Arg(info, 1, "b", n);
  Span<float> out = f32Arg(info, 2, "out", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    const float* x = a.data;
    const float* y = b.data;
    float* o = out.data;
    for (int64_t i = lo; i < hi; i++) o[i] = x[i] + y[i];
  });
  return info.Env().Undefined();
}

Napi::Value Scale(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  Span<float> x = f32Arg(info, 0, "x", n);
  const float alpha = static_cast<float>(numArg(info, 1, "alpha"));
  Span<float> out = f32Arg(info, 2, "out", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    const float* xs = x.data;
    float* o = out.data;
    for (int64_t i = lo; i < hi; i++) o[i] = alpha * xs[i];
  });
  return info.Env().Undefined();
}

Napi::Value Axpy(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  const float alpha = static_cast<float>(numArg(info, 0, "alpha"));
  Span<float> x = f32Arg(info, 1, "x", n);
  Span<float> y = f32Arg(info, 2, "y", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    const float* xs = x.data;
    float* ys = y.data;
    for (int64_t i = lo; i < hi; i++) ys[i] = std::fma(alpha, xs[i], ys[i]);
  });
  return info.Env().Undefined();
}

// out[0] (+)= Σ x²: each thread sums its range in double, partials are added in thread order.
Napi::Value SumOfSquares(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 2, "n");
  Span<float> x = f32Arg(info, 0, "x", n);
  Span<float> out = f32Arg(info, 1, "out", 1);
  const bool accumulate = boolArg(info, 3);
  std::vector<double> partial(static_cast<size_t>(num_threads()), 0.0);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int t) {
    partial[static_cast<size_t>(t)] = sum_squares(x.data + lo, static_cast<size_t>(hi - lo));
  });
  double total = accumulate ? static_cast<double>(out.data[0]) : 0.0;
  for (double p : partial) total += p;
  out.data[0] = static_cast<float>(total);
  return info.Env().Undefined();
}

// silu(g) = g·σ(g), σ(g) = 1 / (1 + e^-g)
inline V sigmoid(V g) { return div(set1(1.0f), add(set1(1.0f), vec::exp(sub(zero(), g)))); }

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  Span<float> gate = f32Arg(info, 0, "gate", n);
  Span<float> up = f32Arg(info, 1, "up", n);
  Span<float> out = f32Arg(info, 2, "out", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    int64_t i = lo;
    for (; i + W <= hi; i += W) {
      const V g = load(gate.data + i);
      store(out.data + i, mul(mul(g, sigmoid(g)), load(up.data + i)));
    }
    if (i < hi) {
      const int r = static_cast<int>(hi - i);
      const V g = load_n(gate.data + i, r);
      store_n(out.data + i, mul(mul(g, sigmoid(g)), load_n(up.data + i, r)), r);
    }
  });
  return info.Env().Undefined();
}

// dgate = dout·up·σ(g)·(1 + g·(1 - σ(g))), dup = dout·silu(g). dgate/dup may alias gate/up:
// each vector is fully read before its results are stored.
inline void swiglu_backward_vec(V d, V g, V u, V* dg, V* du) {
  const V s = sigmoid(g);
  const V silu = mul(g, s);
  const V dsilu = fmadd(silu, sub(set1(1.0f), s), s);
  *dg = mul(mul(d, u), dsilu);
  *du = mul(d, silu);
}

Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 5, "n");
  Span<float> dout = f32Arg(info, 0, "dout", n);
  Span<float> gate = f32Arg(info, 1, "gate", n);
  Span<float> up = f32Arg(info, 2, "up", n);
  Span<float> dgate = f32Arg(info, 3, "dgate", n);
  Span<float> dup = f32Arg(info, 4, "dup", n);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    int64_t i = lo;
    V dg, du;
    for (; i + W <= hi; i += W) {
      swiglu_backward_vec(load(dout.data + i), load(gate.data + i), load(up.data + i), &dg, &du);
      store(dgate.data + i, dg);
      store(dup.data + i, du);
    }
    if (i < hi) {
      const int r = static_cast<int>(hi - i);
      swiglu_backward_vec(load_n(dout.data + i, r), load_n(gate.data + i, r), load_n(up.data + i, r), &dg, &du);
      store_n(dgate.data + i, dg, r);
      store_n(dup.data + i, du, r);
    }
  });
  return info.Env().Undefined();
}

// out = cap·tanh(x / cap); out may alias x.
Napi::Value Softcap(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 2, "n");
  Span<float> x = f32Arg(info, 0, "x", n);
  Span<float> out = f32Arg(info, 1, "out", n);
  const float cap = static_cast<float>(numArg(info, 3, "cap"));
  require(cap > 0.0f && std::isfinite(cap), info.Env(), "softcap: cap must be positive and finite");
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    if (out.data != x.data) std::memmove(out.data + lo, x.data + lo, static_cast<size_t>(hi - lo) * sizeof(float));
    softcap_inplace(out.data + lo, hi - lo, cap);
  });
  return info.Env().Undefined();
}

// dx = dout·(1 - tanh²(x / cap)); dx may alias dout.
Napi::Value SoftcapBackward(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 3, "n");
  Span<float> dout = f32Arg(info, 0, "dout", n);
  Span<float> x = f32Arg(info, 1, "x", n);
  Span<float> dx = f32Arg(info, 2, "dx", n);
  const float cap = static_cast<float>(numArg(info, 4, "cap"));
  require(cap > 0.0f && std::isfinite(cap), info.Env(), "softcapBackward: cap must be positive and finite");
  const V inv = set1(1.0f / cap), one = set1(1.0f);
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    int64_t i = lo;
    for (; i + W <= hi; i += W) {
      const V t = vec::tanh(mul(load(x.data + i), inv));
      store(dx.data + i, mul(load(dout.data + i), fnmadd(t, t, one)));
    }
    if (i < hi) {
      const int r = static_cast<int>(hi - i);
      const V t = vec::tanh(mul(load_n(x.data + i, r), inv));
      store_n(dx.data + i, mul(load_n(dout.data + i, r), fnmadd(t, t, one)), r);
    }
  });
  return info.Env().Undefined();
}

// The counter-based hash of src/tensor/rng.ts (mix32, uniformAt).
inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// keep[i] = uniformAt(seed, i) ≥ p, i.e. (h >> 8) / 2^24 ≥ p. Since h >> 8 is an integer and
// p·2^24 is exact in double, that is (h >> 8) ≥ ceil(p·2^24): an integer compare, same mask.
Napi::Value Dropout(const Napi::CallbackInfo& info) {
  const int64_t n = intArg(info, 4, "n");
  Span<float> x = f32Arg(info, 0, "x", n);
  const double p = numArg(info, 1, "p");
  const double seedNum = numArg(info, 2, "seed");
  Span<float> out = f32Arg(info, 3, "out", n);
  require(p >= 0.0 && p <= 1.0, info.Env(), "dropout: p must be in [0, 1]");
  require(n <= (int64_t(1) << 32), info.Env(), "dropout: more than 2^32 elements");
  require(seedNum >= 0 && seedNum < 4294967296.0, info.Env(), "dropout: seed must be a u32");
  const uint32_t seedHash = mix32(static_cast<uint32_t>(seedNum));
  const double thresholdD = std::ceil(p * 16777216.0);
  const uint32_t threshold = static_cast<uint32_t>(thresholdD);
  // p = 1 keeps nothing; the scale 1/(1-p) is then never applied.
  const float scale = p < 1.0 ? static_cast<float>(1.0 / (1.0 - p)) : 1.0f;
  parallel_for_grain(n, kGrain, [&](int64_t lo, int64_t hi, int) {
    const float* xs = x.data;
    float* o = out.data;
    int64_t i = lo;
#if defined(__AVX512F__)
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i c1 = _mm512_set1_epi32(0x7feb352d), c2 = _mm512_set1_epi32(static_cast<int>(0x846ca68bu));
    const __m512i thr = _mm512_set1_epi32(static_cast<int>(threshold));
    const __m512 sv = _mm512_set1_ps(scale);
    for (; i + 16 <= hi; i += 16) {
      __m512i h = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(seedHash + static_cast<uint32_t>(i))), lane);
      h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
      h = _mm512_mullo_epi32(h, c1);
      h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15));
      h = _mm512_mullo_epi32(h, c2);
      h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
      const __mmask16 keep = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(h, 8), thr);
      _mm512_storeu_ps(o + i, _mm512_maskz_mul_ps(keep, _mm512_loadu_ps(xs + i), sv));
    }
#elif defined(__AVX2__)
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i c1 = _mm256_set1_epi32(0x7feb352d), c2 = _mm256_set1_epi32(static_cast<int>(0x846ca68bu));
    // (h >> 8) < 2^24 and threshold ≤ 2^24, so a signed compare against threshold - 1 is exact.
    const __m256i thrMinus1 = _mm256_set1_epi32(static_cast<int>(threshold) - 1);
    const __m256 sv = _mm256_set1_ps(scale);
    for (; i + 8 <= hi; i += 8) {
      __m256i h = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(seedHash + static_cast<uint32_t>(i))), lane);
      h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
      h = _mm256_mullo_epi32(h, c1);
      h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
      h = _mm256_mullo_epi32(h, c2);
      h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
      const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_srli_epi32(h, 8), thrMinus1));
      _mm256_storeu_ps(o + i, _mm256_and_ps(keep, _mm256_mul_ps(_mm256_loadu_ps(xs + i), sv)));
    }
#endif
    for (; i < hi; i++) {
      const uint32_t h = mix32(seedHash + static_cast<uint32_t>(i));
      o[i] = (h >> 8) >= threshold ? xs[i] * scale : 0.0f;
    }
  });
  return info.Env().Undefined();
}

QLORA_EXPORT("fillF32", Fill);
QLORA_EXPORT("copyF32", Copy);
QLORA_EXPORT("addF32", Add);
QLORA_EXPORT("scaleF32", Scale);
QLORA_EXPORT("axpyF32", Axpy);
QLORA_EXPORT("sumOfSquaresF32", SumOfSquares);
QLORA_EXPORT("softcapF32", Softcap);
QLORA_EXPORT("softcapBackwardF32", SoftcapBackward);
QLORA_EXPORT("swigluF32", Swiglu);
QLORA_EXPORT("swigluBackwardF32", SwigluBackward);
QLORA_EXPORT("dropoutF32", Dropout);

}  // namespace
}  // namespace qlora
