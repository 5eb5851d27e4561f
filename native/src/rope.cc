// Rotary position embedding of x [B·T, H, D] with per-row positions and cos/sin tables
// [maxPos, R/2], R ≤ D: the first R dims of each head rotate, dims R..D pass through (partial
// rotary). Each vector is loaded before its rotated values are stored, so out may alias x.
#include <string>

#include "args.h"
#include "registry.h"
#include "threads.h"
#include "vec.h"

namespace qlora {
namespace {

using namespace vec;

// 'half' (HF rotate_half): pairs (i, i + D/2):
//   out[i] = x[i]·c - x[i+h]·s,  out[i+h] = x[i+h]·c + x[i]·s   (s negated for the inverse).
void rotate_half(const float* x, float* o, const float* c, const float* s, int64_t half, float sign) {
  const V sg = set1(sign);
  int64_t i = 0;
  for (; i + W <= half; i += W) {
    const V a = load(x + i), b = load(x + half + i);
    const V cv = load(c + i), sv = mul(load(s + i), sg);
    store(o + i, fnmadd(b, sv, mul(a, cv)));
    store(o + half + i, fmadd(a, sv, mul(b, cv)));
  }
  if (i < half) {
    const int r = static_cast<int>(half - i);
    const V a = load_n(x + i, r), b = load_n(x + half + i, r);
    const V cv = load_n(c + i, r), sv = mul(load_n(s + i, r), sg);
    store_n(o + i, fnmadd(b, sv, mul(a, cv)), r);
    store_n(o + half + i, fmadd(a, sv, mul(b, cv)), r);
  }
}

// 'interleaved' (llama2.c, GGUF): pairs (2i, 2i+1):
//   out[2i] = x[2i]·c - x[2i+1]·s,  out[2i+1] = x[2i+1]·c + x[2i]·s.
void rotate_interleaved(const float* x, float* o, const float* c, const float* s, int64_t half, float sign) {
  int64_t i = 0;
#if defined(__AVX512F__)
  // 8 pairs per vector: cos/sin duplicated per pair, sin negated on even lanes, x pair-swapped.
  const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512 alt = _mm512_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1);
  const __m512 sg = _mm512_mul_ps(alt, _mm512_set1_ps(sign));
  for (; i + 8 <= half; i += 8) {
    const __m512 xv = _mm512_loadu_ps(x + 2 * i);
    const __m512 cv = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(c + i)));
    const __m512 sv = _mm512_mul_ps(_mm512_permutexvar_ps(dup, _mm512_castps256_ps512(_mm256_loadu_ps(s + i))), sg);
    const __m512 swapped = _mm512_permute_ps(xv, 0xB1);
    _mm512_storeu_ps(o + 2 * i, _mm512_fmadd_ps(swapped, sv, _mm512_mul_ps(xv, cv)));
  }
#endif
  for (; i < half; i++) {
    const float a = x[2 * i], b = x[2 * i + 1];
    const float cv = c[i], sv = s[i] * sign;
    o[2 * i] = a * cv - b * sv;
    o[2 * i + 1] = b * cv + a * sv;
  }
}

// rope(x, positions, cos, sin, out, rows, heads, D, maxPos, interleaved, inverse, R/2)
Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t rows = intArg(info, 5, "rows");
  const int64_t heads = intArg(info, 6, "heads");
  const int64_t dim = intArg(info, 7, "D");
  const int64_t maxPos = intArg(info, 8, "maxPos");
  const bool interleaved = boolArg(info, 9);
  const bool inverse = boolArg(info, 10);
  const int64_t half = intArg(info, 11, "half");
  require(dim % 2 == 0, env, "rope: head dim must be even");
  require(half >= 1 && half <= dim / 2, env, "rope: table width must be in 1..D/2");
  Span<float> x = f32Arg(info, 0, "x", rows * heads * dim);
  Span<int32_t> positions = i32Arg(info, 1, "positions", rows);
  Span<float> cosT = f32Arg(info, 2, "cos", maxPos * half);
  Span<float> sinT = f32Arg(info, 3, "sin", maxPos * half);
  Span<float> out = f32Arg(info, 4, "out", rows * heads * dim);
  for (int64_t r = 0; r < rows; r++) {
    const int32_t p = positions.data[r];
    if (p < 0 || p >= maxPos) {
      fail(env, "rope: position " + std::to_string(p) + " at index " + std::to_string(r) +
                    " is outside the cos/sin tables [0, " + std::to_string(maxPos) + ")");
    }
  }
  const float sign = inverse ? -1.0f : 1.0f;
  const int64_t rowSize = heads * dim;
  const int64_t grain = rowSize >= 8192 || rowSize == 0 ? 1 : 8192 / rowSize + 1;
  parallel_for_grain(rows, grain, [&](int64_t lo, int64_t hi, int) {
    for (int64_t r = lo; r < hi; r++) {
      const int64_t p = positions.data[r];
      const float* c = cosT.data + p * half;
      const float* s = sinT.data + p * half;
      for (int64_t h = 0; h < heads; h++) {
        const int64_t off = r * rowSize + h * dim;
        if (interleaved) {
          rotate_interleaved(x.data + off, out.data + off, c, s, half, sign);
        } else {
          rotate_half(x.data + off, out.data + off, c, s, half, sign);
        }
        if (out.data != x.data) {
          for (int64_t i = 2 * half; i < dim; i++) out.data[off + i] = x.data[off + i];
        }
      }
    }
  });
  return env.Undefined();
}

QLORA_EXPORT("ropeF32", Rope);

}  // namespace
}  // namespace qlora
