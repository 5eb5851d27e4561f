import type { AttentionOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { type AttentionDims, attentionBackwardArgs, attentionDims } from '../shape-checks.js';
import { args, checks, expectShape, f32, i32, noAlias } from './checks.js';
import { kernel } from './native.js';

type Forward = (
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  lse: Float32Array,
  seg: Int32Array | null,
  B: number,
  Tq: number,
  Tk: number,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
  window: number,
  softcap: number,
) => void;
type Backward = (
  dout: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  lse: Float32Array,
  dq: Float32Array,
  dk: Float32Array,
  dv: Float32Array,
  seg: Int32Array | null,
  B: number,
  Tq: number,
  Tk: number,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
  window: number,
  softcap: number,
) => void;

const attentionF32 = kernel<Forward>('attentionF32');
const attentionBackwardF32 = kernel<Backward>('attentionBackwardF32');

/** Shapes shared by forward and backward (shape-checks.ts), plus lse [B, H, Tq] and i32 segment ids. */
function checkInputs(
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  lse: Tensor,
  options: AttentionOptions,
): AttentionDims {
  const d = attentionDims(checks, op, q, k, v, options);
  expectShape(op, 'lse', lse, [d.B, d.H, d.Tq]);
  if (options.segmentIds) i32(op, 'segmentIds', options.segmentIds);
  return d;
}

/** Causal grouped-query flash attention, optionally sliding-window and soft-capped (see native/src/attention.cc). */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  options: AttentionOptions,
): void {
  const op = 'attention';
  const { B, Tq, Tk, H, Hkv, D, window, softcap } = checkInputs(op, q, k, v, lse, options);
  expectShape(op, 'out', out, q.shape);
  for (const [name, t] of [
    ['q', q],
    ['k', k],
    ['v', v],
    ['lse', lse],
  ] as const)
    noAlias(op, `out and ${name}`, out, t);
  for (const [name, t] of [
    ['q', q],
    ['k', k],
    ['v', v],
  ] as const)
    noAlias(op, `lse and ${name}`, lse, t);
  const seg = options.segmentIds ? (options.segmentIds.data as Int32Array) : null;
  attentionF32(
    f32(op, 'q', q),
    f32(op, 'k', k),
    f32(op, 'v', v),
    f32(op, 'out', out),
    f32(op, 'lse', lse),
    seg,
    B,
    Tq,
    Tk,
    H,
    Hkv,
    D,
    options.scale,
    window ?? 0,
    softcap ?? 0,
  );
}

/** Gradients of attention; dq, dk, dv are overwritten. */
export function attentionBackward(
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  options: AttentionOptions,
): void {
  const op = 'attentionBackward';
  const { B, Tq, Tk, H, Hkv, D, window, softcap } = checkInputs(op, q, k, v, lse, options);
  attentionBackwardArgs(args, dout, q, k, v, out, lse, dq, dk, dv);
  const seg = options.segmentIds ? (options.segmentIds.data as Int32Array) : null;
  attentionBackwardF32(
    f32(op, 'dout', dout),
    f32(op, 'q', q),
    f32(op, 'k', k),
    f32(op, 'v', v),
    f32(op, 'out', out),
    f32(op, 'lse', lse),
    f32(op, 'dq', dq),
    f32(op, 'dk', dk),
    f32(op, 'dv', dv),
    seg,
    B,
    Tq,
    Tk,
    H,
    Hkv,
    D,
    options.scale,
    window ?? 0,
    softcap ?? 0,
  );
}
