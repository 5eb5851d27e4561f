import type { AdamWOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { expectFinite, expectSize, f32, fail, noAlias } from './checks.js';
import { kernel } from './native.js';

type AdamW = (
  param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, n: number,
  lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number,
) => void;

const adamwF32 = kernel<AdamW>('adamwF32');

/** One AdamW step in place (PyTorch semantics; see native/src/optim.cc). */
export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamWOptions): void {
  const op = 'adamw';
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  for (const [name, value] of Object.entries({ lr, beta1, beta2, eps, weightDecay })) expectFinite(op, name, value);
  if (!Number.isInteger(step) || step < 1) fail(op, `step must be an integer ≥ 1, got ${step}`);
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) fail(op, `betas must be in [0, 1), got ${beta1}, ${beta2}`);
  const n = param.size;
  expectSize(op, 'grad', grad, n);
  expectSize(op, 'm', m, n);
  expectSize(op, 'v', v, n);
  const named = [['param', param], ['grad', grad], ['m', m], ['v', v]] as const;
  for (let i = 0; i < named.length; i++) {
    for (let j = i + 1; j < named.length; j++) noAlias(op, `${named[i]![0]} and ${named[j]![0]}`, named[i]![1], named[j]![1]);
  }
  adamwF32(
    f32(op, 'param', param), f32(op, 'grad', grad), f32(op, 'm', m), f32(op, 'v', v), n,
    lr, beta1, beta2, eps, weightDecay, step,
  );
}
