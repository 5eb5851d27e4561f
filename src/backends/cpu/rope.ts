import type { RopeLayout } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { expectRank, expectShape, expectSize, f32, fail, i32, sameOrDisjoint, callNative } from './checks.js';
import { kernel } from './native.js';

type Rope = (
  x: Float32Array, positions: Int32Array, cos: Float32Array, sin: Float32Array, out: Float32Array,
  rows: number, heads: number, dim: number, maxPos: number, interleaved: boolean, inverse: boolean,
) => void;

const ropeF32 = kernel<Rope>('ropeF32');

/** x [B, T, H, D] rotated at positions (i32 [B·T]); positions outside the tables throw. */
export function rope(
  x: Tensor, positions: Tensor, cos: Tensor, sin: Tensor, layout: RopeLayout, inverse: boolean, out: Tensor,
): void {
  const op = 'rope';
  if (layout !== 'half' && layout !== 'interleaved') fail(op, `unknown layout '${String(layout)}'`);
  expectRank(op, 'x', x, 4);
  const [B, T, H, D] = x.shape as [number, number, number, number];
  if (D % 2 !== 0) fail(op, `head dim must be even, got ${D}`);
  expectSize(op, 'positions', positions, B * T);
  expectRank(op, 'cos', cos, 2);
  const maxPos = cos.shape[0]!;
  expectShape(op, 'cos', cos, [maxPos, D / 2]);
  expectShape(op, 'sin', sin, [maxPos, D / 2]);
  expectShape(op, 'out', out, x.shape);
  sameOrDisjoint(op, 'out and x', out, x);
  callNative(op, () =>
    ropeF32(
      f32(op, 'x', x), i32(op, 'positions', positions), f32(op, 'cos', cos), f32(op, 'sin', sin), f32(op, 'out', out),
      B * T, H, D, maxPos, layout === 'interleaved', inverse,
    ),
  );
}
