// 4-bit (NF4 / FP4, bitsandbytes layout) weights: dequantization and matmuls that dequantize tile
// by tile straight into the GEMM's packed B panels, so the fp32 weight never exists whole.
//
// Layout (docs/formats.md §2): the [rows, cols] weight is flattened row-major; flat element 2i is
// the HIGH nibble of byte i, 2i+1 the low nibble. Element f is
//   code[nibble] · absmax[f / blocksize];
// with double quantization
//   absmax[b] = nestedCode[q[b]] · nestedAbsmax[b / nestedBlocksize] + offset.
//
// Fast path (AVX-512, blocksize a power of two ≥ 16, and for the matmuls cols % 16 == 0): 16
// elements = 8 bytes become 16 table indices with two shifts, one `vpermps` of the 16-entry code
// table in a zmm turns them into floats, one multiply applies the block scale. Everything else goes
// through a scalar path with the same arithmetic (code · scale in f32).
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "args.h"
#include "gemm.h"
#include "registry.h"
#include "threads.h"

namespace qlora {
namespace {

int log2_exact(int64_t v) {
  if (v <= 0 || (v & (v - 1)) != 0) return -1;
  int s = 0;
  while ((int64_t{1} << s) < v) s++;
  return s;
}

struct Quant4 {
  const uint8_t* packed;
  int64_t rows, cols, blocksize;
  const float* code;        // [16]
  const float* absmaxF32;   // [nblocks] or null (double quant)
  const uint8_t* absmaxQ;   // [nblocks] codes (double quant) or null
  const float* nestedAbsmax;
  const float* nestedCode;  // [256]
  int64_t nestedBlocksize;
  float offset;
  int blockShift;   // log2(blocksize), or -1 when not a power of two
  int nestedShift;  // log2(nestedBlocksize), or -1

  int64_t size() const { return rows * cols; }
  int64_t blockOf(int64_t f) const { return blockShift >= 0 ? f >> blockShift : f / blocksize; }

  float scale(int64_t b) const {
    if (absmaxF32 != nullptr) return absmaxF32[b];
    const int64_t outer = nestedShift >= 0 ? b >> nestedShift : b / nestedBlocksize;
    const float s = nestedCode[absmaxQ[b]] * nestedAbsmax[outer];
    return s + offset;
  }

  int nibble(int64_t f) const {
    const uint8_t byte = packed[f >> 1];
    return (f & 1) ? (byte & 0x0F) : (byte >> 4);
  }

  float at(int64_t f) const { return code[nibble(f)] * scale(blockOf(f)); }

  // Vector path usable for 16-element chunks starting at multiples of 16 within a block.
  bool vectorBlocks() const { return blockShift >= 4; }
};

#if defined(__AVX512F__)
// Elements f..f+15 (f a multiple of 16, all in one block) times `scale`.
inline __m512 decode16(const uint8_t* packed, int64_t f, __m512 table, float scale) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed + (f >> 1)));
  const __m128i w = _mm_cvtepu8_epi16(bytes);
  // Per 16-bit lane: low byte = byte >> 4 (even element), high byte = byte (its low nibble is the
  // odd element; vpermps only reads the low 4 bits of each index).
  const __m128i idx8 = _mm_or_si128(_mm_srli_epi16(w, 4), _mm_slli_epi16(w, 8));
  const __m512 v = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(idx8), table);
  return _mm512_mul_ps(v, _mm512_set1_ps(scale));
}
#endif

// Block scales of a panel, decoded once: row r of the panel covers flat elements
// [start + r·stride, start + r·stride + length); scales for its blocks are at row r·perRow.
class PanelScales {
 public:
  void fill(const Quant4& q, int64_t start, int64_t stride, int64_t nrows, int64_t length) {
    perRow_ = length / q.blocksize + 2;
    scales_.resize(static_cast<size_t>(nrows * perRow_));
    first_.resize(static_cast<size_t>(nrows));
    for (int64_t r = 0; r < nrows; r++) {
      const int64_t f0 = start + r * stride;
      const int64_t b0 = q.blockOf(f0), b1 = q.blockOf(f0 + length - 1);
      first_[r] = b0;
      for (int64_t b = b0; b <= b1; b++) scales_[r * perRow_ + (b - b0)] = q.scale(b);
    }
  }
  float get(const Quant4& q, int64_t r, int64_t f) const { return scales_[r * perRow_ + (q.blockOf(f) - first_[r])]; }

 private:
  int64_t perRow_ = 0;
  std::vector<float> scales_;
  std::vector<int64_t> first_;
};

thread_local PanelScales tls_scales;

// op(B) = Wᵀ (K = cols, N = rows): the forward y = x·Wᵀ. Panel columns are rows of W.
class ForwardPanels : public gemm::PanelSource {
 public:
  explicit ForwardPanels(const Quant4& q) : q_(q), fast_(q.vectorBlocks() && q.cols % 16 == 0) {}

  void pack(float* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    PanelScales& scales = tls_scales;
    scales.fill(q_, n0 * q_.cols + k0, q_.cols, nc, kc);
    struct Rows {
      const Quant4& q;
      const PanelScales& scales;
      int64_t base;  // flat index of (row n0, column k0)
#if defined(__AVX512F__)
      __m512 table;
      __m512 load16(int64_t j, int64_t k) const {
        const int64_t f = base + j * q.cols + k;
        return decode16(q.packed, f, table, scales.get(q, j, f));
      }
#endif
      float at(int64_t j, int64_t k) const {
        const int64_t f = base + j * q.cols + k;
        return q.code[q.nibble(f)] * scales.get(q, j, f);
      }
    };
    struct SlowRows {
      const Quant4& q;
      int64_t base;
#if defined(__AVX512F__)
      __m512 load16(int64_t j, int64_t k) const {
        alignas(64) float v[16];
        for (int i = 0; i < 16; i++) v[i] = at(j, k + i);
        return _mm512_load_ps(v);
      }
#endif
      float at(int64_t j, int64_t k) const { return q.at(base + j * q.cols + k); }
    };
    const int64_t base = n0 * q_.cols + k0;
    if (fast_) {
#if defined(__AVX512F__)
      gemm::pack_from_rows(dst, kc, nc, Rows{q_, scales, base, _mm512_loadu_ps(q_.code)});
#else
      gemm::pack_from_rows(dst, kc, nc, Rows{q_, scales, base});
#endif
    } else {
      gemm::pack_from_rows(dst, kc, nc, SlowRows{q_, base});
    }
  }

 private:
  const Quant4& q_;
  bool fast_;
};

// op(B) = W (K = rows, N = cols): the input gradient dx = dy·W. Panel rows are (parts of) rows of W.
class InputGradPanels : public gemm::PanelSource {
 public:
  explicit InputGradPanels(const Quant4& q) : q_(q), fast_(q.vectorBlocks() && q.cols % 16 == 0) {}

  void pack(float* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    using gemm::NR;
    PanelScales& scales = tls_scales;
    scales.fill(q_, k0 * q_.cols + n0, q_.cols, kc, nc);
#if defined(__AVX512F__)
    const __m512 table = _mm512_loadu_ps(q_.code);
#endif
    for (int64_t p = 0; p * NR < nc; p++) {
      float* panel = dst + p * kc * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
      for (int64_t k = 0; k < kc; k++) {
        const int64_t f0 = (k0 + k) * q_.cols + n0 + p * NR;
        float* out = panel + k * NR;
#if defined(__AVX512F__)
        if (fast_ && jn == NR) {
          for (int h = 0; h < NR; h += 16) {
            const int64_t f = f0 + h;
            _mm512_store_ps(out + h, decode16(q_.packed, f, table, scales.get(q_, k, f)));
          }
          continue;
        }
#endif
        int64_t j = 0;
        if (fast_) {
          for (; j < jn; j++) out[j] = q_.code[q_.nibble(f0 + j)] * scales.get(q_, k, f0 + j);
        } else {
          for (; j < jn; j++) out[j] = q_.at(f0 + j);
        }
        for (; j < NR; j++) out[j] = 0.0f;
      }
    }
  }

 private:
  const Quant4& q_;
  bool fast_;
};

#if QLORA_HAVE_BF16_KERNELS
// The same two panel sources for the bf16 GEMM (gemm.h): each weight element is dequantized in fp32
// (code · block scale, exactly as above) and rounded once to bf16 in the panel, two K steps per
// 32-bit lane.
class ForwardPanelsBf16 : public gemm::PanelSourceBf16 {
 public:
  explicit ForwardPanelsBf16(const Quant4& q) : q_(q), fast_(q.vectorBlocks() && q.cols % 16 == 0) {}

  QLORA_BF16_TARGET void pack(uint32_t* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    using gemm::NR;
    const int64_t kp = (kc + 1) / 2;
    const int64_t base = n0 * q_.cols + k0;  // flat index of (row n0, column k0)
    if (!fast_) {
      for (int64_t p = 0; p * NR < nc; p++) {
        uint32_t* panel = dst + p * kp * NR;
        const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
        for (int64_t t = 0; t < kp; t++) {
          for (int64_t j = 0; j < NR; j++) {
            const int64_t f = base + (p * NR + j) * q_.cols + 2 * t;
            panel[t * NR + j] = j < jn ? gemm::bf16_pair(q_.at(f), 2 * t + 1 < kc ? q_.at(f + 1) : 0.0f) : 0u;
          }
        }
      }
      return;
    }
    // kc is a multiple of 16 here (K = cols is, and K blocks are multiples of 32).
    PanelScales& scales = tls_scales;
    scales.fill(q_, base, q_.cols, nc, kc);
    const __m512 table = _mm512_loadu_ps(q_.code);
    for (int64_t p = 0; p * NR < nc; p++) {
      uint32_t* panel = dst + p * kp * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
      for (int h = 0; h < NR; h += 16) {
        const int64_t live = std::max<int64_t>(0, std::min<int64_t>(16, jn - h));
        for (int64_t kk = 0; kk < kc; kk += 32) {
          // 16 panel columns × 32 K steps: each row of W gives 16 pairs; transpose to pair-rows.
          __m512 t[16];
          for (int j = 0; j < 16; j++) {
            if (j < live) {
              const int64_t r = p * NR + h + j;
              const int64_t f = base + r * q_.cols + kk;
              const __m512 lo = decode16(q_.packed, f, table, scales.get(q_, r, f));
              const __m512 hi = kk + 16 < kc ? decode16(q_.packed, f + 16, table, scales.get(q_, r, f + 16))
                                             : _mm512_setzero_ps();
              t[j] = _mm512_castsi512_ps(gemm::cvt_pairs(lo, hi));
            } else {
              t[j] = _mm512_setzero_ps();
            }
          }
          vec::transpose16x16(t);
          const int64_t pairs = std::min<int64_t>(16, (kc - kk) / 2);
          for (int64_t u = 0; u < pairs; u++) _mm512_store_ps(reinterpret_cast<float*>(panel + (kk / 2 + u) * NR + h), t[u]);
        }
      }
    }
  }

 private:
  const Quant4& q_;
  bool fast_;
};

class InputGradPanelsBf16 : public gemm::PanelSourceBf16 {
 public:
  explicit InputGradPanelsBf16(const Quant4& q) : q_(q), fast_(q.vectorBlocks() && q.cols % 16 == 0) {}

  QLORA_BF16_TARGET void pack(uint32_t* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    using gemm::NR;
    const int64_t kp = (kc + 1) / 2;
    PanelScales& scales = tls_scales;
    if (fast_) scales.fill(q_, k0 * q_.cols + n0, q_.cols, kc, nc);
    const __m512 table = _mm512_loadu_ps(q_.code);
    // Element (row k of the block, column j of the block) of W, dequantized in fp32.
    auto at = [&](int64_t k, int64_t j) {
      const int64_t f = (k0 + k) * q_.cols + n0 + j;
      return fast_ ? q_.code[q_.nibble(f)] * scales.get(q_, k, f) : q_.at(f);
    };
    for (int64_t p = 0; p * NR < nc; p++) {
      uint32_t* panel = dst + p * kp * NR;
      const int64_t j0 = p * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - j0);
      for (int64_t t = 0; t < kp; t++) {
        const int64_t e = 2 * t, o = 2 * t + 1;  // the pair's two rows of W
        uint32_t* out = panel + t * NR;
        if (fast_ && jn == NR) {
          for (int h = 0; h < NR; h += 16) {
            const int64_t fe = (k0 + e) * q_.cols + n0 + j0 + h;
            const __m512 a = decode16(q_.packed, fe, table, scales.get(q_, e, fe));
            const __m512 b = o < kc ? decode16(q_.packed, fe + q_.cols, table, scales.get(q_, o, fe + q_.cols))
                                    : _mm512_setzero_ps();
            _mm512_store_si512(out + h, gemm::interleave_pairs(a, b));
          }
          continue;
        }
        int64_t j = 0;
        for (; j < jn; j++) out[j] = gemm::bf16_pair(at(e, j0 + j), o < kc ? at(o, j0 + j) : 0.0f);
        for (; j < NR; j++) out[j] = 0u;
      }
    }
  }

 private:
  const Quant4& q_;
  bool fast_;
};
#endif

// out[f] = dequant(f) for f in the blocks [b0, b1).
void dequantize_blocks(const Quant4& q, float* out, int64_t b0, int64_t b1) {
  const int64_t n = q.size();
#if defined(__AVX512F__)
  const __m512 table = _mm512_loadu_ps(q.code);
#endif
  for (int64_t b = b0; b < b1; b++) {
    const float s = q.scale(b);
    const int64_t f1 = std::min(n, (b + 1) * q.blocksize);
    int64_t f = b * q.blocksize;
#if defined(__AVX512F__)
    if (q.vectorBlocks()) {
      for (; f + 16 <= f1; f += 16) _mm512_storeu_ps(out + f, decode16(q.packed, f, table, s));
    }
#endif
    for (; f < f1; f++) out[f] = q.code[q.nibble(f)] * s;
  }
}

// Arguments shared by the entry points, from index `i`:
//   packed u8, code f32[16], absmax f32|null, absmaxQ u8|null, nestedAbsmax f32|null,
//   nestedCode f32|null, nestedBlocksize, offset, rows, cols, blocksize
Quant4 quantArgs(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  Quant4 q{};
  q.rows = intArg(info, i + 8, "rows");
  q.cols = intArg(info, i + 9, "cols");
  q.blocksize = intArg(info, i + 10, "blocksize");
  require(q.blocksize >= 1, env, "4bit: blocksize must be positive");
  const int64_t n = q.rows * q.cols;
  const int64_t nblocks = (n + q.blocksize - 1) / q.blocksize;
  q.packed = u8Arg(info, i, "packed", static_cast<size_t>((n + 1) / 2)).data;
  q.code = f32Arg(info, i + 1, "code", 16).data;
  q.blockShift = log2_exact(q.blocksize);
  if (!isNullish(info, i + 2)) {
    q.absmaxF32 = f32Arg(info, i + 2, "absmax", static_cast<size_t>(nblocks)).data;
  } else {
    q.absmaxQ = u8Arg(info, i + 3, "absmax codes", static_cast<size_t>(nblocks)).data;
    q.nestedBlocksize = intArg(info, i + 6, "nested blocksize");
    require(q.nestedBlocksize >= 1, env, "4bit: nested blocksize must be positive");
    q.nestedAbsmax = f32Arg(info, i + 4, "nested absmax",
                            static_cast<size_t>((nblocks + q.nestedBlocksize - 1) / q.nestedBlocksize)).data;
    q.nestedCode = f32Arg(info, i + 5, "nested code", 256).data;
    q.offset = static_cast<float>(numArg(info, i + 7, "nested offset"));
    q.nestedShift = log2_exact(q.nestedBlocksize);
  }
  return q;
}

// dequantize4bit(<quant args 0..10>, out)
Napi::Value Dequantize4bit(const Napi::CallbackInfo& info) {
  const Quant4 q = quantArgs(info, 0);
  float* out = f32Arg(info, 11, "out", static_cast<size_t>(q.size())).data;
  const int64_t nblocks = (q.size() + q.blocksize - 1) / q.blocksize;
  const int64_t grain = std::max<int64_t>(1, 16384 / q.blocksize);
  if (q.size() < 65536) {
    DenormalGuard guard;
    dequantize_blocks(q, out, 0, nblocks);
  } else {
    parallel_for_grain(nblocks, grain, [&](int64_t b0, int64_t b1, int) { dequantize_blocks(q, out, b0, b1); });
  }
  return info.Env().Undefined();
}

// matmul4bit(<quant args 0..10>, input, out, n, beta, inputGrad, bf16)
//   inputGrad false: out[n, rows] = input[n, cols] · Wᵀ + beta·out
//   inputGrad true:  out[n, cols] = input[n, rows] · W  + beta·out
//   bf16: input and weight rounded to bf16, products accumulated in fp32 (needs bf16Available()).
Napi::Value Matmul4bit(const Napi::CallbackInfo& info) {
  const Quant4 q = quantArgs(info, 0);
  const int64_t n = intArg(info, 13, "n");
  const float beta = static_cast<float>(numArg(info, 14, "beta"));
  const bool inputGrad = boolArg(info, 15);
  const int64_t K = inputGrad ? q.rows : q.cols;
  const int64_t N = inputGrad ? q.cols : q.rows;
  const float* x = f32Arg(info, 11, "input", static_cast<size_t>(n * K)).data;
  float* out = f32Arg(info, 12, "out", static_cast<size_t>(n * N)).data;
  gemm::GemmArgs g{n, N, K, x, K, false, out, N, 1.0f, beta};
  if (boolArg(info, 16)) {
    require(gemm::bf16_available(), info.Env(),
            "matmul4bit: bf16 compute needs an AVX-512 build of the addon on a CPU with AVX512_BF16");
#if QLORA_HAVE_BF16_KERNELS
    if (inputGrad) {
      gemm::sgemm_bf16(g, InputGradPanelsBf16(q));
    } else {
      gemm::sgemm_bf16(g, ForwardPanelsBf16(q));
    }
#endif
    return info.Env().Undefined();
  }
  if (inputGrad) {
    gemm::sgemm(g, InputGradPanels(q));
  } else {
    gemm::sgemm(g, ForwardPanels(q));
  }
  return info.Env().Undefined();
}

// embedding4bit(<quant args 0..10>, ids, out, n): out[i, :] = row ids[i] of dequant(W).
Napi::Value Embedding4bit(const Napi::CallbackInfo& info) {
  const Quant4 q = quantArgs(info, 0);
  const int64_t n = intArg(info, 13, "n");
  const int32_t* ids = i32Arg(info, 11, "ids", static_cast<size_t>(n)).data;
  float* out = f32Arg(info, 12, "out", static_cast<size_t>(n * q.cols)).data;
  for (int64_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= q.rows) {
      fail(info.Env(), "embedding4bit: id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                           " is outside [0, " + std::to_string(q.rows) + ")");
    }
  }
  parallel_for(n, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; i++) {
      const int64_t base = static_cast<int64_t>(ids[i]) * q.cols;
      float* o = out + i * q.cols;
      for (int64_t c = 0; c < q.cols; c++) o[c] = q.at(base + c);
    }
  });
  return info.Env().Undefined();
}

QLORA_EXPORT("dequantize4bit", Dequantize4bit);
QLORA_EXPORT("embedding4bit", Embedding4bit);
QLORA_EXPORT("matmul4bit", Matmul4bit);

}  // namespace
}  // namespace qlora
