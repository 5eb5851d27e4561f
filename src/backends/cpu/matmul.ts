import type { MatmulOptions } from '../../tensor/backend.js';
import { shapeString } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import { kernel } from './native.js';

type SgemmKernel = (
  a: Float32Array,
  b: Float32Array,
  out: Float32Array,
  batch: number,
  M: number,
  N: number,
  K: number,
  transA: boolean,
  transB: boolean,
  alpha: number,
  beta: number,
  bBatched: boolean,
) => void;

const sgemm = kernel<SgemmKernel>('sgemm');

/** out[..., M, N] = alpha·op(a)·op(b) + beta·out (contract: Backend.matmul). */
export function matmul(a: Tensor, b: Tensor, out: Tensor, options: MatmulOptions = {}): void {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const alpha = options.alpha ?? 1;
  const beta = options.beta ?? 0;
  const p = matmulPlan(a.shape, b.shape, out.shape, transA, transB);
  const ad = f32(a, 'a');
  const bd = f32(b, 'b');
  const od = f32(out, 'out');
  assertNoOverlap(od, ad, 'a');
  assertNoOverlap(od, bd, 'b');
  // A shared 2-D b with an untransposed a is one tall GEMM: fold the batch into M (better blocking,
  // one thread dispatch).
  if (!p.bBatched && !transA && p.batch > 1) {
    sgemm(ad, bd, od, 1, p.batch * p.M, p.N, p.K, false, transB, alpha, beta, false);
  } else {
    sgemm(ad, bd, od, p.batch, p.M, p.N, p.K, transA, transB, alpha, beta, p.bBatched);
  }
}

export interface MatmulPlan {
  readonly batch: number;
  readonly M: number;
  readonly N: number;
  readonly K: number;
  readonly bBatched: boolean;
}

/** Checks the shapes of a matmul and returns its dimensions (throws a descriptive error). */
export function matmulPlan(
  aShape: readonly number[],
  bShape: readonly number[],
  outShape: readonly number[],
  transA: boolean,
  transB: boolean,
): MatmulPlan {
  const what =
    `matmul(a ${shapeString(aShape)}${transA ? 'ᵀ' : ''}, b ${shapeString(bShape)}${transB ? 'ᵀ' : ''}, ` +
    `out ${shapeString(outShape)})`;
  if (aShape.length < 2) throw new Error(`${what}: a must have rank ≥ 2`);
  if (bShape.length < 2) throw new Error(`${what}: b must have rank ≥ 2`);
  const ra = aShape.length;
  const rb = bShape.length;
  const M = transA ? aShape[ra - 1]! : aShape[ra - 2]!;
  const K = transA ? aShape[ra - 2]! : aShape[ra - 1]!;
  const Kb = transB ? bShape[rb - 1]! : bShape[rb - 2]!;
  const N = transB ? bShape[rb - 2]! : bShape[rb - 1]!;
  if (K !== Kb) throw new Error(`${what}: inner dimensions differ (${K} vs ${Kb})`);
  const batchDims = aShape.slice(0, ra - 2);
  const expectedOut = [...batchDims, M, N];
  if (outShape.length !== expectedOut.length || outShape.some((d, i) => d !== expectedOut[i])) {
    throw new Error(`${what}: out must be ${shapeString(expectedOut)}`);
  }
  const bBatched = rb > 2;
  if (bBatched) {
    const bBatch = bShape.slice(0, rb - 2);
    if (bBatch.length !== batchDims.length || bBatch.some((d, i) => d !== batchDims[i])) {
      throw new Error(
        `${what}: b's batch dims ${shapeString(bBatch)} must match a's ${shapeString(batchDims)} (or b must be 2-D)`,
      );
    }
  }
  const batch = batchDims.reduce((s, d) => s * d, 1);
  return { batch, M, N, K, bBatched };
}

function f32(t: Tensor, what: string): Float32Array {
  if (t.dtype !== 'f32') throw new Error(`cpu.matmul: ${what} must be f32, got ${t.dtype}`);
  return t.data as Float32Array;
}

/** Outputs must not alias inputs (the kernel reads inputs while writing out). */
export function assertNoOverlap(out: Float32Array, input: Float32Array, what: string): void {
  if (out.buffer !== input.buffer) return;
  const o0 = out.byteOffset;
  const o1 = o0 + out.byteLength;
  const i0 = input.byteOffset;
  const i1 = i0 + input.byteLength;
  if (o0 < i1 && i0 < o1)
    throw new Error(`cpu.matmul: out overlaps ${what} (outputs must not alias inputs)`);
}
