// sgemm: packing, micro-kernels, the blocked driver, a small-M path and the N-API entry point.
// See gemm.h for the design.
#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "args.h"
#include "registry.h"
#include "threads.h"

namespace qlora {
namespace gemm {
namespace {

// Row-block and column-block sizes of the driver (A block MC×KC stays in L2; B block KC×NC in L2/L3).
constexpr int64_t MC = MR * 12;
constexpr int64_t NC = NR * 64;

// Per-thread packing buffers, grown on demand and kept for the next call.
thread_local vec::Scratch tls_a_panel;
thread_local vec::Scratch tls_b_panel;
thread_local vec::Scratch tls_small_rows;

// ---- packing A --------------------------------------------------------------------------------
// Ap micro-panel r (rows i0 + r·MR ..): Ap[r·kc·MR + k·MR + i] = op(A)[i0 + r·MR + i, k0 + k], zero
// for rows past mc.
void pack_a(float* dst, const GemmArgs& g, int64_t i0, int64_t mc, int64_t k0, int64_t kc) {
  for (int64_t r = 0; r * MR < mc; r++) {
    float* panel = dst + r * kc * MR;
    const int64_t rows = std::min<int64_t>(MR, mc - r * MR);
    const int64_t row0 = i0 + r * MR;
    if (!g.transA) {
      // op(A)[i, k] = a[i·lda + k]: each source row is contiguous in k; scatter it with stride MR.
      int64_t kDone = 0;
#if defined(__AVX512F__)
      // 16 columns at a time through the register transpose; the MR (≤ 16) live lanes of each
      // transposed vector are one k-row of the panel.
      static_assert(MR <= 16, "the transpose path packs at most 16 rows");
      constexpr __mmask16 rowMask = static_cast<__mmask16>((1u << MR) - 1);
      for (; kDone + 16 <= kc; kDone += 16) {
        __m512 r[16];
        for (int i = 0; i < 16; i++) {
          r[i] = i < rows ? _mm512_loadu_ps(g.a + (row0 + i) * g.lda + k0 + kDone) : _mm512_setzero_ps();
        }
        vec::transpose16x16(r);
        for (int t = 0; t < 16; t++) _mm512_mask_storeu_ps(panel + (kDone + t) * MR, rowMask, r[t]);
      }
#endif
      for (int64_t i = 0; i < rows; i++) {
        const float* src = g.a + (row0 + i) * g.lda + k0;
        for (int64_t k = kDone; k < kc; k++) panel[k * MR + i] = src[k];
      }
      for (int64_t i = rows; i < MR; i++) {
        for (int64_t k = kDone; k < kc; k++) panel[k * MR + i] = 0.0f;
      }
    } else {
      // op(A)[i, k] = a[k·lda + i]: MR consecutive floats per k.
      for (int64_t k = 0; k < kc; k++) {
        const float* src = g.a + (k0 + k) * g.lda + row0;
        float* out = panel + k * MR;
        int64_t i = 0;
        for (; i < rows; i++) out[i] = src[i];
        for (; i < MR; i++) out[i] = 0.0f;
      }
    }
  }
}

// ---- micro-kernels ------------------------------------------------------------------------------
// C[m×n] = alpha·(Ap·Bp) + (overwrite ? 0 : beta·C), for m ≤ MR, n ≤ NR.
#if defined(__AVX512F__)
void micro_kernel(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                  int m, int n, float alpha, float beta, bool overwrite) {
  // Start fetching the C tile now; it is only touched after the K loop.
  for (int i = 0; i < m; i++) {
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + 16), _MM_HINT_T0);
  }
  __m512 c[MR][2];
#pragma GCC unroll 14
  for (int i = 0; i < MR; i++) {
    c[i][0] = _mm512_setzero_ps();
    c[i][1] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; k++) {
    const __m512 b0 = _mm512_load_ps(B);
    const __m512 b1 = _mm512_load_ps(B + 16);
    _mm_prefetch(reinterpret_cast<const char*>(A + 8 * MR), _MM_HINT_T0);
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
      const __m512 a = _mm512_set1_ps(A[i]);
      c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
    }
    A += MR;
    B += NR;
  }
  const __mmask16 mask0 = n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
  const __mmask16 mask1 = n >= 32 ? 0xFFFF : (n > 16 ? static_cast<__mmask16>((1u << (n - 16)) - 1) : 0);
  const __m512 va = _mm512_set1_ps(alpha);
  const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
  for (int i = 0; i < MR; i++) {
    if (i >= m) break;
    float* row = C + i * ldc;
    __m512 r0 = _mm512_mul_ps(va, c[i][0]);
    __m512 r1 = _mm512_mul_ps(va, c[i][1]);
    if (!overwrite) {
      r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask0, row), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask1, row + 16), r1);
    }
    _mm512_mask_storeu_ps(row, mask0, r0);
    _mm512_mask_storeu_ps(row + 16, mask1, r1);
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
void micro_kernel(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                  int m, int n, float alpha, float beta, bool overwrite) {
  __m256 c[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; i++) {
    c[i][0] = _mm256_setzero_ps();
    c[i][1] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(B);
    const __m256 b1 = _mm256_load_ps(B + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
      const __m256 a = _mm256_broadcast_ss(A + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
    A += MR;
    B += NR;
  }
  alignas(32) float tile[MR][NR];
  for (int i = 0; i < MR; i++) {
    _mm256_store_ps(tile[i], c[i][0]);
    _mm256_store_ps(tile[i] + 8, c[i][1]);
  }
  for (int i = 0; i < m; i++) {
    float* row = C + i * ldc;
    for (int j = 0; j < n; j++) row[j] = overwrite ? alpha * tile[i][j] : alpha * tile[i][j] + beta * row[j];
  }
}
#else
void micro_kernel(int64_t kc, const float* __restrict A, const float* __restrict B, float* C, int64_t ldc,
                  int m, int n, float alpha, float beta, bool overwrite) {
  float tile[MR][NR] = {};
  for (int64_t k = 0; k < kc; k++) {
    for (int i = 0; i < MR; i++) {
      const float a = A[i];
      for (int j = 0; j < NR; j++) tile[i][j] += a * B[j];
    }
    A += MR;
    B += NR;
  }
  for (int i = 0; i < m; i++) {
    float* row = C + i * ldc;
    for (int j = 0; j < n; j++) row[j] = overwrite ? alpha * tile[i][j] : alpha * tile[i][j] + beta * row[j];
  }
}
#endif

// ---- the blocked driver ---------------------------------------------------------------------------
// K is cut into equal blocks (a multiple of 16, at most KC_MAX): same cuts for every thread count.
int64_t k_block(int64_t K) {
  const int64_t blocks = (K + KC_MAX - 1) / KC_MAX;
  const int64_t kc = (K + blocks - 1) / blocks;
  return (kc + 15) / 16 * 16;
}

// Computes the sub-rectangle rows [m0, m1) × columns [n0, n1) of C (n0 a multiple of NR).
void gemm_serial(const GemmArgs& g, const PanelSource& b, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t kcMax = k_block(g.K);
  float* bp = tls_b_panel.get(static_cast<size_t>(kcMax * NC));
  float* ap = tls_a_panel.get(static_cast<size_t>(kcMax * MC));
  for (int64_t jc = n0; jc < n1; jc += NC) {
    const int64_t nc = std::min(NC, n1 - jc);
    for (int64_t pc = 0; pc < g.K; pc += kcMax) {
      const int64_t kc = std::min(kcMax, g.K - pc);
      const bool first = pc == 0;
      const bool overwrite = first && g.beta == 0.0f;
      const float beta = first ? g.beta : 1.0f;
      b.pack(bp, pc, kc, jc, nc);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        const int64_t mc = std::min(MC, m1 - ic);
        pack_a(ap, g, ic, mc, pc, kc);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const float* bpanel = bp + jr * kc;
          const int n = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int m = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            micro_kernel(kc, ap + ir * kc, bpanel, g.c + (ic + ir) * g.ldc + jc + jr, g.ldc, m, n, g.alpha, beta,
                         overwrite);
          }
        }
      }
    }
  }
}

// C = beta·C (K == 0: the product is empty).
void scale_c(const GemmArgs& g) {
  for (int64_t i = 0; i < g.M; i++) {
    float* row = g.c + i * g.ldc;
    for (int64_t j = 0; j < g.N; j++) row[j] = g.beta == 0.0f ? 0.0f : g.beta * row[j];
  }
}

// ---- small-M path (M ≤ SMALL_M): no packing; B is streamed once, memory-bound anyway ---------
constexpr int64_t SMALL_M = 8;

// out[r] = dot(x + r·ldx, y) for r < rows ≤ 4: the rows share each load of y, and 2 accumulators
// per row keep 8 FMA chains in flight.
void dot_rows(const float* x, int64_t ldx, int rows, const float* y, int64_t n, float* out) {
  int64_t k = 0;
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#if defined(__AVX512F__)
  __m512 acc[4][2];
  for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (; k + 32 <= n; k += 32) {
    const __m512 y0 = _mm512_loadu_ps(y + k), y1 = _mm512_loadu_ps(y + k + 16);
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
      if (r >= rows) break;
      acc[r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(x + r * ldx + k), y0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(_mm512_loadu_ps(x + r * ldx + k + 16), y1, acc[r][1]);
    }
  }
  for (int r = 0; r < rows; r++) s[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc[4][2];
  for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (; k + 16 <= n; k += 16) {
    const __m256 y0 = _mm256_loadu_ps(y + k), y1 = _mm256_loadu_ps(y + k + 8);
    for (int r = 0; r < rows; r++) {
      acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * ldx + k), y0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * ldx + k + 8), y1, acc[r][1]);
    }
  }
  for (int r = 0; r < rows; r++) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(acc[r][0], acc[r][1]));
    for (float v : lanes) s[r] += v;
  }
#else
  float lanes[4][8] = {};
  for (; k + 8 <= n; k += 8) {
    for (int r = 0; r < rows; r++) {
      for (int l = 0; l < 8; l++) lanes[r][l] += x[r * ldx + k + l] * y[k + l];
    }
  }
  for (int r = 0; r < rows; r++) {
    for (float v : lanes[r]) s[r] += v;
  }
#endif
  for (int r = 0; r < rows; r++) {
    for (int64_t kk = k; kk < n; kk++) s[r] += x[r * ldx + kk] * y[kk];
    out[r] = s[r];
  }
}

void gemm_small_m(const GemmArgs& g, const float* b, int64_t ldb, bool transB, bool allowThreads) {
  // Rows of op(A), contiguous (a copy only when A is transposed).
  const float* arows = g.a;
  int64_t lda = g.lda;
  if (g.transA) {
    float* rows = tls_small_rows.get(static_cast<size_t>(g.M * g.K));
    for (int64_t i = 0; i < g.M; i++) {
      for (int64_t k = 0; k < g.K; k++) rows[i * g.K + k] = g.a[k * g.lda + i];
    }
    arows = rows;
    lda = g.K;
  }
  const double flops = 2.0 * static_cast<double>(g.M) * g.N * g.K;
  auto store = [&](int64_t i, int64_t j, float s) {
    float* out = g.c + i * g.ldc + j;
    *out = g.beta == 0.0f ? g.alpha * s : g.alpha * s + g.beta * *out;
  };
  auto work = [&](int64_t j0, int64_t j1, int) {
    if (transB) {
      // out[i, j] = dot(row i of op(A), row j of b)
      for (int64_t j = j0; j < j1; j++) {
        for (int64_t i0 = 0; i0 < g.M; i0 += 4) {
          const int rows = static_cast<int>(std::min<int64_t>(4, g.M - i0));
          float s[4];
          dot_rows(arows + i0 * lda, lda, rows, b + j * ldb, g.K, s);
          for (int r = 0; r < rows; r++) store(i0 + r, j, s[r]);
        }
      }
    } else {
      // out[i, chunk] = Σ_k a[i, k]·b[k, chunk], streaming each row strip of b once for all rows.
      constexpr int64_t CHUNK = 256;
      alignas(64) float acc[SMALL_M][CHUNK];
      for (int64_t jc = j0; jc < j1; jc += CHUNK) {
        const int64_t nb = std::min(CHUNK, j1 - jc);
        for (int64_t i = 0; i < g.M; i++) {
          for (int64_t j = 0; j < nb; j++) acc[i][j] = 0.0f;
        }
        for (int64_t k = 0; k < g.K; k++) {
          const float* brow = b + k * ldb + jc;
          for (int64_t i = 0; i < g.M; i++) {
            const float a = arows[i * lda + k];
            float* ai = acc[i];
            for (int64_t j = 0; j < nb; j++) ai[j] += a * brow[j];
          }
        }
        for (int64_t i = 0; i < g.M; i++) {
          for (int64_t j = 0; j < nb; j++) store(i, jc + j, acc[i][j]);
        }
      }
    }
  };
  if (!allowThreads || flops < 2e5) {
    DenormalGuard guard;
    work(0, g.N, 0);
  } else {
    parallel_for_grain(g.N, 16, work);
  }
}

}  // namespace

void DensePanels::pack(float* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const {
  if (!trans_) {
    // op(B)[k, j] = b[k·ldb + j]: copy NR-wide strips of each row.
    for (int64_t p = 0; p * NR < nc; p++) {
      float* panel = dst + p * kc * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
      for (int64_t k = 0; k < kc; k++) {
        const float* src = b_ + (k0 + k) * ldb_ + n0 + p * NR;
        float* out = panel + k * NR;
        if (jn == NR) {
          std::memcpy(out, src, NR * sizeof(float));
        } else {
          int64_t j = 0;
          for (; j < jn; j++) out[j] = src[j];
          for (; j < NR; j++) out[j] = 0.0f;
        }
      }
    }
    return;
  }
  // op(B)[k, j] = b[j·ldb + k]: rows of the stored matrix become panel columns.
  struct Rows {
    const float* base;
    int64_t ldb;
    float at(int64_t j, int64_t k) const { return base[j * ldb + k]; }
#if defined(__AVX512F__)
    __m512 load16(int64_t j, int64_t k) const { return _mm512_loadu_ps(base + j * ldb + k); }
#endif
  };
  pack_from_rows(dst, kc, nc, Rows{b_ + n0 * ldb_ + k0, ldb_});
}

// Below this many flops a product runs on one thread (dispatch would cost more than it saves).
constexpr double PARALLEL_FLOPS = 4e6;

void sgemm(const GemmArgs& g, const PanelSource& b) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K == 0) {
    scale_c(g);
    return;
  }
  const double flops = 2.0 * static_cast<double>(g.M) * g.N * g.K;
  const int threads = num_threads();
  if (threads == 1 || flops < PARALLEL_FLOPS) {
    DenormalGuard guard;
    gemm_serial(g, b, 0, g.M, 0, g.N);
    return;
  }
  // Split the larger dimension into per-thread tile ranges; both splits leave every element's
  // arithmetic unchanged, so the result does not depend on the thread count.
  const int64_t tilesM = (g.M + MR - 1) / MR, tilesN = (g.N + NR - 1) / NR;
  if (tilesN * NR >= tilesM * MR) {
    parallel_for(tilesN, [&](int64_t t0, int64_t t1, int) {
      gemm_serial(g, b, 0, g.M, t0 * NR, std::min(t1 * NR, g.N));
    });
  } else {
    parallel_for(tilesM, [&](int64_t t0, int64_t t1, int) {
      gemm_serial(g, b, t0 * MR, std::min(t1 * MR, g.M), 0, g.N);
    });
  }
}

namespace {

// sgemm(a, b, out, batch, M, N, K, transA, transB, alpha, beta, bBatched)
// out[i] = alpha·op(a[i])·op(b[i or 0]) + beta·out[i] for each of `batch` matrices.
Napi::Value SgemmExport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t batch = intArg(info, 3, "batch");
  const int64_t M = intArg(info, 4, "M"), N = intArg(info, 5, "N"), K = intArg(info, 6, "K");
  const bool transA = boolArg(info, 7), transB = boolArg(info, 8);
  const float alpha = static_cast<float>(numArg(info, 9, "alpha"));
  const float beta = static_cast<float>(numArg(info, 10, "beta"));
  const bool bBatched = boolArg(info, 11);
  Span<float> a = f32Arg(info, 0, "a", static_cast<size_t>(batch * M * K));
  Span<float> b = f32Arg(info, 1, "b", static_cast<size_t>((bBatched ? batch : 1) * K * N));
  Span<float> c = f32Arg(info, 2, "out", static_cast<size_t>(batch * M * N));
  // One product; `threaded` false keeps it on the calling thread (no nested parallel regions).
  auto product = [&](int64_t i, bool threaded) {
    GemmArgs g{M, N, K, a.data + i * M * K, transA ? M : K, transA, c.data + i * M * N, N, alpha, beta};
    const float* bi = b.data + (bBatched ? i * K * N : 0);
    const int64_t ldb = transB ? K : N;
    if (M <= SMALL_M && K > 0) {
      gemm_small_m(g, bi, ldb, transB, threaded);
    } else if (threaded) {
      sgemm(g, DensePanels(bi, ldb, transB));
    } else if (M > 0 && N > 0) {
      if (K == 0) {
        scale_c(g);
      } else {
        gemm_serial(g, DensePanels(bi, ldb, transB), 0, M, 0, N);
      }
    }
  };
  const double itemFlops = 2.0 * static_cast<double>(M) * N * K;
  if (batch > 1 && num_threads() > 1 && itemFlops < PARALLEL_FLOPS && itemFlops * batch >= PARALLEL_FLOPS) {
    // Many small products: whole products per thread (each element's arithmetic is unchanged).
    parallel_for(batch, [&](int64_t i0, int64_t i1, int) {
      for (int64_t i = i0; i < i1; i++) product(i, false);
    });
  } else {
    for (int64_t i = 0; i < batch; i++) product(i, true);
  }
  return env.Undefined();
}

QLORA_EXPORT("sgemm", SgemmExport);

}  // namespace
}  // namespace gemm
}  // namespace qlora
