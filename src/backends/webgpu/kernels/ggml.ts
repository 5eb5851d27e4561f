/**
 * Frozen weights in a GGUF's own blocks on the GPU (capabilities.ts GgmlBackend, `--quant keep`):
 * the blocks stay on the device exactly as the file stores them and are decoded where they are
 * used — inside the tiled GEMM's B-tile staging for the two products (gemm.ts with a 'ggml' B
 * source; never the whole matrix), element by element for dequantizeGgml. With computeDtype 'f16'
 * the products stage f16 tiles and accumulate in f32, as the 4-bit ones do. Weights larger than one
 * binding run in windows of whole rows.
 */
import { GGML_QUANT_TYPES, type GgmlWeight } from '../../../quant/ggml-blocks.js';
import { shapeString } from '../../../tensor/dtype.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { GpuContext, GpuSpan, KernelSpec } from '../context.js';
import { ggmlDims, matrixRows } from '../../shape-checks.js';
import { checks, ctxOf, expectShape, f32, fail, noAlias, u8 } from '../checks.js';
import { strideGroups } from '../grid.js';
import { spanOf } from '../memory.js';
import type { GemmShape } from './gemm-plan.js';
import { gemmSpec } from './gemm.js';
import { GGML_BINDINGS, GGML_DECODE_WGSL, GGML_PARAMS } from './ggml-decode.js';
import {
  chooseTile,
  computeF16,
  gemmParams,
  plan,
  subSpan,
  windowGroups,
  windowLimits,
  windowRange,
} from './matmul.js';

/** A checked weight: its dims, bytes per row and the blocks' span. */
interface Weight {
  readonly w: GgmlWeight;
  readonly rows: number;
  readonly cols: number;
  readonly rowBytes: number;
  readonly blocks: GpuSpan;
}

function weight(op: string, w: GgmlWeight): Weight {
  const { rows, cols } = ggmlDims(checks, op, w);
  const blocks = u8(op, 'w.blocks', w.blocks);
  const g = GGML_QUANT_TYPES[w.type];
  const rowBytes = (cols / g.blockElems) * g.blockBytes;
  // Byte offsets inside a binding are u32 on the device.
  if (rows * rowBytes >= 2 ** 32) fail(op, `weight [${rows}, ${cols}] has 4 GiB or more of blocks`);
  return { w, rows, cols, rowBytes, blocks };
}

/** The bytes of W rows [r0, r1). */
function rowSpan(W: Weight, r0: number, r1: number): GpuSpan {
  return subSpan(W.blocks, r0 * W.rowBytes, (r1 - r0) * W.rowBytes, 1);
}

/** The trailing GGML_PARAMS: block type, row bytes, first column. */
function ggmlParams(W: Weight, col0: number): number[] {
  return [GGML_QUANT_TYPES[W.w.type].id, W.rowBytes, col0];
}

/**
 * C = A·Wᵀ (transB: matmulGgml) or A·W (inputGrad) + beta·C, in windows of whole W rows when the
 * blocks exceed one binding.
 */
function gemmGgml(
  op: string,
  a: Tensor,
  W: Weight,
  c: Tensor,
  beta: number,
  transB: boolean,
  what: string,
): void {
  const n = a.shape[0]!;
  const [N, K] = transB ? [W.rows, W.cols] : [W.cols, W.rows];
  if (n === 0 || N === 0) return;
  const ctx = ctxOf(c);
  const shape: GemmShape = {
    batch: 1,
    M: n,
    N,
    K,
    transA: false,
    transB,
    lda: K,
    ldb: 0,
    ldc: N,
    sA: 0,
    sB: 0,
    sC: 0,
    ggmlRowBytes: W.rowBytes,
  };
  const tile = chooseTile(1, n, N);
  const spec = gemmSpec({
    transA: false,
    transB,
    tile,
    b: { kind: 'ggml' },
    f16: computeF16(c),
  });
  const as = spanOf(a);
  const cs = spanOf(c);
  for (const win of plan(op, shape, tile, ctx, what)) {
    // W rows are op(B)'s columns (transB) or its k; the other window range is W's columns.
    const [r0, r1, col0] = transB ? [win.n0, win.n1, win.k0] : [win.k0, win.k1, win.n0];
    const [aStart, aLen] = windowRange(0, 1, 0, win.m0, win.m1, K, win.k0, win.k1);
    const [cStart, cLen] = windowRange(0, 1, 0, win.m0, win.m1, N, win.n0, win.n1);
    ctx.dispatch(
      spec,
      [subSpan(as, aStart, aLen), rowSpan(W, r0, r1), subSpan(cs, cStart, cLen)],
      [...gemmParams(win, shape, win.accumulate ? 1 : beta), ...ggmlParams(W, col0)],
      windowGroups(ctx, tile, win),
    );
  }
}

/** out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out. */
export function matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor, beta = 0): void {
  const op = 'matmulGgml';
  const W = weight(op, w);
  f32(op, 'x', x);
  f32(op, 'out', out);
  if (!Number.isFinite(beta)) fail(op, `beta must be a finite number, got ${beta}`);
  const n = matrixRows(checks, op, 'x', x, W.cols);
  expectShape(op, 'out', out, [n, W.rows]);
  noAlias(op, 'x and out', x, out);
  const what = `x ${shapeString(x.shape)}, ${GGML_QUANT_TYPES[w.type].name} w [${W.rows}, ${W.cols}]`;
  gemmGgml(op, x, W, out, beta, true, what);
}

/** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx. */
export function matmulGgmlInputGrad(dy: Tensor, w: GgmlWeight, dx: Tensor, beta = 0): void {
  const op = 'matmulGgmlInputGrad';
  const W = weight(op, w);
  f32(op, 'dy', dy);
  f32(op, 'dx', dx);
  if (!Number.isFinite(beta)) fail(op, `beta must be a finite number, got ${beta}`);
  const n = matrixRows(checks, op, 'dy', dy, W.rows);
  expectShape(op, 'dx', dx, [n, W.cols]);
  noAlias(op, 'dy and dx', dy, dx);
  const what = `dy ${shapeString(dy.shape)}, ${GGML_QUANT_TYPES[w.type].name} w [${W.rows}, ${W.cols}]`;
  gemmGgml(op, dy, W, dx, beta, false, what);
}

const WG = 256;
/** out[i] = element (i / cols, i % cols) of the window's rows, for i < n (every block type). */
const DEQUANT: KernelSpec = {
  key: 'dequant_ggml',
  bindings: [...GGML_BINDINGS, { name: 'out', type: 'f32', write: true }],
  params: [{ name: 'n', type: 'u32' }, { name: 'cols', type: 'u32' }, ...GGML_PARAMS],
  source: `const WG = ${WG}u;
${GGML_DECODE_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < P.n; i += nwg.x * WG) {
    out[P.off_out + i] = ggmlAt(i / P.cols, P.wCol0 + i % P.cols);
  }
}`,
};

/** Rows per dequantize window: its blocks and its f32 output must each fit one binding. */
function dequantRows(ctx: GpuContext, W: Weight): number {
  const cap = windowLimits(ctx).maxBinding - ctx.bindAlign;
  const perRow = Math.max(W.rowBytes, 4 * W.cols);
  return Math.max(1, Math.min(W.rows, Math.floor(cap / perRow)));
}

/** out[rows, cols] = dequant(w), ggml's values. */
export function dequantizeGgml(w: GgmlWeight, out: Tensor): void {
  const op = 'dequantizeGgml';
  const W = weight(op, w);
  const os = f32(op, 'out', out);
  expectShape(op, 'out', out, [W.rows, W.cols]);
  const ctx = ctxOf(out);
  const step = dequantRows(ctx, W);
  for (let r0 = 0; r0 < W.rows; r0 += step) {
    const r1 = Math.min(W.rows, r0 + step);
    const n = (r1 - r0) * W.cols;
    ctx.dispatch(
      DEQUANT,
      [rowSpan(W, r0, r1), subSpan(os, r0 * W.cols, n)],
      [n, W.cols, ...ggmlParams(W, 0)],
      [strideGroups(ctx, n, WG)],
    );
  }
}
