import type { AdamWOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { expectSize, fail, noAlias, sameFloatType } from './check.js';

/**
 * One AdamW step, PyTorch `_single_tensor_adamw` semantics:
 *   p ← p·(1 - lr·wd);  m ← β1·m + (1-β1)·g;  v ← β2·v + (1-β2)·g²;
 *   p ← p - (lr / (1-β1^t)) · m / (sqrt(v)/sqrt(1-β2^t) + eps).
 */
export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamWOptions): void {
  const op = 'adamw';
  sameFloatType(op, { param, grad, m, v });
  for (const [name, t] of [['grad', grad], ['m', m], ['v', v]] as const) expectSize(op, name, t, param.size);
  noAlias(op, 'param and grad', param, grad);
  noAlias(op, 'm and v', m, v);
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  if (!Number.isInteger(step) || step < 1) fail(op, `step must be an integer ≥ 1, got ${step}`);
  if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1)) fail(op, `betas must be in [0, 1), got ${beta1}, ${beta2}`);
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
