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
