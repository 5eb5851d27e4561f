/**
 * AdamW on the device, the same f32 operation order as the cpu kernel (native/src/optim.cc):
 *   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
 *   p ← p − (lr / (1−β1^t)) · m / (sqrt(v) / sqrt(1−β2^t) + eps)
 * with the step constants computed in f64 on the host. (WGSL's sqrt and division are not
 * correctly rounded, so results agree with cpu to a few ulps, not bit for bit.)
 */
import {
  ADAMW8BIT_BLOCKSIZE,
  type AdamW8bitState,
  type AdamWOptions,
} from '../../../tensor/backend.js';
import { checkAdamW8bit } from '../../adamw8bit-host.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { KernelSpec } from '../context.js';
import { adamwArgs } from '../../shape-checks.js';
import { args, checks, ctxOf, f32, fail, noAlias, u8 } from '../checks.js';
import { strideGroups, unitGroups } from '../grid.js';

const WG = 256;

const ADAMW: KernelSpec = {
  key: 'adamw',
  bindings: [
    { name: 'param', type: 'f32', write: true },
    { name: 'grad', type: 'f32', write: false },
    { name: 'm', type: 'f32', write: true },
    { name: 'v', type: 'f32', write: true },
  ],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'decay', type: 'f32' },
    { name: 'beta1', type: 'f32' },
    { name: 'oneMinusBeta1', type: 'f32' },
    { name: 'beta2', type: 'f32' },
    { name: 'oneMinusBeta2', type: 'f32' },
    { name: 'stepSize', type: 'f32' },
    { name: 'invSqrtBc2', type: 'f32' },
    { name: 'eps', type: 'f32' },
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

export function adamw(
  param: Tensor,
  grad: Tensor,
  m: Tensor,
  v: Tensor,
  options: AdamWOptions,
): void {
  const op = 'adamw';
  adamwArgs(args, param, grad, m, v, options);
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  const n = param.size;
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  const ctx = ctxOf(param);
  ctx.dispatch(
    ADAMW,
    [f32(op, 'param', param), f32(op, 'grad', grad), f32(op, 'm', m), f32(op, 'v', v)],
    [
      n,
      1 - lr * weightDecay,
      beta1,
      1 - beta1,
      beta2,
      1 - beta2,
      lr / bc1,
      1 / Math.sqrt(bc2),
      eps,
    ],
    [strideGroups(ctx, n, WG)],
  );
}

/**
 * 8-bit blockwise AdamW (Backend.adamw8bit): one workgroup per block of 256 elements. The host
 * backends specify this update to the rounding in float64; GPUs have no f64, so here the moments
 * and the parameter update run in f32 (fma where the f64 form has one rounding). Results agree
 * with ref/cpu to about an ulp, and a moment sitting exactly on a code midpoint may pick the
 * neighbouring code: a checkpoint moves between backends with that caveat.
 */
const ADAMW8BIT: KernelSpec = {
  key: 'adamw8bit',
  bindings: [
    { name: 'param', type: 'f32', write: true },
    { name: 'grad', type: 'f32', write: false },
    { name: 'state1', type: 'u32', write: true },
    { name: 'state2', type: 'u32', write: true },
    { name: 'absmax1', type: 'f32', write: true },
    { name: 'absmax2', type: 'f32', write: true },
    { name: 'qmap1', type: 'f32', write: false },
    { name: 'qmap2', type: 'f32', write: false },
  ],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'beta1', type: 'f32' },
    { name: 'oneMinusBeta1', type: 'f32' },
    { name: 'beta2', type: 'f32' },
    { name: 'oneMinusBeta2', type: 'f32' },
    { name: 'stepSize', type: 'f32' },
    { name: 'epsHat', type: 'f32' },
    { name: 'decay', type: 'f32' },
  ],
  source: `const BLOCK = ${ADAMW8BIT_BLOCKSIZE}u;
var<workgroup> red1: array<f32, 256>;
var<workgroup> red2: array<f32, 256>;
var<workgroup> codes1: array<u32, 256>;
var<workgroup> codes2: array<u32, 256>;
fn byteAt(w: u32, byteIndex: u32) -> u32 { return (w >> (8u * (byteIndex % 4u))) & 0xffu; }
fn code1(i: u32) -> u32 { let at = P.off_state1 + i; return byteAt(state1[at / 4u], at); }
fn code2(i: u32) -> u32 { let at = P.off_state2 + i; return byteAt(state2[at / 4u], at); }
// The nearest code: the number of midpoints (a + b) / 2 below s, found by bisection; s > (a + b) / 2
// is tested as s - a > b - s, which needs no rounded midpoint.
fn nearest1(s: f32) -> u32 {
  var lo = 0u; var hi = 255u;
  loop {
    if (lo >= hi) { break; }
    let mid = (lo + hi) / 2u;
    let a = qmap1[P.off_qmap1 + mid]; let b = qmap1[P.off_qmap1 + mid + 1u];
    if (s - a > b - s) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}
fn nearest2(s: f32) -> u32 {
  var lo = 0u; var hi = 255u;
  loop {
    if (lo >= hi) { break; }
    let mid = (lo + hi) / 2u;
    let a = qmap2[P.off_qmap2 + mid]; let b = qmap2[P.off_qmap2 + mid + 1u];
    if (s - a > b - s) { lo = mid + 1u; } else { hi = mid; }
  }
  return lo;
}
fn isFinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let blk = wg.y * nwg.x + wg.x;
  let b0 = blk * BLOCK;
  if (b0 >= P.n) { return; }
  let j = lid.x;
  let i = b0 + j;
  let inside = i < P.n;
  var m = 0.0; var v = 0.0; var ok = false;
  if (inside) {
    let g = grad[P.off_grad + i];
    ok = isFinite(g);
    if (ok) {
      let a1 = absmax1[P.off_absmax1 + blk];
      let a2 = absmax2[P.off_absmax2 + blk];
      m = fma(P.beta1, qmap1[P.off_qmap1 + code1(i)] * a1, P.oneMinusBeta1 * g);
      v = fma(P.beta2, qmap2[P.off_qmap2 + code2(i)] * a2, P.oneMinusBeta2 * g * g);
      var w = param[P.off_param + i] + P.stepSize * (m / (sqrt(v) + P.epsHat));
      w = w * P.decay;
      param[P.off_param + i] = w;
    }
  }
  red1[j] = abs(m);
  red2[j] = v;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s / 2u) {
    if (j < s) { red1[j] = max(red1[j], red1[j + s]); red2[j] = max(red2[j], red2[j + s]); }
    workgroupBarrier();
  }
  let max1 = red1[0];
  let max2 = red2[0];
  workgroupBarrier();
  if (j == 0u) { absmax1[P.off_absmax1 + blk] = max1; absmax2[P.off_absmax2 + blk] = max2; }
  let inv1 = select(0.0, 1.0 / max1, max1 > 0.0);
  let inv2 = select(0.0, 1.0 / max2, max2 > 0.0);
  let s1 = m * inv1;
  var q1 = nearest1(s1);
  let q = qmap1[P.off_qmap1 + q1];
  if (s1 > 0.0 && q < 0.0) { q1 = q1 + 1u; } else if (s1 < 0.0 && q > 0.0) { q1 = q1 - 1u; }
  codes1[j] = q1;
  codes2[j] = nearest2(v * inv2);
  workgroupBarrier();
  // Four codes to a word, written by one invocation each (bytes of a word must not race); the last
  // word of the tensor keeps the bytes past its end.
  if (j < BLOCK / 4u) {
    let first = b0 + j * 4u;
    if (first < P.n) {
      var w1 = 0u; var w2 = 0u; var mask = 0u;
      for (var k = 0u; k < 4u; k++) {
        if (first + k < P.n) {
          w1 |= codes1[j * 4u + k] << (8u * k);
          w2 |= codes2[j * 4u + k] << (8u * k);
          mask |= 0xffu << (8u * k);
        }
      }
      let at1 = (P.off_state1 + first) / 4u;
      let at2 = (P.off_state2 + first) / 4u;
      state1[at1] = (state1[at1] & ~mask) | w1;
      state2[at2] = (state2[at2] & ~mask) | w2;
    }
  }
}`,
};

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
  const s1 = u8('adamw8bit', 'state1', state.state1);
  const s2 = u8('adamw8bit', 'state2', state.state2);
  if (s1.byteOffset % 4 !== 0 || s2.byteOffset % 4 !== 0)
    fail('adamw8bit', 'state tensors must start 4-byte aligned');
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  const c1t = 1 - beta1 ** step;
  const c2t = 1 - beta2 ** step;
  const ctx = ctxOf(param);
  // The bnb rule: decay only when weightDecay > 0 (multiplying by exactly 1 otherwise is the same).
  const decay = weightDecay > 0 ? 1 - lr * weightDecay : 1;
  ctx.dispatch(
    ADAMW8BIT,
    [
      f32('adamw8bit', 'param', param),
      f32('adamw8bit', 'grad', grad),
      s1,
      s2,
      f32('adamw8bit', 'absmax1', state.absmax1),
      f32('adamw8bit', 'absmax2', state.absmax2),
      f32('adamw8bit', 'qmap1', state.qmap1),
      f32('adamw8bit', 'qmap2', state.qmap2),
    ],
    [
      param.size,
      beta1,
      1 - beta1,
      beta2,
      1 - beta2,
      (-lr * Math.sqrt(c2t)) / c1t,
      eps * Math.sqrt(c2t),
      decay,
    ],
    unitGroups(ctx, Math.ceil(param.size / ADAMW8BIT_BLOCKSIZE)),
  );
}
