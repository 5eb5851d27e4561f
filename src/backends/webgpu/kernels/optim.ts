/**
 * AdamW on the device, the same f32 operation order as the cpu kernel (native/src/optim.cc):
 *   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
 *   p ← p − (lr / (1−β1^t)) · m / (sqrt(v) / sqrt(1−β2^t) + eps)
 * with the step constants computed in f64 on the host. (WGSL's sqrt and division are not
 * correctly rounded, so results agree with cpu to a few ulps, not bit for bit.)
 */
import type { AdamWOptions } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { KernelSpec } from '../context.js';
import { ctxOf, expectFinite, expectSize, f32, fail, noAlias } from '../checks.js';
import { strideGroups } from '../grid.js';

const WG = 256;

const ADAMW: KernelSpec = {
  key: 'adamw',
  bindings: [
    { name: 'param', type: 'f32', write: true }, { name: 'grad', type: 'f32', write: false },
    { name: 'm', type: 'f32', write: true }, { name: 'v', type: 'f32', write: true },
  ],
  params: [
    { name: 'n', type: 'u32' }, { name: 'decay', type: 'f32' }, { name: 'beta1', type: 'f32' },
    { name: 'oneMinusBeta1', type: 'f32' }, { name: 'beta2', type: 'f32' }, { name: 'oneMinusBeta2', type: 'f32' },
    { name: 'stepSize', type: 'f32' }, { name: 'invSqrtBc2', type: 'f32' }, { name: 'eps', type: 'f32' },
  ],
  source: `const WG = ${WG}u;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  for (var i = gid.x; i < P.n; i += step) {
    let g = grad[P.off_grad + i];
    var p = param[P.off_param + i] * P.decay;
    let mi = fma(P.beta1, m[P.off_m + i], P.oneMinusBeta1 * g);
    let vi = fma(P.beta2, v[P.off_v + i], P.oneMinusBeta2 * (g * g));
    let denom = fma(sqrt(vi), P.invSqrtBc2, P.eps);
    p = fma(-P.stepSize, mi / denom, p);
    m[P.off_m + i] = mi;
    v[P.off_v + i] = vi;
    param[P.off_param + i] = p;
  }
}`,
};

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
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  const ctx = ctxOf(param);
  ctx.dispatch(
    ADAMW,
    [f32(op, 'param', param), f32(op, 'grad', grad), f32(op, 'm', m), f32(op, 'v', v)],
    [n, 1 - lr * weightDecay, beta1, 1 - beta1, beta2, 1 - beta2, lr / bc1, 1 / Math.sqrt(bc2), eps],
    [strideGroups(ctx, n, WG)],
  );
}
