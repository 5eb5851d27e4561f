/**
 * Cross-entropy on WebGPU: one workgroup per row. Each invocation keeps an online (max, sum of
 * exp) pair over its strided logits — one read of the row, stable for any magnitude — and a tree
 * merges the pairs into the row's log-sum-exp. The gradient pass reads each logit before writing
 * the same element (and the label's logit is read before any write), so dlogits may be logits.
 * Labels outside [0, V) other than the ignore index raise a fault, thrown at the next read.
 * With a soft-cap every logit x is read as y = cap·tanh(x / cap) and the gradient carries 1 - (y/cap)².
 */
import type { CrossEntropyOptions } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { TANH_WGSL } from './elementwise.js';
import { FAULT_WGSL, type KernelSpec } from '../context.js';
import { crossEntropyArgs } from '../../shape-checks.js';
import { args, ctxOf, f32, fail, i32 } from '../checks.js';
import { UNIT_INDEX, unitGroups } from '../grid.js';

const WG = 256;

function crossEntropySpec(withGrad: boolean): KernelSpec {
  return {
    key: `cross_entropy${withGrad ? '_grad' : ''}`,
    bindings: [
      { name: 'logits', type: 'f32', write: false },
      { name: 'labels', type: 'i32', write: false },
      { name: 'losses', type: 'f32', write: true },
      ...(withGrad ? [{ name: 'dlogits', type: 'f32' as const, write: true }] : []),
      { name: 'fault', type: 'atomic<u32>', write: true },
    ],
    params: [
      { name: 'n', type: 'u32' },
      { name: 'V', type: 'u32' },
      { name: 'ignoreIndex', type: 'i32' },
      { name: 'gradScale', type: 'f32' },
      { name: 'code', type: 'u32' },
      // 0: no soft-cap
      { name: 'softcap', type: 'f32' },
    ],
    source: `const WG = ${WG}u;
// A finite "minus infinity": WGSL implementations may assume no infinities at run time.
const NEG = -1.0e30;
${FAULT_WGSL}
${UNIT_INDEX}
${TANH_WGSL}
fn capped(x: f32) -> f32 {
  if (P.softcap > 0.0) { return P.softcap * tanhRational(x / P.softcap); }
  return x;
}
var<workgroup> redM: array<f32, WG>;
var<workgroup> redS: array<f32, WG>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = unitIndex(wg, nwg);
  if (row >= P.n) { return; }
  let t = lid.x;
  let base = P.off_logits + row * P.V;
  let y = labels[P.off_labels + row];
  let ignored = y == P.ignoreIndex;
  let bad = !ignored && (y < 0 || u32(y) >= P.V);
  let yi = u32(clamp(y, 0, i32(P.V) - 1));
  // Read before the barriers below, so before any invocation writes dlogits (which may be logits).
  let xy = capped(logits[base + yi]);
  var m = NEG;
  var s = 0.0;
  for (var j = t; j < P.V; j += WG) {
    let v = capped(logits[base + j]);
    if (v > m) {
      s = s * exp(m - v) + 1.0;
      m = v;
    } else {
      s += exp(v - m);
    }
  }
  redM[t] = m;
  redS[t] = s;
  workgroupBarrier();
  for (var w = WG / 2u; w > 0u; w = w / 2u) {
    if (t < w) {
      let m1 = redM[t];
      let m2 = redM[t + w];
      let mm = max(m1, m2);
      redS[t] = redS[t] * exp(m1 - mm) + redS[t + w] * exp(m2 - mm);
      redM[t] = mm;
    }
    workgroupBarrier();
  }
  let logSum = log(redS[0]);
  let m0 = redM[0];
  if (t == 0u) {
    if (bad) { raise(P.code, y, i32(row)); }
    // (max − x_y) + log Σ, and exp((x − max) − log Σ) below: no cancellation against a large
    // log-sum-exp.
    losses[P.off_losses + row] = select((m0 - xy) + logSum, 0.0, ignored || bad);
  }
  ${
    withGrad
      ? `if (bad) { return; }
  for (var j = t; j < P.V; j += WG) {
    let v = capped(logits[base + j]);
    var g = P.gradScale * (exp((v - m0) - logSum) - select(0.0, 1.0, j == yi));
    if (P.softcap > 0.0) {
      let t = v / P.softcap;
      g *= 1.0 - t * t;
    }
    dlogits[P.off_dlogits + row * P.V + j] = select(g, 0.0, ignored);
  }`
      : ''
  }
}`,
  };
}

const SPECS = { grad: crossEntropySpec(true), plain: crossEntropySpec(false) };

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
  // Labels and the ignore index are i32 on the device, and so are row offsets into a vocabulary.
  if (ignoreIndex < -(2 ** 31) || ignoreIndex >= 2 ** 31)
    fail(op, `ignoreIndex ${ignoreIndex} is not an i32`);
  if (vocab >= 2 ** 31) fail(op, `a vocabulary of ${vocab} is too large`);
  const spans = [f32(op, 'logits', logits), i32(op, 'labels', labels), f32(op, 'losses', losses)];
  if (dlogits) spans.push(f32(op, 'dlogits', dlogits));
  if (n === 0) return;
  const ctx = ctxOf(losses);
  const code = ctx.faultCode(
    `crossEntropy: label {a} at row {b} is out of range [0, ${vocab}) and not the ignore index ${ignoreIndex}`,
  );
  ctx.dispatch(
    dlogits ? SPECS.grad : SPECS.plain,
    [...spans, ctx.faultSpan()],
    [n, vocab, ignoreIndex, gradScale, code, softcap ?? 0],
    unitGroups(ctx, n),
  );
}
