import type { Tensor } from '../../tensor/tensor.js';
import {
  expectFinite,
  expectRank,
  expectShape,
  expectSize,
  f32,
  fail,
  i32,
  noAlias,
  sameOrDisjoint,
  callNative,
} from './checks.js';
import { kernel } from './native.js';

type CrossEntropy = (
  logits: Float32Array,
  labels: Int32Array,
  losses: Float32Array,
  dlogits: Float32Array | null,
  n: number,
  vocab: number,
  ignoreIndex: number,
  gradScale: number,
) => void;

const crossEntropyF32 = kernel<CrossEntropy>('crossEntropyF32');

/** Cross-entropy of logits [n, V] against labels i32 [n]; see Backend.crossEntropy. */
export function crossEntropy(
  logits: Tensor,
  labels: Tensor,
  ignoreIndex: number,
  losses: Tensor,
  dlogits: Tensor | null,
  gradScale: number,
): void {
  const op = 'crossEntropy';
  if (!Number.isInteger(ignoreIndex))
    fail(op, `ignoreIndex must be an integer, got ${ignoreIndex}`);
  expectFinite(op, 'gradScale', gradScale);
  expectRank(op, 'logits', logits, 2);
  const [n, vocab] = logits.shape as [number, number];
  if (vocab === 0 && n > 0) fail(op, 'logits have an empty vocabulary');
  expectSize(op, 'labels', labels, n);
  expectSize(op, 'losses', losses, n);
  noAlias(op, 'losses and logits', losses, logits);
  if (dlogits) {
    expectShape(op, 'dlogits', dlogits, logits.shape);
    sameOrDisjoint(op, 'dlogits and logits', dlogits, logits);
    noAlias(op, 'dlogits and losses', dlogits, losses);
  }
  callNative(op, () =>
    crossEntropyF32(
      f32(op, 'logits', logits),
      i32(op, 'labels', labels),
      f32(op, 'losses', losses),
      dlogits ? f32(op, 'dlogits', dlogits) : null,
      n,
      vocab,
      ignoreIndex,
      gradScale,
    ),
  );
}
