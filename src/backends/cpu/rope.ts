import type { RopeLayout } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { ropeArgs } from '../shape-checks.js';
import { args, callNative, f32, i32 } from './checks.js';
import { kernel } from './native.js';

type Rope = (
  x: Float32Array,
  positions: Int32Array,
  cos: Float32Array,
  sin: Float32Array,
  out: Float32Array,
  rows: number,
  heads: number,
  dim: number,
  maxPos: number,
  interleaved: boolean,
  inverse: boolean,
  half: number,
) => void;

const ropeF32 = kernel<Rope>('ropeF32');

/** x [B, T, H, D] rotated at positions (i32 [B·T]); positions outside the tables throw. */
export function rope(
  x: Tensor,
  positions: Tensor,
  cos: Tensor,
  sin: Tensor,
  layout: RopeLayout,
  inverse: boolean,
  out: Tensor,
): void {
  const op = 'rope';
  const { B, T, H, D, maxPos, half } = ropeArgs(args, x, positions, cos, sin, layout, out);
  callNative(op, () =>
    ropeF32(
      f32(op, 'x', x),
      i32(op, 'positions', positions),
      f32(op, 'cos', cos),
      f32(op, 'sin', sin),
      f32(op, 'out', out),
      B * T,
      H,
      D,
      maxPos,
      layout === 'interleaved',
      inverse,
      half,
    ),
  );
}
