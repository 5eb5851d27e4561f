/**
 * matmul on the GPU: the tiled GEMM of gemm.ts, one pipeline per transpose pair and tile shape,
 * split into binding-sized windows by gemm-plan.ts when an operand exceeds one binding.
 */
import type { MatmulOptions } from '../../../tensor/backend.js';
import { shapeString } from '../../../tensor/dtype.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { GpuContext, GpuSpan } from '../context.js';
import { matmulDims } from '../../shape-checks.js';
import { checks, ctxOf, expectFinite, f32, fail, noAlias } from '../checks.js';
import { GEMM_PARAMS, type GemmVariant, TILES, type TileName, gemmSpec } from './gemm.js';
import { type GemmShape, type GemmWindow, planWindows } from './gemm-plan.js';

/**
 * Internal knobs for tests and benchmarks: force a tile shape, or pretend bindings are smaller than
 * the adapter's (to exercise the windowed path without allocating hundreds of MiB).
 */
export const gemmTuning: { tile: TileName | null; maxBindingBytes: number | null } = {
  tile: null,
  maxBindingBytes: null,
};

/** 128×128 tiles once there are enough of them to fill a big GPU; 64×64 below that. */
const LARGE_TILE_MIN_TILES = 256;

export function chooseTile(batch: number, M: number, N: number): TileName {
  if (gemmTuning.tile) return gemmTuning.tile;
  const { BM, BN } = TILES.large;
  return batch * Math.ceil(M / BM) * Math.ceil(N / BN) >= LARGE_TILE_MIN_TILES ? 'large' : 'small';
}

export function windowLimits(ctx: GpuContext): {
  maxBinding: number;
  bindAlign: number;
  maxWorkgroups: number;
} {
  return {
    maxBinding: Math.min(ctx.maxBinding, gemmTuning.maxBindingBytes ?? Infinity),
    bindAlign: ctx.bindAlign,
    maxWorkgroups: ctx.maxWorkgroups,
  };
}

/** A sub-range of a span: `elements` f32 elements from element `start`. */
export function subSpan(s: GpuSpan, start: number, elements: number, bytesPer = 4): GpuSpan {
  return {
    buffer: s.buffer,
    byteOffset: s.byteOffset + start * bytesPer,
    byteLength: Math.max(0, elements) * bytesPer,
  };
}

/** Element range [start, start + length) a window of a row-major operand touches. */
export function windowRange(
  b0: number,
  b1: number,
  stride: number,
  r0: number,
  r1: number,
  ld: number,
  c0: number,
  c1: number,
): [number, number] {
  const start = b0 * stride + r0 * ld + c0;
  if (b1 <= b0 || r1 <= r0 || c1 <= c0) return [start, 0];
  return [start, (b1 - b0 - 1) * stride + (r1 - r0 - 1) * ld + (c1 - c0)];
}

/** The dispatch grid of a window: column tiles, row tiles, batches (z loops in the kernel). */
export function windowGroups(
  ctx: GpuContext,
  tile: TileName,
  w: GemmWindow,
): [number, number, number] {
  const { BM, BN } = TILES[tile];
  return [
    Math.ceil((w.n1 - w.n0) / BN),
    Math.ceil((w.m1 - w.m0) / BM),
    Math.min(w.b1 - w.b0, ctx.maxWorkgroups),
  ];
}

/** The windows of a product, or the op's error naming the shapes when no window fits. */
export function plan(
  op: string,
  shape: GemmShape,
  tile: TileName,
  ctx: GpuContext,
  what: string,
): GemmWindow[] {
  try {
    return planWindows(shape, tile, windowLimits(ctx));
  } catch (err) {
    return fail(op, `${(err as Error).message}: ${what}`);
  }
}

/** GEMM_PARAMS of a window of a fused frozen-weight product (2-D, alpha 1; 4-bit and GGUF blocks). */
export function gemmParams(win: GemmWindow, s: GemmShape, beta: number): number[] {
  const p = [
    win.m1 - win.m0,
    win.n1 - win.n0,
    win.k1 - win.k0,
    s.lda,
    s.ldb,
    s.ldc,
    s.sA,
    s.sB,
    s.sC,
    win.b1 - win.b0,
    1,
    beta,
  ];
  if (p.length !== GEMM_PARAMS.length) throw new Error('gemm parameter list out of date');
  return p;
}

/** Whether the backend computes frozen-base matmuls in f16 (WebGpuBackend's computeDtype). */
export function computeF16(t: Tensor): boolean {
  return (t.backend as unknown as { computeDtype?: string }).computeDtype === 'f16';
}

/** out[..., M, N] = alpha·op(a)·op(b) + beta·out (contract: Backend.matmul). */
export function matmul(a: Tensor, b: Tensor, out: Tensor, options: MatmulOptions = {}): void {
  const op = 'matmul';
  const { transA = false, transB = false, alpha = 1, beta = 0 } = options;
  const as = f32(op, 'a', a);
  const bs = f32(op, 'b', b);
  const cs = f32(op, 'out', out);
  expectFinite(op, 'alpha', alpha);
  expectFinite(op, 'beta', beta);
  noAlias(op, 'a and out', a, out);
  noAlias(op, 'b and out', b, out);
  const { M, K, N, batches, bBatched } = matmulDims(checks, op, a, b, out, transA, transB);
  let batch = batches;
  let rows = M;
  // A shared 2-D b with an untransposed a is one tall product: fold the batch into M.
  if (!bBatched && !transA && batch > 1) {
    rows = batch * M;
    batch = 1;
  }
  if (batch === 0 || rows === 0 || N === 0) return;
  const shape: GemmShape = {
    batch,
    M: rows,
    N,
    K,
    transA,
    transB,
    lda: transA ? M : K,
    ldb: transB ? K : N,
    ldc: N,
    sA: M * K,
    sB: bBatched ? K * N : 0,
    sC: M * N,
  };
  const ctx = ctxOf(out);
  const tile = chooseTile(batch, rows, N);
  const spec = gemmSpec({
    transA,
    transB,
    tile,
    b: { kind: 'f32' },
    f16: false,
  } satisfies GemmVariant);
  const shapes = `a ${shapeString(a.shape)}${transA ? 'ᵀ' : ''}, b ${shapeString(b.shape)}${transB ? 'ᵀ' : ''}, out ${shapeString(out.shape)}`;
  for (const w of plan(op, shape, tile, ctx, shapes)) {
    const [aStart, aLen] = transA
      ? windowRange(w.b0, w.b1, shape.sA, w.k0, w.k1, shape.lda, w.m0, w.m1)
      : windowRange(w.b0, w.b1, shape.sA, w.m0, w.m1, shape.lda, w.k0, w.k1);
    const [bStart, bLen] = transB
      ? windowRange(w.b0, w.b1, shape.sB, w.n0, w.n1, shape.ldb, w.k0, w.k1)
      : windowRange(w.b0, w.b1, shape.sB, w.k0, w.k1, shape.ldb, w.n0, w.n1);
    const [cStart, cLen] = windowRange(w.b0, w.b1, shape.sC, w.m0, w.m1, shape.ldc, w.n0, w.n1);
    ctx.dispatch(
      spec,
      [subSpan(as, aStart, aLen), subSpan(bs, bStart, bLen), subSpan(cs, cStart, cLen)],
      [
        w.m1 - w.m0,
        w.n1 - w.n0,
        w.k1 - w.k0,
        shape.lda,
        shape.ldb,
        shape.ldc,
        shape.sA,
        shape.sB,
        shape.sC,
        w.b1 - w.b0,
        alpha,
        w.accumulate ? 1 : beta,
      ],
      windowGroups(ctx, tile, w),
    );
  }
}
