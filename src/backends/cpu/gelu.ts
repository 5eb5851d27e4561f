/** tanh-approximation GELU and GeGLU on the native addon (native/src/gelu.cc). */
import type { Tensor } from '../../tensor/tensor.js';
import { elementwiseArgs } from '../shape-checks.js';
import { args, f32 } from './checks.js';
import { kernel } from './native.js';

type Unary = (x: Float32Array, out: Float32Array, n: number) => void;
type Binary = (a: Float32Array, b: Float32Array, out: Float32Array, n: number) => void;
type GatedBackward = (
  dout: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  dgate: Float32Array,
  dup: Float32Array,
  n: number,
) => void;

const geluTanhF32 = kernel<Unary>('geluTanhF32');
const geluTanhBackwardF32 = kernel<Binary>('geluTanhBackwardF32');
const gegluF32 = kernel<Binary>('gegluF32');
const gegluBackwardF32 = kernel<GatedBackward>('gegluBackwardF32');

export function geluTanh(x: Tensor, out: Tensor): void {
  const xs = f32('geluTanh', 'x', x);
  const o = f32('geluTanh', 'out', out);
  const n = elementwiseArgs(args, 'geluTanh', [['x', x]], [['out', out]]);
  geluTanhF32(xs, o, n);
}

export function geluTanhBackward(dout: Tensor, x: Tensor, dx: Tensor): void {
  const op = 'geluTanhBackward';
  const d = f32(op, 'dout', dout);
  const xs = f32(op, 'x', x);
  const o = f32(op, 'dx', dx);
  const n = elementwiseArgs(
    args,
    op,
    [
      ['dout', dout],
      ['x', x],
    ],
    [['dx', dx]],
  );
  geluTanhBackwardF32(d, xs, o, n);
}

export function geglu(gate: Tensor, up: Tensor, out: Tensor): void {
  const g = f32('geglu', 'gate', gate);
  const u = f32('geglu', 'up', up);
  const o = f32('geglu', 'out', out);
  const n = elementwiseArgs(
    args,
    'geglu',
    [
      ['gate', gate],
      ['up', up],
    ],
    [['out', out]],
  );
  gegluF32(g, u, o, n);
}

export function gegluBackward(
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
  dgate: Tensor,
  dup: Tensor,
): void {
  const op = 'gegluBackward';
  const d = f32(op, 'dout', dout);
  const g = f32(op, 'gate', gate);
  const u = f32(op, 'up', up);
  const dg = f32(op, 'dgate', dgate);
  const du = f32(op, 'dup', dup);
  const n = elementwiseArgs(
    args,
    op,
    [
      ['dout', dout],
      ['gate', gate],
      ['up', up],
    ],
    [
      ['dgate', dgate],
      ['dup', dup],
    ],
  );
  gegluBackwardF32(d, g, u, dg, du, n);
}
