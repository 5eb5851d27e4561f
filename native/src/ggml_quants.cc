// GGUF's own quantized blocks (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K; docs/formats.md §5.2) as frozen base
// weights (`--quant keep`): dequantization and the two matmuls of a frozen linear layer, decoding
// straight into the GEMM's packed B panels (gemm.h) so the fp32 weight never exists whole.
//
// Every format decodes in groups of 16 consecutive values of a row starting at a multiple of 16:
// such a group always shares one scale (and min), and the GEMM driver's K blocks are multiples of
// 16 (of 32 for bf16), while a row is a whole number of blocks (32 or 256 values). The arithmetic
// is ggml's dequantize_row_* in f32: every product is exact (an f16 scale times small integers), so
// the values are those of the TypeScript reference (src/quant/ggml-blocks.ts) bit for bit.
#include <algorithm>
#include <cstring>
#include <string>

#include "args.h"
#include "gemm.h"
#include "registry.h"
#include "threads.h"

namespace qlora {
namespace {

enum class GType { Q4_0 = 2, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };

struct Geometry {
  int elems, bytes;
};

bool geometryOf(int64_t id, Geometry* g) {
  switch (id) {
    case 2: *g = {32, 18}; return true;
    case 8: *g = {32, 34}; return true;
    case 12: *g = {256, 144}; return true;
    case 13: *g = {256, 176}; return true;
    case 14: *g = {256, 210}; return true;
    default: return false;
  }
}

// IEEE half -> float, exact (denormals included), without F16C so every build gives the same values.
inline float half_to_float(const uint8_t* p) {
  const uint32_t h = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8);
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF, bits;
  if (e == 0) {
    if (m == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int s = 0;
      while ((m & 0x400) == 0) {
        m <<= 1;
        s++;
      }
      bits = sign | (static_cast<uint32_t>(113 - s) << 23) | ((m & 0x3FF) << 13);
    }
  } else if (e == 31) {
    bits = sign | 0x7F800000u | (m << 13);
  } else {
    bits = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

struct GgmlMatrix {
  const uint8_t* blocks;
  GType type;
  Geometry g;
  int64_t rows, cols, rowBytes;

  // out[0..16) = values k..k+15 of row r (k a multiple of 16).
  void decode16(int64_t r, int64_t k, float* out) const {
    const uint8_t* b = blocks + r * rowBytes + (k / g.elems) * g.bytes;
    const int w = static_cast<int>(k % g.elems);
    switch (type) {
      case GType::Q8_0: {
        const float d = half_to_float(b);
        const int8_t* q = reinterpret_cast<const int8_t*>(b + 2) + w;
        for (int i = 0; i < 16; i++) out[i] = static_cast<float>(q[i]) * d;
        return;
      }
      case GType::Q4_0: {
        const float d = half_to_float(b);
        const uint8_t* q = b + 2;
        const int shift = w == 0 ? 0 : 4;
        for (int i = 0; i < 16; i++) out[i] = static_cast<float>(((q[i] >> shift) & 0xF) - 8) * d;
        return;
      }
      case GType::Q4_K:
      case GType::Q5_K: {
        const float d = half_to_float(b), dmin = half_to_float(b + 2);
        const int c = w / 64, hi = (w % 64) / 32, l0 = w % 32;
        int sc, m;
        scale_min_k4(2 * c + hi, b + 4, &sc, &m);
        const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
        const int shift = hi ? 4 : 0;
        if (type == GType::Q4_K) {
          const uint8_t* q = b + 16 + 32 * c + l0;
          for (int i = 0; i < 16; i++) out[i] = d1 * static_cast<float>((q[i] >> shift) & 0xF) - m1;
        } else {
          const uint8_t* qh = b + 16 + l0;
          const uint8_t* q = b + 48 + 32 * c + l0;
          const int hb = 2 * c + hi;
          for (int i = 0; i < 16; i++) {
            const int v = ((q[i] >> shift) & 0xF) | (((qh[i] >> hb) & 1) << 4);
            out[i] = d1 * static_cast<float>(v) - m1;
          }
        }
        return;
      }
      case GType::Q6_K: {
        const float d = half_to_float(b + 208);
        const int h = w / 128, kk = (w % 128) / 32, l0 = w % 32;
        const uint8_t* ql = b + 64 * h + l0 + (kk & 1) * 32;
        const uint8_t* qh = b + 128 + 32 * h + l0;
        const int8_t scale = static_cast<int8_t>(b[192 + 8 * h + l0 / 16 + 2 * kk]);
        const float ds = d * static_cast<float>(scale);
        const int shift = kk >= 2 ? 4 : 0;
        for (int i = 0; i < 16; i++) {
          const int v = ((ql[i] >> shift) & 0xF) | (((qh[i] >> (2 * kk)) & 3) << 4);
          out[i] = ds * static_cast<float>(v - 32);
        }
        return;
      }
    }
  }

#if defined(__AVX512F__)
  // decode16 in one zmm: the same arithmetic (each product exact in f32; Q4_K/Q5_K's one rounding is
  // the fused d1·q − m1, equal to rounding d1·q − m1 after the exact product), so the same values.
  __m512 decode16v(int64_t r, int64_t k) const {
    const uint8_t* b = blocks + r * rowBytes + (k / g.elems) * g.bytes;
    const int w = static_cast<int>(k % g.elems);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    auto nibbles = [&](const uint8_t* q, int shift) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
      return _mm_and_si128(shift ? _mm_srli_epi16(v, 4) : v, low4);
    };
    auto to_ps = [](__m128i u8) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(u8)); };
    switch (type) {
      case GType::Q8_0: {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 + w));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(half_to_float(b)));
      }
      case GType::Q4_0: {
        const __m512 q = _mm512_sub_ps(to_ps(nibbles(b + 2, w == 0 ? 0 : 4)), _mm512_set1_ps(8.0f));
        return _mm512_mul_ps(q, _mm512_set1_ps(half_to_float(b)));
      }
      case GType::Q4_K:
      case GType::Q5_K: {
        const float d = half_to_float(b), dmin = half_to_float(b + 2);
        const int c = w / 64, hi = (w % 64) / 32, l0 = w % 32;
        int sc, m;
        scale_min_k4(2 * c + hi, b + 4, &sc, &m);
        const __m512 d1 = _mm512_set1_ps(d * static_cast<float>(sc));
        const __m512 m1 = _mm512_set1_ps(dmin * static_cast<float>(m));
        __m128i q;
        if (type == GType::Q4_K) {
          q = nibbles(b + 16 + 32 * c + l0, hi);
        } else {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 + l0));
          // bit (2c + hi) of each qh byte, moved to bit 4: shift right by (2c + hi) then left by 4.
          const __m128i bit = _mm_and_si128(_mm_srl_epi16(h, _mm_cvtsi32_si128(2 * c + hi)), _mm_set1_epi8(1));
          q = _mm_or_si128(nibbles(b + 48 + 32 * c + l0, hi), _mm_slli_epi16(bit, 4));
        }
        return _mm512_fmsub_ps(d1, to_ps(q), m1);
      }
      case GType::Q6_K: {
        const float d = half_to_float(b + 208);
        const int h = w / 128, kk = (w % 128) / 32, l0 = w % 32;
        const int8_t scale = static_cast<int8_t>(b[192 + 8 * h + l0 / 16 + 2 * kk]);
        const __m128i lo = nibbles(b + 64 * h + l0 + (kk & 1) * 32, kk >= 2);
        const __m128i qh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 128 + 32 * h + l0));
        const __m128i top = _mm_and_si128(_mm_srl_epi16(qh, _mm_cvtsi32_si128(2 * kk)), _mm_set1_epi8(3));
        const __m128i q = _mm_or_si128(lo, _mm_slli_epi16(top, 4));
        const __m512 qf = _mm512_sub_ps(to_ps(q), _mm512_set1_ps(32.0f));
        return _mm512_mul_ps(qf, _mm512_set1_ps(d * static_cast<float>(scale)));
      }
    }
    return _mm512_setzero_ps();
  }
#endif
};

// op(B) = Wᵀ (K = cols, N = rows): the forward y = x·Wᵀ. Panel columns are rows of W.
class ForwardPanels : public gemm::PanelSource {
 public:
  explicit ForwardPanels(const GgmlMatrix& w) : w_(w) {}

  void pack(float* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
#if defined(__AVX512F__)
    struct Rows {
      const GgmlMatrix& w;
      int64_t n0, k0;
      __m512 load16(int64_t j, int64_t k) const { return w.decode16v(n0 + j, k0 + k); }
      float at(int64_t j, int64_t k) const {  // unused: kc is a multiple of 16
        alignas(64) float v[16];
        w.decode16(n0 + j, k0 + (k & ~int64_t{15}), v);
        return v[k & 15];
      }
    };
    gemm::pack_from_rows(dst, kc, nc, Rows{w_, n0, k0});
#else
    using gemm::NR;
    float v[16];
    for (int64_t p = 0; p * NR < nc; p++) {
      float* panel = dst + p * kc * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
      for (int64_t j = 0; j < NR; j++) {
        if (j >= jn) {
          for (int64_t k = 0; k < kc; k++) panel[k * NR + j] = 0.0f;
          continue;
        }
        for (int64_t k = 0; k < kc; k += 16) {
          w_.decode16(n0 + p * NR + j, k0 + k, v);
          for (int t = 0; t < 16; t++) panel[(k + t) * NR + j] = v[t];
        }
      }
    }
#endif
  }

 private:
  const GgmlMatrix& w_;
};

// op(B) = W (K = rows, N = cols): the input gradient dx = dy·W. Panel rows are parts of rows of W.
class InputGradPanels : public gemm::PanelSource {
 public:
  explicit InputGradPanels(const GgmlMatrix& w) : w_(w) {}

  void pack(float* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    using gemm::NR;
    for (int64_t p = 0; p * NR < nc; p++) {
      float* panel = dst + p * kc * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);  // a multiple of 16 (cols is)
      for (int64_t k = 0; k < kc; k++) {
        float* out = panel + k * NR;
        int64_t h = 0;
#if defined(__AVX512F__)
        for (; h < jn; h += 16) _mm512_store_ps(out + h, w_.decode16v(k0 + k, n0 + p * NR + h));
#else
        for (; h < jn; h += 16) w_.decode16(k0 + k, n0 + p * NR + h, out + h);
#endif
        for (; h < NR; h++) out[h] = 0.0f;
      }
    }
  }

 private:
  const GgmlMatrix& w_;
};

#if QLORA_HAVE_BF16_KERNELS
// The same panels for the bf16 GEMM: each value decoded in f32 as above, then rounded once to bf16.
class ForwardPanelsBf16 : public gemm::PanelSourceBf16 {
 public:
  explicit ForwardPanelsBf16(const GgmlMatrix& w) : w_(w) {}

  QLORA_BF16_TARGET void pack(uint32_t* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    using gemm::NR;
    const int64_t kp = (kc + 1) / 2;
    for (int64_t p = 0; p * NR < nc; p++) {
      uint32_t* panel = dst + p * kp * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
      for (int h = 0; h < NR; h += 16) {
        const int64_t live = std::max<int64_t>(0, std::min<int64_t>(16, jn - h));
        for (int64_t kk = 0; kk < kc; kk += 32) {  // kc is a multiple of 32 (cols is)
          __m512 t[16];
          for (int j = 0; j < 16; j++) {
            if (j < live) {
              const int64_t r = n0 + p * NR + h + j;
              t[j] = _mm512_castsi512_ps(gemm::cvt_pairs(w_.decode16v(r, k0 + kk), w_.decode16v(r, k0 + kk + 16)));
            } else {
              t[j] = _mm512_setzero_ps();
            }
          }
          vec::transpose16x16(t);
          for (int64_t u = 0; u < 16; u++) _mm512_store_ps(reinterpret_cast<float*>(panel + (kk / 2 + u) * NR + h), t[u]);
        }
      }
    }
  }

 private:
  const GgmlMatrix& w_;
};

class InputGradPanelsBf16 : public gemm::PanelSourceBf16 {
 public:
  explicit InputGradPanelsBf16(const GgmlMatrix& w) : w_(w) {}

  QLORA_BF16_TARGET void pack(uint32_t* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    using gemm::NR;
    const int64_t kp = (kc + 1) / 2;
    for (int64_t p = 0; p * NR < nc; p++) {
      uint32_t* panel = dst + p * kp * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
      for (int64_t t = 0; t < kp; t++) {
        const int64_t e = 2 * t, o = 2 * t + 1;  // the pair's two rows of W
        uint32_t* out = panel + t * NR;
        int64_t h = 0;
        for (; h < jn; h += 16) {
          const __m512 a = w_.decode16v(k0 + e, n0 + p * NR + h);
          const __m512 b = o < kc ? w_.decode16v(k0 + o, n0 + p * NR + h) : _mm512_setzero_ps();
          _mm512_store_si512(out + h, gemm::interleave_pairs(a, b));
        }
        for (; h < NR; h++) out[h] = 0u;
      }
    }
  }

 private:
  const GgmlMatrix& w_;
};
#endif

// blocks u8, type id, rows, cols (argument i..i+3)
GgmlMatrix matrixArgs(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  GgmlMatrix w{};
  const int64_t id = intArg(info, i + 1, "type");
  require(geometryOf(id, &w.g), env, "ggml: unsupported type " + std::to_string(id));
  w.type = static_cast<GType>(id);
  w.rows = intArg(info, i + 2, "rows");
  w.cols = intArg(info, i + 3, "cols");
  require(w.cols % w.g.elems == 0, env, "ggml: cols is not a whole number of blocks");
  w.rowBytes = w.cols / w.g.elems * w.g.bytes;
  w.blocks = u8Arg(info, i, "blocks", static_cast<size_t>(w.rows * w.rowBytes)).data;
  return w;
}

// dequantizeGgml(blocks, type, rows, cols, out)
Napi::Value DequantizeGgml(const Napi::CallbackInfo& info) {
  const GgmlMatrix w = matrixArgs(info, 0);
  float* out = f32Arg(info, 4, "out", static_cast<size_t>(w.rows * w.cols)).data;
  parallel_for(w.rows, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; r++) {
#if defined(__AVX512F__)
      for (int64_t k = 0; k < w.cols; k += 16) _mm512_storeu_ps(out + r * w.cols + k, w.decode16v(r, k));
#else
      for (int64_t k = 0; k < w.cols; k += 16) w.decode16(r, k, out + r * w.cols + k);
#endif
    }
  });
  return info.Env().Undefined();
}

// matmulGgml(blocks, type, rows, cols, input, out, n, beta, inputGrad, bf16)
//   inputGrad false: out[n, rows] = input[n, cols] · Wᵀ + beta·out
//   inputGrad true:  out[n, cols] = input[n, rows] · W  + beta·out
Napi::Value MatmulGgml(const Napi::CallbackInfo& info) {
  const GgmlMatrix w = matrixArgs(info, 0);
  const int64_t n = intArg(info, 6, "n");
  const float beta = static_cast<float>(numArg(info, 7, "beta"));
  const bool inputGrad = boolArg(info, 8);
  const int64_t K = inputGrad ? w.rows : w.cols;
  const int64_t N = inputGrad ? w.cols : w.rows;
  const float* x = f32Arg(info, 4, "input", static_cast<size_t>(n * K)).data;
  float* out = f32Arg(info, 5, "out", static_cast<size_t>(n * N)).data;
  gemm::GemmArgs g{n, N, K, x, K, false, out, N, 1.0f, beta};
  if (boolArg(info, 9)) {
    require(gemm::bf16_available(), info.Env(),
            "matmulGgml: bf16 compute needs an AVX-512 build of the addon on a CPU with AVX512_BF16");
#if QLORA_HAVE_BF16_KERNELS
    if (inputGrad) {
      gemm::sgemm_bf16(g, InputGradPanelsBf16(w));
    } else {
      gemm::sgemm_bf16(g, ForwardPanelsBf16(w));
    }
#endif
    return info.Env().Undefined();
  }
  if (inputGrad) {
    gemm::sgemm(g, InputGradPanels(w));
  } else {
    gemm::sgemm(g, ForwardPanels(w));
  }
  return info.Env().Undefined();
}

QLORA_EXPORT("dequantizeGgml", DequantizeGgml);
QLORA_EXPORT("matmulGgml", MatmulGgml);

}  // namespace
}  // namespace qlora
