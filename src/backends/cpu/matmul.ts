import type { MatmulOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { matmulDims } from '../shape-checks.js';
import { checks, f32, noAlias } from './checks.js';
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

type SgemmBf16Kernel = (
  a: Float32Array,
  b: Float32Array,
  out: Float32Array,
  M: number,
  N: number,
  K: number,
  transB: boolean,
  alpha: number,
  beta: number,
) => void;

let sgemmBf16: SgemmBf16Kernel | null = null;

/**
 * out[..., M, N] = alpha·op(a)·op(b) + beta·out (contract: Backend.matmul). `bf16`: the backend
 * computes in bf16, so a frozen 2-D b (options.frozenB) with an untransposed a goes through the
 * bf16 GEMM (operands rounded to bf16, f32 accumulation).
 */
export function matmul(
  a: Tensor,
  b: Tensor,
  out: Tensor,
  options: MatmulOptions = {},
  bf16 = false,
): void {
  const op = 'matmul';
  const { transA = false, transB = false, alpha = 1, beta = 0 } = options;
  const p = matmulDims(checks, op, a, b, out, transA, transB);
  const ad = f32(op, 'a', a);
  const bd = f32(op, 'b', b);
  const od = f32(op, 'out', out);
  // The kernel reads a and b while writing out.
  noAlias(op, 'a and out', a, out);
  noAlias(op, 'b and out', b, out);
  if (bf16 && options.frozenB && !p.bBatched && !transA) {
    sgemmBf16 ??= kernel<SgemmBf16Kernel>('sgemmBf16');
    sgemmBf16(ad, bd, od, p.batches * p.M, p.N, p.K, transB, alpha, beta);
    return;
  }
  // A shared 2-D b with an untransposed a is one tall GEMM: fold the batch into M (better blocking,
  // one thread dispatch).
  if (!p.bBatched && !transA && p.batches > 1) {
    sgemm(ad, bd, od, 1, p.batches * p.M, p.N, p.K, false, transB, alpha, beta, false);
  } else {
    sgemm(ad, bd, od, p.batches, p.M, p.N, p.K, transA, transB, alpha, beta, p.bBatched);
  }
}
