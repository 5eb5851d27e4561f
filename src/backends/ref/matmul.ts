import type { MatmulOptions } from '../../tensor/backend.js';
import { shapeString } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import { fail, noAlias, sameFloatType } from './check.js';

/**
 * out[..., M, N] = alpha·op(a)·op(b) + beta·out, accumulated in float64. b is batched like a or
 * 2-D (shared by every batch). beta = 0 ignores out's old contents (NaN included).
 */
export function matmul(a: Tensor, b: Tensor, out: Tensor, options: MatmulOptions = {}): void {
  const op = 'matmul';
  const { transA = false, transB = false, alpha = 1, beta = 0 } = options;
  sameFloatType(op, { a, b, out });
  noAlias(op, 'a and out', a, out);
  noAlias(op, 'b and out', b, out);
  if (a.rank < 2 || b.rank < 2 || out.rank < 2) fail(op, 'a, b and out need rank ≥ 2');
  const [a0, a1] = a.shape.slice(-2) as [number, number];
  const [b0, b1] = b.shape.slice(-2) as [number, number];
  const M = transA ? a1 : a0;
  const K = transA ? a0 : a1;
  const Kb = transB ? b1 : b0;
  const N = transB ? b0 : b1;
  const batchShape = a.shape.slice(0, -2);
  const expectedOut = [...batchShape, M, N];
  const shapes = `a ${shapeString(a.shape)}${transA ? 'ᵀ' : ''}, b ${shapeString(b.shape)}${transB ? 'ᵀ' : ''}, out ${shapeString(out.shape)}`;
  if (K !== Kb) fail(op, `inner dimensions differ: ${shapes}`);
  if (out.rank !== expectedOut.length || out.shape.some((d, i) => d !== expectedOut[i])) {
    fail(op, `out must be ${shapeString(expectedOut)}: ${shapes}`);
  }
  const bBatched = b.rank > 2;
  if (bBatched) {
    const bBatch = b.shape.slice(0, -2);
    if (bBatch.length !== batchShape.length || bBatch.some((d, i) => d !== batchShape[i])) {
      fail(op, `b must be 2-D or have a's batch dims: ${shapes}`);
    }
  }
  const batches = batchShape.reduce((p, d) => p * d, 1);
  const A = a.data;
  const B = b.data;
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
