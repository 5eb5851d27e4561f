import type { AdamW8bitState, AdamWOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { adamw8bitScalars, checkAdamW8bit } from '../adamw8bit-host.js';
import { adamwArgs } from '../shape-checks.js';
import { args, checks, f32, noAlias } from './checks.js';
import { kernel } from './native.js';

type AdamW = (
  param: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  n: number,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  weightDecay: number,
  step: number,
) => void;

const adamwF32 = kernel<AdamW>('adamwF32');

/** One AdamW step in place (PyTorch semantics; see native/src/optim.cc). */
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
  adamwF32(
    f32(op, 'param', param),
    f32(op, 'grad', grad),
    f32(op, 'm', m),
    f32(op, 'v', v),
    n,
    lr,
    beta1,
    beta2,
    eps,
    weightDecay,
    step,
  );
}

type AdamW8bit = (
  param: Float32Array,
  grad: Float32Array,
  state1: Uint8Array,
  state2: Uint8Array,
  absmax1: Float32Array,
  absmax2: Float32Array,
  qmap1: Float32Array,
  qmap2: Float32Array,
  n: number,
  beta1: number,
  beta2: number,
  stepSize: number,
  epsHat: number,
  decay: number,
  applyDecay: boolean,
) => void;

const adamw8bitF32 = kernel<AdamW8bit>('adamw8bitF32');

/**
 * One 8-bit blockwise AdamW step on the addon (native/src/optim.cc), threaded over blocks: the
 * contract's arithmetic to the rounding, so it equals ref (and adamw8bit-host.ts) bit for bit.
 */
export function adamw8bit(
  param: Tensor,
  grad: Tensor,
  state: AdamW8bitState,
  options: AdamWOptions,
): void {
  const op = 'adamw8bit';
  checkAdamW8bit(checks, param, grad, state, options);
  noAlias(op, 'param and grad', param, grad);
  noAlias(op, 'state1 and state2', state.state1, state.state2);
  noAlias(op, 'absmax1 and absmax2', state.absmax1, state.absmax2);
  const { stepSize, epsHat, decay, applyDecay } = adamw8bitScalars(options);
  adamw8bitF32(
    f32(op, 'param', param),
    f32(op, 'grad', grad),
    state.state1.data as Uint8Array,
    state.state2.data as Uint8Array,
    f32(op, 'absmax1', state.absmax1),
    f32(op, 'absmax2', state.absmax2),
    f32(op, 'qmap1', state.qmap1),
    f32(op, 'qmap2', state.qmap2),
    param.size,
    options.beta1,
    options.beta2,
    stepSize,
    epsHat,
    decay,
    applyDecay,
  );
}
