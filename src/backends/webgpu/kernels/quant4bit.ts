/**
 * 4-bit (NF4/FP4) kernels on the GPU. The weight stays packed on the device — codes as u32 words,
 * 8-bit absmax codes with their nested f32 absmax and code table — and is decoded where it is
 * used: inside the tiled GEMM's B-tile staging for the matmuls (never the whole weight), element
 * by element for dequantize4bit and embedding4bit. With computeDtype 'f16' the matmuls stage f16
 * tiles (see gemm.ts). Weights larger than one binding run in windows of whole rows.
 */
import type { Packed4bitWeight } from '../../../tensor/backend.js';
import { shapeString } from '../../../tensor/dtype.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { FAULT_WGSL, type GpuContext, type GpuSpan, type KernelSpec } from '../context.js';
import { matrixRows, packed4bitDims } from '../../shape-checks.js';
import { checks, ctxOf, expectShape, f32, fail, i32, noAlias, u8 } from '../checks.js';
import { strideGroups } from '../grid.js';
import { spanOf } from '../memory.js';
import { type GemmShape } from './gemm-plan.js';
import { ABSMAX_WGSL, NIBBLE_WGSL, Q4_BINDINGS, Q4_PARAMS, gemmSpec } from './gemm.js';
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

/** A checked weight: its spans and the parameters the kernels take. */
interface Weight {
  readonly rows: number;
  readonly cols: number;
  readonly blocksize: number;
  readonly packed: GpuSpan;
  /** code table, absmax, nested absmax and nested code table (placeholders without double quant). */
  readonly tables: readonly GpuSpan[];
  readonly nested: { readonly blocksize: number; readonly offset: number } | null;
}

/** Validates a Packed4bitWeight (the shared size rules, then dtypes) and returns its device spans. */
function weight(op: string, w: Packed4bitWeight, ctx: GpuContext): Weight {
  const { rows, cols, blocksize, nested } = packed4bitDims(checks, op, w);
  // Flat element indices are u32 on the device.
  if (rows * cols >= 2 ** 32) fail(op, `weight [${rows}, ${cols}] has 2^32 or more elements`);
  const packed = u8(op, 'w.packed', w.packed);
  const code = f32(op, 'w.code', w.code);
  if (!nested || !w.nested) {
    const absmax = f32(op, 'w.absmax', w.absmax);
    const none = placeholder(ctx);
    return { rows, cols, blocksize, packed, tables: [code, absmax, none, none], nested: null };
  }
  const q = u8(op, 'w.absmax (double-quantized)', w.absmax);
  const nabs = f32(op, 'w.nested.absmax', w.nested.absmax);
  const ncode = f32(op, 'w.nested.code', w.nested.code);
  return { rows, cols, blocksize, packed, tables: [code, q, nabs, ncode], nested };
}

const placeholders = new WeakMap<GpuContext, GpuSpan>();

/** A small buffer bound where a weight without double quantization has no nested tables (never read). */
function placeholder(ctx: GpuContext): GpuSpan {
  let span = placeholders.get(ctx);
  if (!span) {
    span = { buffer: ctx.createBuffer(16, 'no nested absmax'), byteOffset: 0, byteLength: 16 };
    placeholders.set(ctx, span);
  }
  return span;
}

/** The packed bytes holding W rows [r0, r1) (a half byte at either end belongs to the neighbour row). */
function packedRows(w: Weight, r0: number, r1: number): { span: GpuSpan; byte0: number } {
  const byte0 = Math.floor((r0 * w.cols) / 2);
  const end = Math.ceil((r1 * w.cols) / 2);
  return { span: subSpan(w.packed, byte0, end - byte0, 1), byte0 };
}

/** The trailing 4-bit parameters (Q4_PARAMS) for a window starting at W row r0. */
function q4Params(w: Weight, r0: number, byte0: number): number[] {
  return [
    w.cols,
    r0,
    byte0,
    w.blocksize,
    w.nested ? 1 : 0,
    w.nested?.blocksize ?? 1,
    w.nested?.offset ?? 0,
  ];
}

/**
 * The fused product with B = Wᵀ (transB, matmul4bit: out = x·Wᵀ) or B = W (inputGrad: dx = dy·W),
 * C = op(A)·B + beta·C, in windows of whole W rows when the packed codes exceed one binding.
 */
function gemm4bit(
  op: string,
  a: Tensor,
  w: Weight,
  c: Tensor,
  beta: number,
  transB: boolean,
  what: string,
): void {
  const n = a.shape[0]!;
  const [N, K] = transB ? [w.rows, w.cols] : [w.cols, w.rows];
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
    q4cols: w.cols,
  };
  const tile = chooseTile(1, n, N);
  // Whole u32 words of 8 codes per row segment: rows start on word boundaries and 8 codes share a block.
  const words = w.cols % 8 === 0 && w.blocksize % 8 === 0 && w.packed.byteOffset % 4 === 0;
  const spec = gemmSpec({
    transA: false,
    transB,
    tile,
    b: { kind: '4bit', words },
    f16: computeF16(c),
  });
  const as = spanOf(a);
  const cs = spanOf(c);
  for (const win of plan(op, shape, tile, ctx, what)) {
    const [r0, r1] = transB ? [win.n0, win.n1] : [win.k0, win.k1];
    const { span, byte0 } = packedRows(w, r0, r1);
    const [aStart, aLen] = windowRange(0, 1, 0, win.m0, win.m1, K, win.k0, win.k1);
    const [cStart, cLen] = windowRange(0, 1, 0, win.m0, win.m1, N, win.n0, win.n1);
    ctx.dispatch(
      spec,
      [subSpan(as, aStart, aLen), span, ...w.tables, subSpan(cs, cStart, cLen)],
      [...gemmParams(win, shape, win.accumulate ? 1 : beta), ...q4Params(w, r0, byte0)],
      windowGroups(ctx, tile, win),
    );
  }
}

/** out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out. */
export function matmul4bit(x: Tensor, w: Packed4bitWeight, out: Tensor, beta = 0): void {
  const op = 'matmul4bit';
  const W = weight(op, w, ctxOf(out));
  f32(op, 'x', x);
  f32(op, 'out', out);
  if (!Number.isFinite(beta)) fail(op, `beta must be a finite number, got ${beta}`);
  const n = matrixRows(checks, op, 'x', x, W.cols);
  expectShape(op, 'out', out, [n, W.rows]);
  noAlias(op, 'x and out', x, out);
  gemm4bit(op, x, W, out, beta, true, `x ${shapeString(x.shape)}, w [${W.rows}, ${W.cols}]`);
}

/** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx. */
export function matmul4bitInputGrad(dy: Tensor, w: Packed4bitWeight, dx: Tensor, beta = 0): void {
  const op = 'matmul4bitInputGrad';
  const W = weight(op, w, ctxOf(dx));
  f32(op, 'dy', dy);
  f32(op, 'dx', dx);
  if (!Number.isFinite(beta)) fail(op, `beta must be a finite number, got ${beta}`);
  const n = matrixRows(checks, op, 'dy', dy, W.rows);
  expectShape(op, 'dx', dx, [n, W.cols]);
  noAlias(op, 'dy and dx', dy, dx);
  gemm4bit(op, dy, W, dx, beta, false, `dy ${shapeString(dy.shape)}, w [${W.rows}, ${W.cols}]`);
}

const WG = 256;
const PARAMS = (extra: string[]): KernelSpec['params'] => [
  ...extra.map((name) => ({ name, type: 'u32' as const })),
  ...Q4_PARAMS,
];

/** out[i] = code[nibble(g0 + i)] · absmax((g0 + i) / blocksize) for i < n. */
const DEQUANT: KernelSpec = (() => {
  return {
    key: 'dequant4',
    bindings: [...Q4_BINDINGS, { name: 'out', type: 'f32', write: true }],
    params: PARAMS(['n', 'g0']),
    source: `const WG = ${WG}u;
${NIBBLE_WGSL}
${ABSMAX_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < P.n; i += nwg.x * WG) {
    let g = P.g0 + i;
    out[P.off_out + i] = qcode[P.off_qcode + nibble(g)] * absmaxOf(g / P.blocksize);
  }
}`,
  };
})();

/** out[i, c] = dequant(w)[ids[i], c] for ids in the window [r0, r1); ids outside [0, rows) fault. */
const EMBEDDING4: KernelSpec = (() => {
  return {
    key: 'embedding4',
    bindings: [
      { name: 'ids', type: 'i32', write: false },
      ...Q4_BINDINGS,
      { name: 'out', type: 'f32', write: true },
      { name: 'fault', type: 'atomic<u32>', write: true },
    ],
    params: PARAMS(['n', 'rows', 'r1', 'code']),
    source: `const WG = ${WG}u;
${FAULT_WGSL}
${NIBBLE_WGSL}
${ABSMAX_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let total = P.n * P.cols;
  for (var e = gid.x; e < total; e += nwg.x * WG) {
    let i = e / P.cols;
    let c = e % P.cols;
    let id = ids[P.off_ids + i];
    if (id < 0 || u32(id) >= P.rows) {
      if (c == 0u) { raise(P.code, id, i32(i)); }
      continue;
    }
    let r = u32(id);
    if (r < P.wRow0 || r >= P.r1) { continue; }
    let g = r * P.cols + c;
    out[P.off_out + e] = qcode[P.off_qcode + nibble(g)] * absmaxOf(g / P.blocksize);
  }
}`,
  };
})();

/** Rows per window so that the packed codes of a window fit one binding. */
function rowsPerWindow(ctx: GpuContext, w: Weight): number {
  const cap = windowLimits(ctx).maxBinding - ctx.bindAlign - 1;
  return Math.max(1, Math.min(w.rows, Math.floor((2 * cap) / Math.max(1, w.cols))));
}

/** out[rows, cols] = dequant(w). */
export function dequantize4bit(w: Packed4bitWeight, out: Tensor): void {
  const op = 'dequantize4bit';
  const os = f32(op, 'out', out);
  const ctx = ctxOf(out);
  const W = weight(op, w, ctx);
  expectShape(op, 'out', out, [W.rows, W.cols]);
  const spec = DEQUANT;
  // Windows of whole rows: both the codes and the f32 output of a window must fit a binding.
  const step = Math.max(1, Math.floor(rowsPerWindow(ctx, W) / 8));
  for (let r0 = 0; r0 < W.rows; r0 += step) {
    const r1 = Math.min(W.rows, r0 + step);
    const { span, byte0 } = packedRows(W, r0, r1);
    const n = (r1 - r0) * W.cols;
    ctx.dispatch(
      spec,
      [span, ...W.tables, subSpan(os, r0 * W.cols, n)],
      [n, r0 * W.cols, ...q4Params(W, r0, byte0)],
      [strideGroups(ctx, n, WG)],
    );
  }
}

/** out[n, cols] = rows ids[n] of dequant(w); ids out of range fault (thrown at the next read). */
export function embedding4bit(ids: Tensor, w: Packed4bitWeight, out: Tensor): void {
  const op = 'embedding4bit';
  const is = i32(op, 'ids', ids);
  const os = f32(op, 'out', out);
  const ctx = ctxOf(out);
  const W = weight(op, w, ctx);
  expectShape(op, 'out', out, [ids.size, W.cols]);
  const code = ctx.faultCode(`${op}: id {a} at position {b} is outside [0, ${W.rows})`);
  const spec = EMBEDDING4;
  const step = rowsPerWindow(ctx, W);
  const total = ids.size * W.cols;
  if (total === 0) return;
  for (let r0 = 0; r0 < Math.max(W.rows, 1); r0 += step) {
    const r1 = Math.min(W.rows, r0 + step);
    const { span, byte0 } = packedRows(W, r0, r1);
    ctx.dispatch(
      spec,
      [is, span, ...W.tables, os, ctx.faultSpan()],
      [ids.size, W.rows, r1, code, ...q4Params(W, r0, byte0)],
      [strideGroups(ctx, total, WG)],
    );
  }
}
