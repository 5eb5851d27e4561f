// Single-precision GEMM: C = alpha·op(A)·op(B) + beta·C, BLIS-style.
//
// The driver blocks K (KC) so a packed B micro-panel stays in L1 and a packed A block in L2, packs
// A into MR-row micro-panels and B into NR-column micro-panels (64-byte aligned, zero padded), and
// runs a register-blocked MR×NR micro-kernel. Where B comes from is abstracted by PanelSource, so
// the 4-bit matmul dequantizes straight into the packed panel and never materializes the weight.
//
// Register blocking by instruction set (compile-time):
//   AVX-512: 14×32 (28 zmm accumulators, two B vectors, broadcast A operands)
//   AVX2+FMA: 6×16 (12 ymm accumulators)
//   otherwise: 4×16 plain loops the compiler may auto-vectorize.
#pragma once
#include <cstdint>

#include "vec.h"

// GCC 12 reports false "may be used uninitialized" warnings from inside avx512fintrin.h
// (_mm512_undefined_* in set1/setzero); silence them for the kernel files that include this.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#include <cstdlib>
#include <cstring>
#include <new>

// bf16 kernels (gemm_bf16.cc) exist in AVX-512 builds only; they are compiled for AVX512_BF16 with
// a function target attribute (the rest of the addon keeps the build's -march) and run only where
// the CPU reports the feature at run time (bf16_available()). AVX2, NEON and scalar builds have none.
#if defined(__AVX512F__) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QLORA_HAVE_BF16_KERNELS 1
#define QLORA_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define QLORA_HAVE_BF16_KERNELS 0
#endif

namespace qlora {
namespace gemm {

#if defined(__AVX512F__)
constexpr int MR = 14;
constexpr int NR = 32;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int MR = 6;
constexpr int NR = 16;
#else
constexpr int MR = 4;
constexpr int NR = 16;
#endif

// K-block size limit; actual blocks are balanced (ceil(K / blocks)) and rounded up to a multiple of
// 16 so 4-bit panels start on whole bytes and whole 16-element chunks. 384 measured 2-5% faster
// than 256 on the AVX-512 kernel (Zen 5, 48 KiB L1d); 512 was ~10% slower.
constexpr int64_t KC_MAX = 384;

// Supplies op(B) panels to the driver.
class PanelSource {
 public:
  virtual ~PanelSource() = default;
  // Writes op(B)[k0 : k0+kc, n0 : n0+nc] into `dst` as ceil(nc/NR) micro-panels, panel p holding
  // dst[p·kc·NR + k·NR + j] = op(B)[k0+k, n0+p·NR+j], with columns j ≥ nc - p·NR zero filled.
  // `dst` is 64-byte aligned; k0 is a multiple of 16 and n0 a multiple of NR.
  virtual void pack(float* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const = 0;
};

struct GemmArgs {
  int64_t M, N, K;
  const float* a;  // op(A) is M×K; stored M×K (lda ≥ K) or, with transA, K×M (lda ≥ M)
  int64_t lda;
  bool transA;
  float* c;  // M×N, row stride ldc
  int64_t ldc;
  float alpha, beta;  // beta == 0 ignores C's old contents (NaN included)
};

// Threaded over the pool (static partition: results are identical run to run and do not depend on
// the thread count, since each element's summation order is fixed by the K blocking alone).
void sgemm(const GemmArgs& args, const PanelSource& b);

// ---- bf16 compute (AVX512_BF16: vdpbf16ps, fp32 accumulation) --------------------------------------
// The same blocking as sgemm, but both packed operands hold bf16 (round to nearest even) in K pairs:
// one 32-bit lane = (op(X)[·, 2p], op(X)[·, 2p+1]), the pair vdpbf16ps multiplies and adds into one
// fp32 accumulator lane. K blocks are multiples of 32 (16 pairs, one transposed tile).

// True when the bf16 kernels were compiled in and this CPU has AVX512_BF16 (and QLORA_NO_BF16 is
// unset: it hides the feature, for testing the fallback on a machine that has it).
bool bf16_available();

// Supplies op(B) panels as bf16 pairs: ceil(nc/NR) micro-panels, panel p holding
// dst[p·kp·NR + t·NR + j] = (op(B)[k0+2t, n0+p·NR+j], op(B)[k0+2t+1, ...]) in (low, high) halves,
// kp = ceil(kc/2); the element past kc and columns past nc are zero. k0 is a multiple of 32.
class PanelSourceBf16 {
 public:
  virtual ~PanelSourceBf16() = default;
  virtual void pack(uint32_t* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const = 0;
};

// C = alpha·bf16(op(A))·op(B) + beta·C with fp32 accumulation; A must not be transposed. Threaded
// like sgemm (static partition, results independent of the thread count). Call only when
// bf16_available().
void sgemm_bf16(const GemmArgs& args, const PanelSourceBf16& b);

// Round-to-nearest-even fp32 -> bf16 as vcvtne2ps2bf16 does it (denormals flush to signed zero,
// NaN stays NaN), for the scalar edges of the packers.
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7F800000u) == 0) return static_cast<uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline uint32_t bf16_pair(float lo, float hi) {
  return static_cast<uint32_t>(to_bf16(lo)) | (static_cast<uint32_t>(to_bf16(hi)) << 16);
}

#if QLORA_HAVE_BF16_KERNELS
// 32 floats (lo = elements 0..15, hi = 16..31) -> 16 bf16 pairs (element 2t low, 2t+1 high).
QLORA_BF16_TARGET inline __m512i cvt_pairs(__m512 lo, __m512 hi) {
  // vcvtne2ps2bf16 puts its second operand in the low half: [lo0..lo15, hi0..hi15] as 16-bit lanes,
  // which read as 32-bit lanes are exactly the pairs (lo0,lo1), (lo2,lo3), ...
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}
// Two rows of 16 floats -> 16 bf16 pairs (a[j], b[j]): column j of a K pair.
QLORA_BF16_TARGET inline __m512i interleave_pairs(__m512 a, __m512 b) {
  const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // [a0..a15, b0..b15]
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                       6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, v);
}
#endif

// Dense op(B) from a row-major float matrix: stored K×N (ldb ≥ N) or, with trans, N×K (ldb ≥ K).
class DensePanels : public PanelSource {
 public:
  DensePanels(const float* b, int64_t ldb, bool trans) : b_(b), ldb_(ldb), trans_(trans) {}
  void pack(float* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override;

 private:
  const float* b_;
  int64_t ldb_;
  bool trans_;
};

// Packs panels for an op(B) whose columns are rows of some source (op(B)[k][j] = row j, element k),
// e.g. a transposed dense B or a 4-bit weight for x·Wᵀ. `Rows` provides:
//   float at(int64_t j, int64_t k) const            — one element (any j, k inside the block)
//   __m512 load16(int64_t j, int64_t k) const        — elements k..k+15 of row j (AVX-512 builds;
//                                                      called only with k - k0 a multiple of 16)
// Rows j ≥ nc are zero. Full 16×16 tiles go through an in-register transpose.

template <class Rows>
void pack_from_rows(float* dst, int64_t kc, int64_t nc, const Rows& rows) {
  for (int64_t p = 0; p * NR < nc; p++) {
    float* panel = dst + p * kc * NR;
    const int64_t jn = nc - p * NR < NR ? nc - p * NR : NR;  // live columns in this panel
    const int64_t j0 = p * NR;
#if defined(__AVX512F__)
    for (int h = 0; h < NR; h += 16) {
      const int64_t live = jn - h < 0 ? 0 : (jn - h > 16 ? 16 : jn - h);
      int64_t k = 0;
      if (live > 0) {
        for (; k + 16 <= kc; k += 16) {
          __m512 r[16];
          for (int j = 0; j < 16; j++) r[j] = j < live ? rows.load16(j0 + h + j, k) : _mm512_setzero_ps();
          vec::transpose16x16(r);
          for (int t = 0; t < 16; t++) _mm512_store_ps(panel + (k + t) * NR + h, r[t]);
        }
      }
      for (; k < kc; k++) {
        for (int j = 0; j < 16; j++) panel[k * NR + h + j] = j < live ? rows.at(j0 + h + j, k) : 0.0f;
      }
    }
#else
    for (int64_t k = 0; k < kc; k++) {
      for (int64_t j = 0; j < NR; j++) panel[k * NR + j] = j < jn ? rows.at(j0 + j, k) : 0.0f;
    }
#endif
  }
}

}  // namespace gemm
}  // namespace qlora
