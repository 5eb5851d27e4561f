/**
 * Splitting a GEMM into dispatches whose bindings fit the adapter: no binding may exceed
 * maxStorageBufferBindingSize (128 MiB by default, ~2 GiB at most), yet a Llama lm_head is 500 MiB
 * in f32. Windows cut along the dimension that makes the offending operand smaller — batches
 * first, then rows of A/C (M), rows of a transposed B or columns of C (N), or the shared K (later K
 * windows accumulate with beta = 1) — and each window is one dispatch over sub-ranges of the same
 * tensors, with the full leading dimensions as strides.
 */
import { TILES, type TileName } from './gemm.js';

export interface GemmShape {
  readonly batch: number;
  readonly M: number;
  readonly N: number;
  readonly K: number;
  readonly transA: boolean;
  readonly transB: boolean;
  /** Leading dimensions and batch strides in elements (sB 0: B shared by every batch). */
  readonly lda: number;
  readonly ldb: number;
  readonly ldc: number;
  readonly sA: number;
  readonly sB: number;
  readonly sC: number;
  /** B is a packed 4-bit weight with rows of `cols` codes; op(B) = Wᵀ (transB) or W. */
  readonly q4cols?: number;
  /** B is a weight in a GGUF's blocks with rows of this many bytes; op(B) = Wᵀ (transB) or W. */
  readonly ggmlRowBytes?: number;
}

/** One dispatch: batches [b0, b1), rows [m0, m1), columns [n0, n1), inner [k0, k1). */
export interface GemmWindow {
  readonly b0: number;
  readonly b1: number;
  readonly m0: number;
  readonly m1: number;
  readonly n0: number;
  readonly n1: number;
  readonly k0: number;
  readonly k1: number;
  /** Whether this window continues an earlier K window of the same output (accumulate: beta 1). */
  readonly accumulate: boolean;
}

export interface WindowLimits {
  /** The largest binding in bytes. */
  readonly maxBinding: number;
  /** Binding offsets are rounded down to this; a window can need up to this much more. */
  readonly bindAlign: number;
  readonly maxWorkgroups: number;
}

/** Bytes of a window of each operand ([bc batches, mc × nc × kc]). */
function windowBytes(
  s: GemmShape,
  bc: number,
  mc: number,
  nc: number,
  kc: number,
): { a: number; b: number; c: number } {
  const span = (rows: number, ld: number, cols: number) =>
    rows > 0 && cols > 0 ? (rows - 1) * ld + cols : 0;
  const a = (bc - 1) * s.sA + (s.transA ? span(kc, s.lda, mc) : span(mc, s.lda, kc));
  const c = (bc - 1) * s.sC + span(mc, s.ldc, nc);
  let bBytes: number;
  if (s.q4cols !== undefined) {
    const rows = s.transB ? nc : kc;
    bBytes = Math.ceil((rows * s.q4cols) / 2) + 1;
  } else if (s.ggmlRowBytes !== undefined) {
    // Whole rows are bound however many columns a window takes.
    bBytes = (s.transB ? nc : kc) * s.ggmlRowBytes;
  } else {
    bBytes = 4 * ((bc - 1) * s.sB + (s.transB ? span(nc, s.ldb, kc) : span(kc, s.ldb, nc)));
  }
  return { a: 4 * a, b: bBytes, c: 4 * c };
}

const half = (n: number) => Math.max(1, Math.ceil(n / 2));

/** The windows covering the product (one when everything fits). Throws when nothing can fit. */
export function planWindows(s: GemmShape, tile: TileName, limits: WindowLimits): GemmWindow[] {
  const { BM, BN } = TILES[tile];
  let bc = s.batch;
  let mc = s.M;
  let nc = s.N;
  let kc = s.K;
  const cap = limits.maxBinding - limits.bindAlign;
  for (;;) {
    const w = windowBytes(s, bc, mc, nc, kc);
    // Which sizes to halve, in order of preference, for the first operand that does not fit.
    let order: ('b' | 'm' | 'n' | 'k')[];
    let what: string;
    if (w.a > cap) {
      what = `A (${w.a} bytes)`;
      order = s.transA ? ['b', 'k', 'm'] : ['b', 'm', 'k'];
    } else if (w.b > cap) {
      what = `B (${w.b} bytes)`;
      const batched = s.sB > 0 || s.q4cols !== undefined || s.ggmlRowBytes !== undefined;
      order = [
        ...(batched ? ['b' as const] : []),
        ...(s.transB ? (['n', 'k'] as const) : (['k', 'n'] as const)),
      ];
    } else if (w.c > cap) {
      what = `C (${w.c} bytes)`;
      order = ['b', 'm', 'n'];
    } else break;
    const sizes = { b: bc, m: mc, n: nc, k: kc };
    const pick = order.find((d) => sizes[d] > 1);
    if (!pick) throw new Error(`no window of ${what} fits a ${limits.maxBinding}-byte binding`);
    if (pick === 'b') bc = half(bc);
    else if (pick === 'm') mc = half(mc);
    else if (pick === 'n') nc = half(nc);
    else kc = half(kc);
  }
  // Workgroup grid limits (x: column tiles, y: row tiles; z loops over batches in the kernel).
  mc = Math.min(mc, limits.maxWorkgroups * BM);
  nc = Math.min(nc, limits.maxWorkgroups * BN);
  // Whole tiles per window where windows are big enough (no ragged tiles in the middle).
  if (mc < s.M && mc > BM) mc -= mc % BM;
  if (nc < s.N && nc > BN) nc -= nc % BN;
  const out: GemmWindow[] = [];
  for (let b0 = 0; b0 < s.batch; b0 += bc) {
    for (let m0 = 0; m0 < s.M; m0 += mc) {
      for (let n0 = 0; n0 < s.N; n0 += nc) {
        // K = 0 still writes C (alpha·0 + beta·C): one empty K window.
        for (let k0 = 0; k0 < Math.max(s.K, 1); k0 += Math.max(kc, 1)) {
          out.push({
            b0,
            b1: Math.min(s.batch, b0 + bc),
            m0,
            m1: Math.min(s.M, m0 + mc),
            n0,
            n1: Math.min(s.N, n0 + nc),
            k0,
            k1: Math.min(s.K, k0 + kc),
            accumulate: k0 > 0,
          });
        }
      }
    }
  }
  return out;
}
