import type { MatmulOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { matmulDims } from '../shape-checks.js';
import { roundedBf16 } from './bf16.js';
import { checks, noAlias, sameFloatType } from './check.js';

/**
 * out[..., M, N] = alpha·op(a)·op(b) + beta·out, accumulated in float64. b is batched like a or
 * 2-D (shared by every batch). beta = 0 ignores out's old contents (NaN included).
 *
 * `bf16`: the reference of a backend computing its frozen-base products in bf16 (the cpu backend's
 * bf16 twin): a frozen 2-D b (options.frozenB) with an untransposed a is multiplied with both
 * operands rounded to bf16 (bf16.ts); every other product stays as above, as on that backend.
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
  sameFloatType(op, { a, b, out });
  noAlias(op, 'a and out', a, out);
  noAlias(op, 'b and out', b, out);
  const { M, K, N, batches, bBatched } = matmulDims(checks, op, a, b, out, transA, transB);
  const rounded = bf16 && options.frozenB === true && !bBatched && !transA;
  const A = rounded ? roundedBf16(a.data) : a.data;
  const B = rounded ? roundedBf16(b.data) : b.data;
  const C = out.data;
  for (let bi = 0; bi < batches; bi++) {
    const aOff = bi * M * K;
    const bOff = bBatched ? bi * K * N : 0;
    const cOff = bi * M * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let acc = 0;
        for (let k = 0; k < K; k++) {
          const av = transA ? A[aOff + k * M + i]! : A[aOff + i * K + k]!;
          const bv = transB ? B[bOff + j * K + k]! : B[bOff + k * N + j]!;
          acc += av * bv;
        }
        const c = cOff + i * N + j;
        C[c] = beta === 0 ? alpha * acc : alpha * acc + beta * C[c]!;
      }
    }
  }
}
