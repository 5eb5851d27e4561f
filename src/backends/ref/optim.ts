import type { AdamW8bitState, AdamWOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { adamw8bitArrays, checkAdamW8bit } from '../adamw8bit-host.js';
import { checks, expectSize, fail, noAlias, sameFloatType } from './check.js';

/**
 * One AdamW step, PyTorch `_single_tensor_adamw` semantics:
 *   p ← p·(1 - lr·wd);  m ← β1·m + (1-β1)·g;  v ← β2·v + (1-β2)·g²;
 *   p ← p - (lr / (1-β1^t)) · m / (sqrt(v)/sqrt(1-β2^t) + eps).
 */
export function adamw(
  param: Tensor,
  grad: Tensor,
  m: Tensor,
  v: Tensor,
  options: AdamWOptions,
): void {
  const op = 'adamw';
  sameFloatType(op, { param, grad, m, v });
  for (const [name, t] of [
    ['grad', grad],
    ['m', m],
    ['v', v],
  ] as const)
    expectSize(op, name, t, param.size);
  noAlias(op, 'param and grad', param, grad);
  noAlias(op, 'm and v', m, v);
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  if (!Number.isInteger(step) || step < 1) fail(op, `step must be an integer ≥ 1, got ${step}`);
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1))
    fail(op, `betas must be in [0, 1), got ${beta1}, ${beta2}`);
  const P = param.data;
  const G = grad.data;
  const M = m.data;
  const Vv = v.data;
  const bc1 = 1 - beta1 ** step;
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const stepSize = lr / bc1;
  const decay = 1 - lr * weightDecay;
  for (let i = 0; i < P.length; i++) {
    const g = G[i]!;
    const mi = beta1 * M[i]! + (1 - beta1) * g;
    const vi = beta2 * Vv[i]! + (1 - beta2) * g * g;
    M[i] = mi;
    Vv[i] = vi;
    // Use the stored (dtype-rounded) moments, as PyTorch's in-place ops do.
    P[i] = P[i]! * decay - (stepSize * M[i]!) / (Math.sqrt(Vv[i]!) / bc2Sqrt + eps);
  }
}

/** One 8-bit blockwise AdamW step (the contract's arithmetic, see adamw8bit-host.ts). */
export function adamw8bit(
  param: Tensor,
  grad: Tensor,
  state: AdamW8bitState,
  options: AdamWOptions,
): void {
  checkAdamW8bit(checks, param, grad, state, options);
  noAlias('adamw8bit', 'param and grad', param, grad);
  noAlias('adamw8bit', 'state1 and state2', state.state1, state.state2);
  noAlias('adamw8bit', 'absmax1 and absmax2', state.absmax1, state.absmax2);
  adamw8bitArrays(
    param.data as Float32Array,
    grad.data as Float32Array,
    state.state1.data as Uint8Array,
    state.state2.data as Uint8Array,
    state.absmax1.data as Float32Array,
    state.absmax2.data as Float32Array,
    state.qmap1.data as Float32Array,
    state.qmap2.data as Float32Array,
    options,
  );
}
