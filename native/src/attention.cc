// Causal grouped-query attention, flash style: queries and keys are processed in tiles of
// kBq × kBk with an online softmax (running max and sum per query), so no T×T matrix exists.
// The backward pass recomputes each tile's probabilities from q, k and the saved log-sum-exp.
// Tiles entirely above the causal diagonal, entirely before a sliding window (a query at position p
// sees keys p - window < j ≤ p: docs/attention.md) and, with segment ids, tiles whose query and key
// segment ranges are disjoint are skipped, so a windowed pass costs O(T·window), not O(T²).
// With a soft-cap (Gemma 2) each scaled score s becomes cap·tanh(s / cap) before masking.
//
// Parallelism is deterministic: the forward splits (batch, kv head, tile of (query, head) rows) units,
// each owning its output rows; the backward splits (batch, kv head) units, each owning dk/dv of its kv head
// and dq of the query heads that share it. Results do not depend on the thread count, except that
// the backward splits key tiles when there are fewer (batch, kv head) units than it can share evenly.
#include <algorithm>
#include <cmath>
#include <limits>

#include "args.h"
#include "registry.h"
#include "threads.h"
#include "vec.h"

namespace qlora {
namespace {

using namespace vec;

constexpr int kBq = 64;  // query rows per tile
constexpr int kBk = 64;  // keys per tile (a multiple of every W)
constexpr float kRescaleSlack = 8.0f;  // see forward_tile
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

static_assert(kBk % W == 0, "key tile must be whole vectors");

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Stops the compiler from folding a vector load into every FMA that uses it (which would
// turn 4 loads per k step into 16 and make the micro-kernel load-bound).
inline void keep_in_register(V& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+v"(v));
#else
  (void)v;
#endif
}

// ---- small GEMM micro-kernel ---------------------------------------------------------------
// C[M, NV·W] (+)= A(M×K) · B[K, NV·W] for M a multiple of 4, with A(m, k) = A[m·lda + k], or
// A[k·lda + m] when TransA (so Pᵀ·dO needs no explicit transpose). 4 rows × NV vectors of
// accumulators stay in registers across the whole K loop.
template <int NV, bool TransA>
void gemm_block(int M, int K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                bool accumulate) {
  for (int i = 0; i < M; i += 4) {
    V acc[4][NV];
    for (int r = 0; r < 4; r++) {
      for (int v = 0; v < NV; v++) acc[r][v] = accumulate ? load(C + (i + r) * ldc + v * W) : zero();
    }
    for (int k = 0; k < K; k++) {
      V b[NV];
      for (int v = 0; v < NV; v++) {
        b[v] = load(B + k * ldb + v * W);
        keep_in_register(b[v]);
      }
      for (int r = 0; r < 4; r++) {
        const V a = set1(TransA ? A[k * lda + i + r] : A[(i + r) * lda + k]);
        for (int v = 0; v < NV; v++) acc[r][v] = fmadd(a, b[v], acc[r][v]);
      }
    }
    for (int r = 0; r < 4; r++) {
      for (int v = 0; v < NV; v++) store(C + (i + r) * ldc + v * W, acc[r][v]);
    }
  }
}

// C[M, N] (+)= op(A) · B with N a multiple of W, in column panels of up to 4 vectors.
template <bool TransA>
void gemm(int M, int N, int K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
          bool accumulate) {
  int n0 = 0;
  for (; n0 + 4 * W <= N; n0 += 4 * W) gemm_block<4, TransA>(M, K, A, lda, B + n0, ldb, C + n0, ldc, accumulate);
  switch ((N - n0) / W) {
    case 3: gemm_block<3, TransA>(M, K, A, lda, B + n0, ldb, C + n0, ldc, accumulate); break;
    case 2: gemm_block<2, TransA>(M, K, A, lda, B + n0, ldb, C + n0, ldc, accumulate); break;
    case 1: gemm_block<1, TransA>(M, K, A, lda, B + n0, ldb, C + n0, ldc, accumulate); break;
    default: break;
  }
}

// ---- tile movement ---------------------------------------------------------------------------

// dst[rows → Mp, Dp] = scale · src rows (row stride ld, D columns); padding is zero.
void load_rows(const float* src, int64_t ld, int rows, int Mp, int D, int Dp, float scale, float* dst) {
  for (int r = 0; r < rows; r++) {
    const float* s = src + r * ld;
    float* d = dst + static_cast<int64_t>(r) * Dp;
    for (int c = 0; c < D; c++) d[c] = s[c] * scale;
    for (int c = D; c < Dp; c++) d[c] = 0.0f;
  }
  std::fill(dst + static_cast<int64_t>(rows) * Dp, dst + static_cast<int64_t>(Mp) * Dp, 0.0f);
}

// dst[D][kBk] = transpose of kn key rows (row stride ld); keys kn..kBk are zero.
void transpose_keys(const float* src, int64_t ld, int kn, int D, float* dst) {
#if defined(__AVX512F__)
  for (int j0 = 0; j0 < kBk; j0 += 16) {
    for (int c0 = 0; c0 < D; c0 += 16) {
      const int cw = std::min(16, D - c0);
      __m512 r[16];
      for (int j = 0; j < 16; j++) {
        const float* row = src + (j0 + j) * ld + c0;
        r[j] = j0 + j >= kn ? zero() : cw == 16 ? load(row) : load_n(row, cw);
      }
      transpose16x16(r);
      for (int c = 0; c < cw; c++) store(dst + static_cast<int64_t>(c0 + c) * kBk + j0, r[c]);
    }
  }
  return;
#endif
  for (int c = 0; c < D; c++) {
    float* d = dst + static_cast<int64_t>(c) * kBk;
    for (int j = 0; j < kn; j++) d[j] = src[j * ld + c];
    for (int j = kn; j < kBk; j++) d[j] = 0.0f;
  }
}

struct Dims {
  int64_t B, Tq, Tk, H, Hkv, D, Dp, G, offset;
  int64_t nTq, nTk;
  float scale;
  const int32_t* seg;  // [B, Tk] or null
  int64_t window;      // keys a query sees (its own included), or 0 for all earlier keys
  float softcap;       // 0: none
  // First key the query at position pos may see.
  int64_t first_key(int64_t pos) const { return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0; }
};

Dims make_dims(int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Hkv, int64_t D, double scale,
               const int32_t* seg, int64_t window, double softcap) {
  Dims d{};
  d.B = B;
  d.Tq = Tq;
  d.Tk = Tk;
  d.H = H;
  d.Hkv = Hkv;
  d.D = D;
  d.Dp = round_up(D, W);
  d.G = H / Hkv;
  d.offset = Tk - Tq;
  d.nTq = (Tq + kBq - 1) / kBq;
  d.nTk = (Tk + kBk - 1) / kBk;
  d.scale = static_cast<float>(scale);
  d.seg = seg;
  d.window = window;
  d.softcap = static_cast<float>(softcap);
  return d;
}

// Segment-id range [lo, hi] of positions [p0, p1) in batch b.
void seg_range(const Dims& d, int64_t b, int64_t p0, int64_t p1, int32_t* lo, int32_t* hi) {
  const int32_t* s = d.seg + b * d.Tk;
  int32_t a = s[p0], z = s[p0];
  for (int64_t p = p0 + 1; p < p1; p++) {
    a = std::min(a, s[p]);
    z = std::max(z, s[p]);
  }
  *lo = a;
  *hi = z;
}

// Sets the scores of keys a query may not see to -inf: keys past its position (and past the
// tile's kn valid keys), keys before its window, and keys of another segment.
void mask_row(const Dims& d, int64_t b, int64_t pos, int64_t j0, int kn, float* srow) {
  const int64_t visible = std::min<int64_t>(kn, pos - j0 + 1);
  for (int64_t j = std::max<int64_t>(visible, 0); j < kBk; j++) srow[j] = kNegInf;
  const int64_t from = std::clamp<int64_t>(d.first_key(pos) - j0, 0, std::max<int64_t>(visible, 0));
  for (int64_t j = 0; j < from; j++) srow[j] = kNegInf;
  if (d.seg != nullptr) {
    const int32_t* s = d.seg + b * d.Tk;
    const int32_t mine = s[pos];
    for (int64_t j = from; j < visible; j++) {
      if (s[j0 + j] != mine) srow[j] = kNegInf;
    }
  }
}

// Whether some query in positions [minPos, maxPos] cannot see some key of the tile at j0 (kn keys).
bool tile_needs_mask(const Dims& d, int64_t j0, int kn, int64_t minPos, int64_t maxPos) {
  return kn < kBk || j0 + kBk - 1 > minPos || d.seg != nullptr || d.first_key(maxPos) > j0;
}

float row_max(const float* s) {
  V m = load(s);
  for (int j = W; j < kBk; j += W) m = vec::max(m, load(s + j));
  return hmax(m);
}

void zero_rows(float* p, int64_t from, int64_t to, int64_t ld) {
  std::fill(p + from * ld, p + to * ld, 0.0f);
}

// ---- forward ---------------------------------------------------------------------------------

// K of every (batch, kv head) as transposed tiles [nTk][D][kBk], so score tiles are plain GEMMs.
void pack_keys(const Dims& d, const float* k, float* kt) {
  parallel_for(d.B * d.Hkv, [&](int64_t lo, int64_t hi, int) {
    for (int64_t u = lo; u < hi; u++) {
      const int64_t b = u / d.Hkv, hk = u % d.Hkv;
      for (int64_t t = 0; t < d.nTk; t++) {
        const int64_t j0 = t * kBk;
        const int kn = static_cast<int>(std::min<int64_t>(kBk, d.Tk - j0));
        transpose_keys(k + ((b * d.Tk + j0) * d.Hkv + hk) * d.D, d.Hkv * d.D, kn, static_cast<int>(d.D),
                       kt + ((u * d.nTk) + t) * d.D * kBk);
      }
    }
  });
}

// V rows padded to Dp columns (only needed when D is not a whole number of vectors).
void pack_values(const Dims& d, const float* v, float* vp) {
  parallel_for(d.B * d.Hkv, [&](int64_t lo, int64_t hi, int) {
    for (int64_t u = lo; u < hi; u++) {
      const int64_t b = u / d.Hkv, hk = u % d.Hkv;
      load_rows(v + (b * d.Tk * d.Hkv + hk) * d.D, d.Hkv * d.D, static_cast<int>(d.Tk), static_cast<int>(d.Tk),
                static_cast<int>(d.D), static_cast<int>(d.Dp), 1.0f, vp + u * d.Tk * d.Dp);
    }
  });
}

struct ForwardScratch {
  float* q;    // [kBq, Dp] scaled queries
  float* s;    // [kBq, kBk] scores, then probabilities
  float* o;    // [kBq, Dp] unnormalised output
  float* m;    // [kBq] running max
  float* l;    // [kBq] running sum
  static int64_t floats(const Dims& d) { return 2 * kBq * d.Dp + kBq * kBk + 2 * kBq; }
  ForwardScratch(float* base, const Dims& d)
      : q(base), s(q + kBq * d.Dp), o(s + kBq * kBk), m(o + kBq * d.Dp), l(m + kBq) {}
};

// The forward works on rows (query i, head g of the kv group), r = i·G + g: all rows of a tile
// share one kv head, so a decode step (one query) fills G rows of a tile instead of padding one.
struct RowTile {
  int64_t r0;   // first row
  int rows;     // valid rows
  int Mp;       // rows rounded up for the micro-kernel
  int64_t minPos, maxPos;  // absolute positions of the first and last query
};

RowTile row_tile(const Dims& d, int64_t rt) {
  RowTile t;
  t.r0 = rt * kBq;
  t.rows = static_cast<int>(std::min<int64_t>(kBq, d.Tq * d.G - t.r0));
  t.Mp = static_cast<int>(round_up(t.rows, 4));
  t.minPos = d.offset + t.r0 / d.G;
  t.maxPos = d.offset + (t.r0 + t.rows - 1) / d.G;
  return t;
}

// One (batch, kv head, row tile): stream key tiles through an online softmax.
void forward_tile(const Dims& d, int64_t b, int64_t hk, int64_t rt, const float* q, const float* kt,
                  const float* vbase, int64_t ldv, float* out, float* lse, ForwardScratch& sc) {
  const RowTile tile = row_tile(d, rt);
  const int rows = tile.rows, Mp = tile.Mp;
  const int Dp = static_cast<int>(d.Dp);
  for (int r = 0; r < rows; r++) {
    const int64_t i = (tile.r0 + r) / d.G, g = (tile.r0 + r) % d.G;
    load_rows(q + ((b * d.Tq + i) * d.H + hk * d.G + g) * d.D, 0, 1, 1, static_cast<int>(d.D), Dp, d.scale,
              sc.q + static_cast<int64_t>(r) * Dp);
    sc.m[r] = kNegInf;
    sc.l[r] = 0.0f;
  }
  zero_rows(sc.q, rows, Mp, Dp);
  zero_rows(sc.o, 0, Mp, Dp);
  int32_t qsLo = 0, qsHi = 0;
  if (d.seg != nullptr) seg_range(d, b, tile.minPos, tile.maxPos + 1, &qsLo, &qsHi);
  const int64_t lastTile = tile.maxPos / kBk;
  for (int64_t t = d.first_key(tile.minPos) / kBk; t <= lastTile; t++) {
    const int64_t j0 = t * kBk;
    const int kn = static_cast<int>(std::min<int64_t>(kBk, d.Tk - j0));
    if (d.seg != nullptr) {
      int32_t ksLo, ksHi;
      seg_range(d, b, j0, j0 + kn, &ksLo, &ksHi);
      if (ksHi < qsLo || ksLo > qsHi) continue;  // no query shares a segment with these keys
    }
    const bool needMask = tile_needs_mask(d, j0, kn, tile.minPos, tile.maxPos);
    gemm<false>(Mp, kBk, static_cast<int>(d.D), sc.q, Dp, kt + ((b * d.Hkv + hk) * d.nTk + t) * d.D * kBk, kBk, sc.s,
                kBk, false);
    for (int r = 0; r < rows; r++) {
      float* srow = sc.s + r * kBk;
      if (d.softcap > 0.0f) softcap_inplace(srow, kBk, d.softcap);
      if (needMask) mask_row(d, b, d.offset + (tile.r0 + r) / d.G, j0, kn, srow);
      // The reference max m only moves when a score exceeds it by kRescaleSlack: exp(s - m) stays
      // ≤ e^slack (no overflow) and the O/l rescale is skipped on most tiles. lse = m + log(l)
      // holds for any m.
      const float tileMax = row_max(srow);
      if (tileMax > sc.m[r] + kRescaleSlack) {  // also the first visible key (m = -inf)
        if (sc.m[r] != kNegInf) {
          const float alpha = std::exp(sc.m[r] - tileMax);
          sc.l[r] *= alpha;
          const V av = set1(alpha);
          float* orow = sc.o + static_cast<int64_t>(r) * Dp;
          for (int c = 0; c < Dp; c += W) store(orow + c, mul(load(orow + c), av));
        }
        sc.m[r] = tileMax;
      }
      if (sc.m[r] == kNegInf) {  // nothing visible yet in this row
        std::fill(srow, srow + kBk, 0.0f);
        continue;
      }
      const V mv = set1(sc.m[r]);
      V sum = zero();
      for (int j = 0; j < kBk; j += W) {
        const V p = vec::exp(sub(load(srow + j), mv));
        store(srow + j, p);
        sum = add(sum, p);
      }
      sc.l[r] += hsum(sum);
    }
    zero_rows(sc.s, rows, Mp, kBk);
    gemm<false>(Mp, Dp, kn, sc.s, kBk, vbase + j0 * ldv, ldv, sc.o, Dp, true);
  }
  for (int r = 0; r < rows; r++) {
    const int64_t i = (tile.r0 + r) / d.G, h = hk * d.G + (tile.r0 + r) % d.G;
    const float inv = 1.0f / sc.l[r];
    const float* orow = sc.o + static_cast<int64_t>(r) * Dp;
    float* dst = out + ((b * d.Tq + i) * d.H + h) * d.D;
    for (int64_t c = 0; c < d.D; c++) dst[c] = orow[c] * inv;
    lse[(b * d.H + h) * d.Tq + i] = sc.m[r] + std::log(sc.l[r]);
  }
}

// Row tiles of one kv head in the order 0, n-1, 1, n-2, ...: contiguous shares of the unit list
// then mix cheap (early) and expensive (late) causal tiles.
int64_t zigzag(int64_t z, int64_t n) { return (z % 2 == 0) ? z / 2 : n - 1 - z / 2; }

void check_common(Napi::Env env, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Hkv, int64_t D, bool seg,
                  double softcap) {
  require(H > 0 && Hkv > 0 && H % Hkv == 0, env, "attention: H must be a positive multiple of Hkv");
  require(softcap >= 0.0 && std::isfinite(softcap), env, "attention: softcap must be ≥ 0 and finite");
  require(D > 0, env, "attention: head dim must be positive");
  require(Tk >= Tq, env, "attention: Tk must be ≥ Tq");
  require(!seg || Tq == Tk, env, "attention: segment ids need Tq == Tk");
}

// attention(q, k, v, out, lse, seg|null, B, Tq, Tk, H, Hkv, D, scale, window (0: none), softcap (0: none))
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t B = intArg(info, 6, "B"), Tq = intArg(info, 7, "Tq"), Tk = intArg(info, 8, "Tk");
  const int64_t H = intArg(info, 9, "H"), Hkv = intArg(info, 10, "Hkv"), D = intArg(info, 11, "D");
  const double scale = numArg(info, 12, "scale");
  const int64_t window = intArg(info, 13, "window");
  const double softcap = numArg(info, 14, "softcap");
  const bool hasSeg = !isNullish(info, 5);
  check_common(env, B, Tq, Tk, H, Hkv, D, hasSeg, softcap);
  Span<float> q = f32Arg(info, 0, "q", B * Tq * H * D);
  Span<float> k = f32Arg(info, 1, "k", B * Tk * Hkv * D);
  Span<float> v = f32Arg(info, 2, "v", B * Tk * Hkv * D);
  Span<float> out = f32Arg(info, 3, "out", B * Tq * H * D);
  Span<float> lse = f32Arg(info, 4, "lse", B * H * Tq);
  const int32_t* seg = hasSeg ? i32Arg(info, 5, "segmentIds", B * Tk).data : nullptr;
  if (B * Tq == 0) return env.Undefined();
  const Dims d = make_dims(B, Tq, Tk, H, Hkv, D, scale, seg, window, softcap);

  Scratch kt(static_cast<size_t>(B * Hkv * d.nTk * D * kBk));
  pack_keys(d, k.data, kt.data());
  // V is read in place when its rows are whole vectors, else from a padded copy.
  Scratch vp(d.Dp == D ? 0 : static_cast<size_t>(B * Hkv * Tk * d.Dp));
  if (d.Dp != D) pack_values(d, v.data, vp.data());

  const int threads = num_threads();
  const int64_t perThread = round_up(ForwardScratch::floats(d), 16);
  Scratch scratch(static_cast<size_t>(threads * perThread));
  const int64_t rowTiles = (Tq * d.G + kBq - 1) / kBq;
  parallel_for(B * Hkv * rowTiles, [&](int64_t lo, int64_t hi, int t) {
    ForwardScratch sc(scratch.data() + t * perThread, d);
    for (int64_t u = lo; u < hi; u++) {
      const int64_t bk = u / rowTiles, b = bk / Hkv, hk = bk % Hkv;
      const int64_t rt = zigzag(u % rowTiles, rowTiles);
      const float* vbase;
      int64_t ldv;
      if (d.Dp == D) {
        vbase = v.data + (b * Tk * Hkv + hk) * D;
        ldv = Hkv * D;
      } else {
        vbase = vp.data() + (b * Hkv + hk) * Tk * d.Dp;
        ldv = d.Dp;
      }
      forward_tile(d, b, hk, rt, q.data, kt.data(), vbase, ldv, out.data, lse.data, sc);
    }
  });
  return env.Undefined();
}

// ---- backward --------------------------------------------------------------------------------

struct BackwardScratch {
  float* q;    // [kBq, Dp] scaled queries
  float* dout; // [kBq, Dp]
  float* p;    // [kBq, kBk] probabilities
  float* ds;   // [kBq, kBk] dP, then dS
  float* cg;   // [kBq, kBk] soft-cap derivative 1 - tanh²
  float* kp;   // [kBk, Dp] keys
  float* kt;   // [D, kBk] keys transposed
  float* vt;   // [D, kBk] values transposed
  float* dk;   // [kBk, Dp]
  float* dv;   // [kBk, Dp]
  float* dq;   // [G, nTq·kBq, Dp] accumulated over key tiles (when a unit owns all of them)
  float* di;   // [G, Tq] rowsum(dout ∘ out)
  static int64_t floats(const Dims& d) {
    return 2 * kBq * d.Dp + 3 * kBq * kBk + 3 * kBk * d.Dp + 2 * d.D * kBk + d.G * d.nTq * kBq * d.Dp + d.G * d.Tq;
  }
  BackwardScratch(float* base, const Dims& d)
      : q(base),
        dout(q + kBq * d.Dp),
        p(dout + kBq * d.Dp),
        ds(p + kBq * kBk),
        cg(ds + kBq * kBk),
        kp(cg + kBq * kBk),
        kt(kp + kBk * d.Dp),
        vt(kt + d.D * kBk),
        dk(vt + d.D * kBk),
        dv(dk + kBk * d.Dp),
        dq(dv + kBk * d.Dp),
        di(dq + d.G * d.nTq * kBq * d.Dp) {}
};

struct BackwardArgs {
  const float *dout, *q, *k, *v, *out, *lse;
  float *dq, *dk, *dv;
};

int64_t dq_floats(const Dims& d) { return d.G * d.nTq * kBq * d.Dp; }

// With S = scale·q·kᵀ, P = exp(S - lse), O = P·V:
//   dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP - rowsum(dO ∘ O)),  dQ = scale·dS·K,  dK = scale·dSᵀ·Q.
// With a soft-cap S = cap·tanh(S₀ / cap), dS₀ = dS ∘ (1 - tanh²(S₀ / cap)).
// The unit handles key tiles chunk, chunk + chunks, ... (interleaved, so chunks of a causal
// problem get similar work) and accumulates dS·K into dqAcc [G, nTq·kBq, Dp]. With a single chunk
// it also writes dq; otherwise the caller sums the chunks' dqAcc in chunk order.
void backward_unit(const Dims& d, int64_t b, int64_t hk, int64_t chunk, int64_t chunks, const BackwardArgs& a,
                   BackwardScratch& sc, float* dqAcc) {
  const int Dp = static_cast<int>(d.Dp), D = static_cast<int>(d.D);
  const int64_t ldq = d.H * d.D, ldk = d.Hkv * d.D;
  for (int64_t g = 0; g < d.G; g++) {
    const int64_t h = hk * d.G + g;
    for (int64_t i = 0; i < d.Tq; i++) {
      const int64_t off = ((b * d.Tq + i) * d.H + h) * d.D;
      sc.di[g * d.Tq + i] = dot(a.dout + off, a.out + off, static_cast<size_t>(d.D));
    }
  }
  std::fill(dqAcc, dqAcc + dq_floats(d), 0.0f);
  for (int64_t t = chunk; t < d.nTk; t += chunks) {
    const int64_t j0 = t * kBk;
    const int kn = static_cast<int>(std::min<int64_t>(kBk, d.Tk - j0));
    const float* kRows = a.k + ((b * d.Tk + j0) * d.Hkv + hk) * d.D;
    const float* vRows = a.v + ((b * d.Tk + j0) * d.Hkv + hk) * d.D;
    load_rows(kRows, ldk, kn, kBk, D, Dp, 1.0f, sc.kp);
    transpose_keys(kRows, ldk, kn, D, sc.kt);
    transpose_keys(vRows, ldk, kn, D, sc.vt);
    zero_rows(sc.dk, 0, kBk, Dp);
    zero_rows(sc.dv, 0, kBk, Dp);
    int32_t ksLo = 0, ksHi = 0;
    if (d.seg != nullptr) seg_range(d, b, j0, j0 + kn, &ksLo, &ksHi);
    // Queries at positions ≥ j0 see some key of this tile; with a window, only those at positions
    // < j0 + kn - 1 + window.
    const int64_t firstTile = std::max<int64_t>(0, j0 - d.offset) / kBq;
    const int64_t endTile =
        d.window > 0 ? std::min<int64_t>(d.nTq, (std::max<int64_t>(0, j0 + kn - 1 + d.window - d.offset) + kBq - 1) / kBq)
                     : d.nTq;
    for (int64_t g = 0; g < d.G; g++) {
      const int64_t h = hk * d.G + g;
      const float* lseRow = a.lse + (b * d.H + h) * d.Tq;
      for (int64_t qt = firstTile; qt < endTile; qt++) {
        const int64_t i0 = qt * kBq;
        const int rows = static_cast<int>(std::min<int64_t>(kBq, d.Tq - i0));
        const int Mp = static_cast<int>(round_up(rows, 4));
        const int64_t minPos = d.offset + i0;
        if (d.seg != nullptr) {
          int32_t qsLo, qsHi;
          seg_range(d, b, minPos, minPos + rows, &qsLo, &qsHi);
          if (ksHi < qsLo || ksLo > qsHi) continue;
        }
        const int64_t rowOff = ((b * d.Tq + i0) * d.H + h) * d.D;
        load_rows(a.q + rowOff, ldq, rows, Mp, D, Dp, d.scale, sc.q);
        load_rows(a.dout + rowOff, ldq, rows, Mp, D, Dp, 1.0f, sc.dout);
        gemm<false>(Mp, kBk, D, sc.q, Dp, sc.kt, kBk, sc.p, kBk, false);
        const bool needMask = tile_needs_mask(d, j0, kn, minPos, minPos + rows - 1);
        for (int r = 0; r < rows; r++) {
          float* prow = sc.p + r * kBk;
          if (d.softcap > 0.0f) {
            softcap_inplace(prow, kBk, d.softcap);
            const V inv = set1(1.0f / d.softcap), one = set1(1.0f);
            float* crow = sc.cg + r * kBk;
            for (int j = 0; j < kBk; j += W) {
              const V t = mul(load(prow + j), inv);
              store(crow + j, fnmadd(t, t, one));
            }
          }
          if (needMask) mask_row(d, b, minPos + r, j0, kn, prow);
          const V lv = set1(lseRow[i0 + r]);
          for (int j = 0; j < kBk; j += W) store(prow + j, vec::exp(sub(load(prow + j), lv)));
        }
        zero_rows(sc.p, rows, Mp, kBk);
        gemm<true>(kBk, Dp, Mp, sc.p, kBk, sc.dout, Dp, sc.dv, Dp, true);       // dV += Pᵀ·dO
        gemm<false>(Mp, kBk, D, sc.dout, Dp, sc.vt, kBk, sc.ds, kBk, false);   // dP = dO·Vᵀ
        for (int r = 0; r < Mp; r++) {
          float* prow = sc.p + r * kBk;
          float* drow = sc.ds + r * kBk;
          const V dv = set1(r < rows ? sc.di[g * d.Tq + i0 + r] : 0.0f);
          for (int j = 0; j < kBk; j += W) store(drow + j, mul(load(prow + j), sub(load(drow + j), dv)));
          if (d.softcap > 0.0f && r < rows) {
            const float* crow = sc.cg + r * kBk;
            for (int j = 0; j < kBk; j += W) store(drow + j, mul(load(drow + j), load(crow + j)));
          }
        }
        gemm<true>(kBk, Dp, Mp, sc.ds, kBk, sc.q, Dp, sc.dk, Dp, true);        // dK += dSᵀ·(scale·Q)
        gemm<false>(Mp, Dp, kn, sc.ds, kBk, sc.kp, Dp, dqAcc + (g * d.nTq * kBq + i0) * Dp, Dp, true);  // dQ += dS·K
      }
    }
    for (int j = 0; j < kn; j++) {
      float* dkRow = a.dk + ((b * d.Tk + j0 + j) * d.Hkv + hk) * d.D;
      float* dvRow = a.dv + ((b * d.Tk + j0 + j) * d.Hkv + hk) * d.D;
      std::copy(sc.dk + static_cast<int64_t>(j) * Dp, sc.dk + static_cast<int64_t>(j) * Dp + D, dkRow);
      std::copy(sc.dv + static_cast<int64_t>(j) * Dp, sc.dv + static_cast<int64_t>(j) * Dp + D, dvRow);
    }
  }
  if (chunks > 1) return;
  for (int64_t g = 0; g < d.G; g++) {
    const int64_t h = hk * d.G + g;
    for (int64_t i = 0; i < d.Tq; i++) {
      const float* src = dqAcc + (g * d.nTq * kBq + i) * Dp;
      float* dst = a.dq + ((b * d.Tq + i) * d.H + h) * d.D;
      for (int c = 0; c < D; c++) dst[c] = src[c] * d.scale;
    }
  }
}

// attentionBackward(dout, q, k, v, out, lse, dq, dk, dv, seg|null, B, Tq, Tk, H, Hkv, D, scale, window, softcap)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t B = intArg(info, 10, "B"), Tq = intArg(info, 11, "Tq"), Tk = intArg(info, 12, "Tk");
  const int64_t H = intArg(info, 13, "H"), Hkv = intArg(info, 14, "Hkv"), D = intArg(info, 15, "D");
  const double scale = numArg(info, 16, "scale");
  const int64_t window = intArg(info, 17, "window");
  const double softcap = numArg(info, 18, "softcap");
  const bool hasSeg = !isNullish(info, 9);
  check_common(env, B, Tq, Tk, H, Hkv, D, hasSeg, softcap);
  const int64_t nq = B * Tq * H * D, nk = B * Tk * Hkv * D;
  BackwardArgs a{};
  a.dout = f32Arg(info, 0, "dout", nq).data;
  a.q = f32Arg(info, 1, "q", nq).data;
  a.k = f32Arg(info, 2, "k", nk).data;
  a.v = f32Arg(info, 3, "v", nk).data;
  a.out = f32Arg(info, 4, "out", nq).data;
  a.lse = f32Arg(info, 5, "lse", B * H * Tq).data;
  a.dq = f32Arg(info, 6, "dq", nq).data;
  a.dk = f32Arg(info, 7, "dk", nk).data;
  a.dv = f32Arg(info, 8, "dv", nk).data;
  const int32_t* seg = hasSeg ? i32Arg(info, 9, "segmentIds", B * Tk).data : nullptr;
  if (B * Tk == 0) return env.Undefined();
  const Dims d = make_dims(B, Tq, Tk, H, Hkv, D, scale, seg, window, softcap);
  if (Tq == 0) {  // no queries: nothing flows back to the keys
    std::fill(a.dk, a.dk + nk, 0.0f);
    std::fill(a.dv, a.dv + nk, 0.0f);
    return env.Undefined();
  }
  const int threads = num_threads();
  const int64_t perThread = round_up(BackwardScratch::floats(d), 16);
  Scratch scratch(static_cast<size_t>(threads * perThread));
  const int64_t units = B * Hkv;
  // Each (batch, kv head) unit owns its dk/dv and dq rows. When there are too few units to share
  // evenly (say 1 or 3 on 2 threads), each unit's key tiles are split into `threads` interleaved
  // chunks with private dq accumulators, summed afterwards in chunk order.
  const int64_t chunks = (units % threads != 0 && units < 2 * threads) ? threads : 1;
  if (chunks == 1) {
    parallel_for(units, [&](int64_t lo, int64_t hi, int t) {
      BackwardScratch sc(scratch.data() + t * perThread, d);
      for (int64_t u = lo; u < hi; u++) backward_unit(d, u / Hkv, u % Hkv, 0, 1, a, sc, sc.dq);
    });
    return env.Undefined();
  }
  const int64_t dqSize = round_up(dq_floats(d), 16);
  Scratch partial(static_cast<size_t>(units * chunks * dqSize));
  parallel_for(units * chunks, [&](int64_t lo, int64_t hi, int t) {
    BackwardScratch sc(scratch.data() + t * perThread, d);
    for (int64_t u = lo; u < hi; u++) {
      const int64_t unit = u / chunks;
      backward_unit(d, unit / Hkv, unit % Hkv, u % chunks, chunks, a, sc, partial.data() + u * dqSize);
    }
  });
  // dq[b, i, h, :] = scale · Σ_chunks partial (fixed order).
  parallel_for(units * d.G * Tq, [&](int64_t lo, int64_t hi, int) {
    for (int64_t row = lo; row < hi; row++) {
      const int64_t unit = row / (d.G * Tq), g = (row / Tq) % d.G, i = row % Tq;
      const int64_t b = unit / Hkv, h = (unit % Hkv) * d.G + g;
      float* dst = a.dq + ((b * Tq + i) * H + h) * D;
      for (int64_t c = 0; c < D; c++) {
        float sum = 0.0f;
        for (int64_t k = 0; k < chunks; k++) sum += partial.data()[(unit * chunks + k) * dqSize + (g * d.nTq * kBq + i) * d.Dp + c];
        dst[c] = sum * d.scale;
      }
    }
  });
  return env.Undefined();
}

QLORA_EXPORT("attentionF32", Attention);
QLORA_EXPORT("attentionBackwardF32", AttentionBackward);

}  // namespace
}  // namespace qlora
