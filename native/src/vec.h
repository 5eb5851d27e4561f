// Thin SIMD layer for the non-GEMM kernels: one vector type `V` of W floats with the handful of
// operations the kernels need (loads with tails, FMA, reductions, exp). AVX-512 (W=16), AVX2+FMA
// (W=8) or scalar (W=1), chosen at compile time, so each kernel is written once.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// GCC 12's AVX-512 headers build "undefined" pass-through vectors as `__m512 __Y = __Y;`, which
// -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593): silence that false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

namespace qlora {
namespace vec {

// Cephes-style expf: exp(x) = 2^n · p(r), r = x - n·ln2, |r| ≤ ln2/2; ~1 ulp over the range.
// Inputs below ln(FLT_MIN) give exactly 0 (so -inf, used for masked scores, maps to 0).
constexpr float kExpHi = 88.3762626647949f;
constexpr float kExpLo = -87.33654475f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f;
constexpr float kP1 = 1.3981999507e-3f;
constexpr float kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f;
constexpr float kP4 = 1.6666665459e-1f;
constexpr float kP5 = 5.0000001201e-1f;

#if defined(__AVX512F__)

constexpr int W = 16;
using V = __m512;

inline __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline V zero() { return _mm512_setzero_ps(); }
inline V set1(float x) { return _mm512_set1_ps(x); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
// Loads/stores of the first n < W lanes; other lanes read as 0 and are not written.
inline V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
inline void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V div(V a, V b) { return _mm512_div_ps(a, b); }
inline V max(V a, V b) { return _mm512_max_ps(a, b); }
inline V min(V a, V b) { return _mm512_min_ps(a, b); }
inline V sqrt(V a) { return _mm512_sqrt_ps(a); }
inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }   // a·b + c
inline V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); } // c - a·b
inline float hsum(V a) { return _mm512_reduce_add_ps(a); }
inline float hmax(V a) { return _mm512_reduce_max_ps(a); }

inline V exp(V x) {
  const __mmask16 under = _mm512_cmp_ps_mask(x, set1(kExpLo), _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, set1(kExpLo)), set1(kExpHi));
  const V n = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  V r = fnmadd(n, set1(kLn2Hi), x);
  r = fnmadd(n, set1(kLn2Lo), r);
  V p = set1(kP0);
  p = fmadd(p, r, set1(kP1));
  p = fmadd(p, r, set1(kP2));
  p = fmadd(p, r, set1(kP3));
  p = fmadd(p, r, set1(kP4));
  p = fmadd(p, r, set1(kP5));
  p = fmadd(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, set1(1.0f)));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), _mm512_scalef_ps(p, n));
}

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int W = 8;
using V = __m256;

inline __m256i tail_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}
inline V zero() { return _mm256_setzero_ps(); }
inline V set1(float x) { return _mm256_set1_ps(x); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline V load_n(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
inline void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V div(V a, V b) { return _mm256_div_ps(a, b); }
inline V max(V a, V b) { return _mm256_max_ps(a, b); }
inline V min(V a, V b) { return _mm256_min_ps(a, b); }
inline V sqrt(V a) { return _mm256_sqrt_ps(a); }
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
inline float hsum(V a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(V a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline V exp(V x) {
  const V under = _mm256_cmp_ps(x, set1(kExpLo), _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, set1(kExpLo)), set1(kExpHi));
  const V n = _mm256_round_ps(_mm256_mul_ps(x, set1(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  V r = fnmadd(n, set1(kLn2Hi), x);
  r = fnmadd(n, set1(kLn2Lo), r);
  V p = set1(kP0);
  p = fmadd(p, r, set1(kP1));
  p = fmadd(p, r, set1(kP2));
  p = fmadd(p, r, set1(kP3));
  p = fmadd(p, r, set1(kP4));
  p = fmadd(p, r, set1(kP5));
  p = fmadd(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, set1(1.0f)));
  // 2^n for n in [-126, 127] built in the exponent field.
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

#else

constexpr int W = 1;
using V = float;

inline V zero() { return 0.0f; }
inline V set1(float x) { return x; }
inline V load(const float* p) { return *p; }
inline void store(float* p, V v) { *p = v; }
inline V load_n(const float* p, int n) { return n > 0 ? *p : 0.0f; }
inline void store_n(float* p, V v, int n) {
  if (n > 0) *p = v;
}
inline V add(V a, V b) { return a + b; }
inline V sub(V a, V b) { return a - b; }
inline V mul(V a, V b) { return a * b; }
inline V div(V a, V b) { return a / b; }
inline V max(V a, V b) { return a > b ? a : b; }
inline V min(V a, V b) { return a < b ? a : b; }
inline V sqrt(V a) { return std::sqrt(a); }
inline V fmadd(V a, V b, V c) { return std::fma(a, b, c); }
inline V fnmadd(V a, V b, V c) { return std::fma(-a, b, c); }
inline float hsum(V a) { return a; }
inline float hmax(V a) { return a; }
inline V exp(V x) { return x < kExpLo ? 0.0f : std::exp(x); }

#endif

#if defined(__AVX512F__)
// In-register transpose of 16 rows of 16 floats: r[k] lane i <- r[i] lane k (GEMM panel packing,
// attention key transposes).
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // t[2q] holds rows (2q,2q+1) interleaved for columns {0,1},{4,5},...; t[2q+1] columns {2,3},...
  __m512 u[16];
  for (int i = 0; i < 16; i += 4) {
    u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  // u[4g+c] now holds, in each 128-bit lane L, rows 4g..4g+3 of column 4L+c.
  __m512 v[16];
  // Step 3: combine row groups. For each column c (0..3) we have u[c], u[4+c], u[8+c], u[12+c]
  // (row groups 0..3), each with lanes = column blocks 0..3. Output row (4L + c) = lane L of the
  // four row-group vectors, in group order.
  for (int c = 0; c < 4; c++) {
    __m512 a = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);       // g0:L0,L1  g1:L0,L1
    __m512 b = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);  // g2:L0,L1  g3:L0,L1
    __m512 d = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);       // g0:L2,L3  g1:L2,L3
    __m512 e = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);  // g2:L2,L3  g3:L2,L3
    v[0 + c] = _mm512_shuffle_f32x4(a, b, 0x88);                 // L0 of g0,g1,g2,g3
    v[4 + c] = _mm512_shuffle_f32x4(a, b, 0xDD);                 // L1
    v[8 + c] = _mm512_shuffle_f32x4(d, e, 0x88);                 // L2
    v[12 + c] = _mm512_shuffle_f32x4(d, e, 0xDD);                // L3
  }
  for (int i = 0; i < 16; i++) r[i] = v[i];
}
#endif

// Sum of squares of n floats, accumulated in double in a fixed lane order.
inline double sum_squares(const float* x, size_t n) {
#if defined(__AVX512F__)
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512d lo = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    const __m512d hi = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
    a0 = _mm512_fmadd_pd(lo, lo, a0);
    a1 = _mm512_fmadd_pd(hi, hi, a1);
  }
  double s = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#elif defined(__AVX2__) && defined(__FMA__)
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    const __m256d hi = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    a0 = _mm256_fmadd_pd(lo, lo, a0);
    a1 = _mm256_fmadd_pd(hi, hi, a1);
  }
  __m256d a = _mm256_add_pd(a0, a1);
  __m128d h = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
  double s = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
#else
  double s = 0.0;
  size_t i = 0;
#endif
  for (; i < n; i++) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return s;
}

// Dot product of n floats (f32 lanes, fixed order).
inline float dot(const float* a, const float* b, size_t n) {
  V acc = zero();
  size_t i = 0;
  for (; i + W <= n; i += W) acc = fmadd(load(a + i), load(b + i), acc);
  float s = hsum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// tanh(x) as a rational function p(x)/q(x) (odd degree-13 over even degree-6, the minimax form
// Eigen uses for float) on x clamped to ±7.905, where tanh rounds to ±1 in f32: within 5 ulp of tanh,
// ~2 ulp near 0. NaN passes through (max returns its second operand when one is NaN).
inline V tanh(V x) {
  const V c = set1(-7.90531110763549805f);
  x = max(c, x);
  x = sub(zero(), max(c, sub(zero(), x)));
  const V x2 = mul(x, x);
  V p = set1(-2.76076847742355e-16f);
  p = fmadd(p, x2, set1(2.00018790482477e-13f));
  p = fmadd(p, x2, set1(-8.60467152213735e-11f));
  p = fmadd(p, x2, set1(5.12229709037114e-08f));
  p = fmadd(p, x2, set1(1.48572235717979e-05f));
  p = fmadd(p, x2, set1(6.37261928875436e-04f));
  p = fmadd(p, x2, set1(4.89352455891786e-03f));
  V q = set1(1.19825839466702e-06f);
  q = fmadd(q, x2, set1(1.18534705686654e-04f));
  q = fmadd(q, x2, set1(2.26843463243900e-03f));
  q = fmadd(q, x2, set1(4.89352518554385e-03f));
  return div(mul(p, x), q);
}

// Soft-capping cap·tanh(x / cap) of n floats in place (Gemma 2's attention scores and logits).
inline void softcap_inplace(float* x, int64_t n, float cap) {
  const V c = set1(cap), inv = set1(1.0f / cap);
  int64_t i = 0;
  for (; i + W <= n; i += W) store(x + i, mul(c, tanh(mul(load(x + i), inv))));
  if (i < n) {
    const int r = static_cast<int>(n - i);
    store_n(x + i, mul(c, tanh(mul(load_n(x + i, r), inv))), r);
  }
}

// 64-byte aligned float scratch (no zeroing) that grows on demand and keeps its memory until it is
// destroyed: attention holds one per call, GEMM one per thread (thread_local, reused across calls).
// This memory is outside the backend's tensors (memoryStats does not count it).
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t floats) { get(floats); }
  ~Scratch() { std::free(p_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // At least `floats` floats; the old contents are lost when it grows.
  float* get(size_t floats) {
    if (p_ == nullptr || floats > capacity_) {
      std::free(p_);
      p_ = nullptr;
      capacity_ = 0;
      const size_t bytes = ((floats * sizeof(float) + 63) / 64) * 64;
      p_ = static_cast<float*>(std::aligned_alloc(64, bytes == 0 ? 64 : bytes));
      if (p_ == nullptr) throw std::bad_alloc();
      capacity_ = floats;
    }
    return p_;
  }
  float* data() { return p_; }

 private:
  float* p_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace vec
}  // namespace qlora
