import type { CrossEntropyOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { crossEntropyArgs } from '../shape-checks.js';
import { args, callNative, f32, i32 } from './checks.js';
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
  softcap: number,
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
  options?: CrossEntropyOptions,
): void {
  const op = 'crossEntropy';
  const [n, vocab, softcap] = crossEntropyArgs(
    args,
    logits,
    labels,
    ignoreIndex,
    losses,
    dlogits,
    gradScale,
    options,
  );
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
      softcap ?? 0,
    ),
  );
}
