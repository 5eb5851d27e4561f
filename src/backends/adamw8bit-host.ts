/**
 * 8-bit blockwise AdamW: the argument checks and the step's scalars every backend shares, and the
 * update over host arrays that the ref backend runs. It is the arithmetic the Backend contract
 * specifies to the rounding (see `Backend.adamw8bit`). The cpu addon (native/src/optim.cc) implements
 * the same arithmetic, so ref and cpu give the same bits and a checkpoint written on one resumes
 * bit-identically on the other; the WebGPU kernel has no float64 and agrees to about an ulp.
 */
import { ADAMW8BIT_BLOCKSIZE, type AdamW8bitState, type AdamWOptions } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { codeMidpoints, nearestCodeIndex } from '../quant/blockwise8bit.js';
import type { ShapeChecks } from './shape-checks.js';

const BLOCK = ADAMW8BIT_BLOCKSIZE;

/** Argument checks every backend applies to adamw8bit (dtypes, sizes, hyper-parameters). */
export function checkAdamW8bit(
  checks: ShapeChecks,
  param: Tensor,
  grad: Tensor,
  state: AdamW8bitState,
  options: AdamWOptions,
): void {
  const op = 'adamw8bit';
  const n = param.size;
  const blocks = Math.ceil(n / BLOCK);
  const expect = (name: string, t: Tensor, dtype: string, size: number): void => {
    if (t.dtype !== dtype) checks.fail(op, `${name} must be ${dtype}, got ${t.dtype}`);
    checks.expectSize(op, name, t, size);
  };
  expect('param', param, 'f32', n);
  expect('grad', grad, 'f32', n);
  expect('state1', state.state1, 'u8', n);
  expect('state2', state.state2, 'u8', n);
  expect('absmax1', state.absmax1, 'f32', blocks);
  expect('absmax2', state.absmax2, 'f32', blocks);
  expect('qmap1', state.qmap1, 'f32', 256);
  expect('qmap2', state.qmap2, 'f32', 256);
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  for (const [name, value] of Object.entries({ lr, beta1, beta2, eps, weightDecay })) {
    if (!Number.isFinite(value)) checks.fail(op, `${name} must be a finite number, got ${value}`);
  }
  if (!Number.isInteger(step) || step < 1)
    checks.fail(op, `step must be an integer ≥ 1, got ${step}`);
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
    checks.fail(op, `betas must be in [0, 1), got ${beta1}, ${beta2}`);
}

/** The step's scalars, computed once in JavaScript for every implementation (so they agree to the bit). */
export function adamw8bitScalars(options: AdamWOptions): {
  stepSize: number;
  epsHat: number;
  decay: number;
  applyDecay: boolean;
} {
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  const c1t = 1 - beta1 ** step;
  const c2t = 1 - beta2 ** step;
  return {
    stepSize: (-lr * Math.sqrt(c2t)) / c1t,
    epsHat: eps * Math.sqrt(c2t),
    decay: 1 - lr * weightDecay,
    applyDecay: weightDecay > 0,
  };
}

/** The update itself, in place on the arrays (validated by the caller). */
export function adamw8bitArrays(
  w: Float32Array,
  g: Float32Array,
  c1: Uint8Array,
  c2: Uint8Array,
  absmax1: Float32Array,
  absmax2: Float32Array,
  qmap1: Float32Array,
  qmap2: Float32Array,
  options: AdamWOptions,
): void {
  const { lr, beta1, beta2, weightDecay } = options;
  const { stepSize, epsHat } = adamw8bitScalars(options);
  const mids1 = codeMidpoints(qmap1);
  const mids2 = codeMidpoints(qmap2);
  const n = w.length;
  const m = new Float32Array(BLOCK);
  const v = new Float32Array(BLOCK);
  for (let b0 = 0, blk = 0; b0 < n; b0 += BLOCK, blk++) {
    const len = Math.min(BLOCK, n - b0);
    const a1 = absmax1[blk]!;
    const a2 = absmax2[blk]!;
    let max1 = 0;
    let max2 = 0;
    for (let j = 0; j < len; j++) {
      const gi = g[b0 + j]!;
      if (!Number.isFinite(gi)) {
        m[j] = 0;
        v[j] = 0;
        continue;
      }
      const mj = Math.fround(beta1 * Math.fround(qmap1[c1[b0 + j]!]! * a1) + (1 - beta1) * gi);
      const vj = Math.fround(beta2 * Math.fround(qmap2[c2[b0 + j]!]! * a2) + (1 - beta2) * gi * gi);
      m[j] = mj;
      v[j] = vj;
      max1 = Math.max(max1, Math.abs(mj));
      max2 = Math.max(max2, vj);
    }
    for (let j = 0; j < len; j++) {
      if (!Number.isFinite(g[b0 + j]!)) continue;
      let wj = w[b0 + j]! + stepSize * (m[j]! / (Math.sqrt(v[j]!) + epsHat));
      if (weightDecay > 0) wj *= 1 - lr * weightDecay;
      w[b0 + j] = wj;
    }
    absmax1[blk] = max1;
    absmax2[blk] = max2;
    const inv1 = max1 > 0 ? 1 / max1 : 0;
    const inv2 = max2 > 0 ? 1 / max2 : 0;
    for (let j = 0; j < len; j++) {
      const s1 = m[j]! * inv1;
      let q1 = nearestCodeIndex(mids1, s1);
      // bnb: keep the sign of m (a tiny m must not flip to a code of the other sign).
      const q = qmap1[q1]!;
      if (s1 > 0 && q < 0) q1++;
      else if (s1 < 0 && q > 0) q1--;
      c1[b0 + j] = q1;
      c2[b0 + j] = nearestCodeIndex(mids2, v[j]! * inv2);
    }
  }
}

/** The code a zero moment quantizes to (fresh 8-bit state starts there, as bnb's does). */
export function codeOfZero(qmap: Float32Array): number {
  return nearestCodeIndex(codeMidpoints(qmap), 0);
}
