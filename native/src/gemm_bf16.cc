// bf16 GEMM for AVX512_BF16 CPUs (vdpbf16ps: 16 fp32 lanes, each += a.lo·b.lo + a.hi·b.hi, i.e. two
// K steps per instruction at the issue rate of one fp32 FMA). Same BLIS blocking as gemm.cc: A is
// rounded to bf16 while it is packed, B panels come from a PanelSourceBf16 (the 4-bit weights
// dequantize straight into them), and the 14×32 micro-kernel accumulates in fp32. Only the
// frozen-base matmuls use it (--compute-dtype bf16; docs/performance.md § bf16 compute).
#include <algorithm>
#include <cstdlib>

#include "args.h"
#include "gemm.h"
#include "registry.h"
#include "threads.h"

namespace qlora {
namespace gemm {

#if QLORA_HAVE_BF16_KERNELS

namespace {

constexpr int64_t MC = MR * 12;
constexpr int64_t NC = NR * 64;
// K-block limit in elements; blocks are balanced and rounded up to a multiple of 32 (16 pairs).
// A bf16 pair row of a B micro-panel is as many bytes as an fp32 row, so 2× sgemm's KC keeps the
// same L1/L2 footprint.
constexpr int64_t KC_MAX_BF16 = 2 * KC_MAX;

// Packed bf16 pairs, one uint32 each (the size of a float, so vec::Scratch holds them).
thread_local vec::Scratch tls_a_bf16;
thread_local vec::Scratch tls_b_bf16;

int64_t k_block_bf16(int64_t K) {
  const int64_t blocks = (K + KC_MAX_BF16 - 1) / KC_MAX_BF16;
  const int64_t kc = (K + blocks - 1) / blocks;
  return (kc + 31) / 32 * 32;
}

inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : (n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1));
}

// Ap micro-panel r: ap[r·kp·MR + t·MR + i] = bf16 pair (A[i0+r·MR+i, k0+2t], A[..., k0+2t+1]).
QLORA_BF16_TARGET void pack_a_bf16(uint32_t* dst, const GemmArgs& g, int64_t i0, int64_t mc, int64_t k0,
                                   int64_t kc) {
  const int64_t kp = (kc + 1) / 2;
  static_assert(MR <= 16, "the transpose path packs at most 16 rows");
  constexpr __mmask16 rowMask = static_cast<__mmask16>((1u << MR) - 1);
  for (int64_t r = 0; r * MR < mc; r++) {
    uint32_t* panel = dst + r * kp * MR;
    const int64_t rows = std::min<int64_t>(MR, mc - r * MR);
    const float* a0 = g.a + (i0 + r * MR) * g.lda + k0;
    // 32 columns (16 pairs) of up to 16 rows per tile, through the 16×16 32-bit transpose; the
    // last tile loads only the columns left (masked, zero beyond kc).
    for (int64_t kk = 0; kk < kc; kk += 32) {
      const int64_t left = kc - kk;
      const __mmask16 m0 = first_lanes(left), m1 = first_lanes(left - 16);
      __m512 t[16];
      for (int i = 0; i < 16; i++) {
        if (i < rows) {
          const float* src = a0 + i * g.lda + kk;
          t[i] = _mm512_castsi512_ps(cvt_pairs(_mm512_maskz_loadu_ps(m0, src), _mm512_maskz_loadu_ps(m1, src + 16)));
        } else {
          t[i] = _mm512_setzero_ps();
        }
      }
      vec::transpose16x16(t);
      const int64_t pairs = std::min<int64_t>(16, (left + 1) / 2);
      for (int64_t p = 0; p < pairs; p++) {
        _mm512_mask_storeu_ps(reinterpret_cast<float*>(panel + (kk / 2 + p) * MR), rowMask, t[p]);
      }
    }
  }
}

// C[m×n] = alpha·(Ap·Bp) + (overwrite ? 0 : beta·C), m ≤ MR, n ≤ NR, over kp K pairs.
QLORA_BF16_TARGET void micro_kernel_bf16(int64_t kp, const uint32_t* __restrict A, const uint32_t* __restrict B,
                                         float* C, int64_t ldc, int m, int n, float alpha, float beta,
                                         bool overwrite) {
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
  for (int64_t t = 0; t < kp; t++) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(B);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(B + 16);
    _mm_prefetch(reinterpret_cast<const char*>(A + 8 * MR), _MM_HINT_T0);
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[i]));
      c[i][0] = _mm512_dpbf16_ps(c[i][0], a, b0);
      c[i][1] = _mm512_dpbf16_ps(c[i][1], a, b1);
    }
    A += MR;
    B += NR;
  }
  const __mmask16 mask0 = first_lanes(n);
  const __mmask16 mask1 = first_lanes(n - 16);
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

// Rows [m0, m1) × columns [n0, n1) of C (n0 a multiple of NR).
QLORA_BF16_TARGET void gemm_serial_bf16(const GemmArgs& g, const PanelSourceBf16& b, int64_t m0, int64_t m1,
                                        int64_t n0, int64_t n1) {
  const int64_t kcMax = k_block_bf16(g.K);
  const int64_t kpMax = kcMax / 2;
  uint32_t* bp = reinterpret_cast<uint32_t*>(tls_b_bf16.get(static_cast<size_t>(kpMax * NC)));
  uint32_t* ap = reinterpret_cast<uint32_t*>(tls_a_bf16.get(static_cast<size_t>(kpMax * MC)));
  for (int64_t jc = n0; jc < n1; jc += NC) {
    const int64_t nc = std::min(NC, n1 - jc);
    for (int64_t pc = 0; pc < g.K; pc += kcMax) {
      const int64_t kc = std::min(kcMax, g.K - pc);
      const int64_t kp = (kc + 1) / 2;
      const bool first = pc == 0;
      const bool overwrite = first && g.beta == 0.0f;
      const float beta = first ? g.beta : 1.0f;
      b.pack(bp, pc, kc, jc, nc);
      for (int64_t ic = m0; ic < m1; ic += MC) {
        const int64_t mc = std::min(MC, m1 - ic);
        pack_a_bf16(ap, g, ic, mc, pc, kc);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const uint32_t* bpanel = bp + jr * kp;
          const int n = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int m = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            micro_kernel_bf16(kp, ap + ir * kp, bpanel, g.c + (ic + ir) * g.ldc + jc + jr, g.ldc, m, n, g.alpha,
                              beta, overwrite);
          }
        }
      }
    }
  }
}

constexpr double PARALLEL_FLOPS_BF16 = 4e6;

// op(B) from a dense row-major float matrix (a frozen full-precision base weight, e.g. lm_head):
// stored K×N (ldb ≥ N) or, with trans, N×K (ldb ≥ K). Masked loads zero everything past kc / nc.
class DensePanelsBf16 : public PanelSourceBf16 {
 public:
  DensePanelsBf16(const float* b, int64_t ldb, bool trans) : b_(b), ldb_(ldb), trans_(trans) {}

  QLORA_BF16_TARGET void pack(uint32_t* dst, int64_t k0, int64_t kc, int64_t n0, int64_t nc) const override {
    const int64_t kp = (kc + 1) / 2;
    for (int64_t p = 0; p * NR < nc; p++) {
      uint32_t* panel = dst + p * kp * NR;
      const int64_t j0 = n0 + p * NR;
      const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
      if (trans_) {
        // Panel columns are rows of b: 16 rows × 32 K steps per transposed tile (as pack_a_bf16).
        for (int h = 0; h < NR; h += 16) {
          const int64_t live = std::max<int64_t>(0, std::min<int64_t>(16, jn - h));
          for (int64_t kk = 0; kk < kc; kk += 32) {
            const __mmask16 m0 = first_lanes(kc - kk), m1 = first_lanes(kc - kk - 16);
            __m512 t[16];
            for (int j = 0; j < 16; j++) {
              if (j < live) {
                const float* src = b_ + (j0 + h + j) * ldb_ + k0 + kk;
                t[j] = _mm512_castsi512_ps(
                    cvt_pairs(_mm512_maskz_loadu_ps(m0, src), _mm512_maskz_loadu_ps(m1, src + 16)));
              } else {
                t[j] = _mm512_setzero_ps();
              }
            }
            vec::transpose16x16(t);
            const int64_t pairs = std::min<int64_t>(16, (kc - kk + 1) / 2);
            for (int64_t u = 0; u < pairs; u++) {
              _mm512_store_ps(reinterpret_cast<float*>(panel + (kk / 2 + u) * NR + h), t[u]);
            }
          }
        }
      } else {
        // Panel rows are (parts of) rows of b: rows 2t and 2t+1 interleave into one pair row.
        const __mmask16 mh[2] = {first_lanes(jn), first_lanes(jn - 16)};
        for (int64_t t = 0; t < kp; t++) {
          const float* even = b_ + (k0 + 2 * t) * ldb_ + j0;
          const bool odd = 2 * t + 1 < kc;
          for (int h = 0; h < NR; h += 16) {
            const __m512 a = _mm512_maskz_loadu_ps(mh[h / 16], even + h);
            const __m512 c = odd ? _mm512_maskz_loadu_ps(mh[h / 16], even + ldb_ + h) : _mm512_setzero_ps();
            _mm512_store_si512(panel + t * NR + h, interleave_pairs(a, c));
          }
        }
      }
    }
  }

 private:
  const float* b_;
  int64_t ldb_;
  bool trans_;
};

}  // namespace

bool bf16_available() {
  static const bool ok = [] {
    const char* off = std::getenv("QLORA_NO_BF16");
    if (off != nullptr && off[0] != '\0' && off[0] != '0') return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return ok;
}

void sgemm_bf16(const GemmArgs& g, const PanelSourceBf16& b) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K == 0) {
    for (int64_t i = 0; i < g.M; i++) {
      float* row = g.c + i * g.ldc;
      for (int64_t j = 0; j < g.N; j++) row[j] = g.beta == 0.0f ? 0.0f : g.beta * row[j];
    }
    return;
  }
  const double flops = 2.0 * static_cast<double>(g.M) * g.N * g.K;
  const int threads = num_threads();
  if (threads == 1 || flops < PARALLEL_FLOPS_BF16) {
    DenormalGuard guard;
    gemm_serial_bf16(g, b, 0, g.M, 0, g.N);
    return;
  }
  const int64_t tilesM = (g.M + MR - 1) / MR, tilesN = (g.N + NR - 1) / NR;
  if (tilesN * NR >= tilesM * MR) {
    parallel_for(tilesN, [&](int64_t t0, int64_t t1, int) {
      gemm_serial_bf16(g, b, 0, g.M, t0 * NR, std::min(t1 * NR, g.N));
    });
  } else {
    parallel_for(tilesM, [&](int64_t t0, int64_t t1, int) {
      gemm_serial_bf16(g, b, t0 * MR, std::min(t1 * MR, g.M), 0, g.N);
    });
  }
}

namespace {

// sgemmBf16(a, b, out, M, N, K, transB, alpha, beta): out = alpha·bf16(a)·bf16(op(b)) + beta·out with
// fp32 accumulation, a M×K and b K×N (N×K with transB), all row-major. For frozen dense base
// weights on a backend computing in bf16 (the caller checks bf16Available first).
Napi::Value SgemmBf16Export(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require(bf16_available(), env, "sgemmBf16: bf16 compute needs a CPU with AVX512_BF16");
  const int64_t M = intArg(info, 3, "M"), N = intArg(info, 4, "N"), K = intArg(info, 5, "K");
  const bool transB = boolArg(info, 6);
  const float alpha = static_cast<float>(numArg(info, 7, "alpha"));
  const float beta = static_cast<float>(numArg(info, 8, "beta"));
  Span<float> a = f32Arg(info, 0, "a", static_cast<size_t>(M * K));
  Span<float> b = f32Arg(info, 1, "b", static_cast<size_t>(K * N));
  Span<float> c = f32Arg(info, 2, "out", static_cast<size_t>(M * N));
  GemmArgs g{M, N, K, a.data, K, false, c.data, N, alpha, beta};
  sgemm_bf16(g, DensePanelsBf16(b.data, transB ? K : N, transB));
  return env.Undefined();
}

QLORA_EXPORT("sgemmBf16", SgemmBf16Export);

}  // namespace

#else  // no bf16 kernels in this build

bool bf16_available() { return false; }

void sgemm_bf16(const GemmArgs&, const PanelSourceBf16&) { std::abort(); }

#endif

}  // namespace gemm
}  // namespace qlora
