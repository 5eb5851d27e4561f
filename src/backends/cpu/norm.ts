import type { Tensor } from '../../tensor/tensor.js';
import { rmsnormArgs, rmsnormBackwardArgs } from '../shape-checks.js';
import { args, f32 } from './checks.js';
import { kernel } from './native.js';

type Rmsnorm = (
  x: Float32Array,
  weight: Float32Array,
  out: Float32Array,
  rstd: Float32Array,
  n: number,
  d: number,
  eps: number,
) => void;
type RmsnormBackward = (
  dout: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  rstd: Float32Array,
  dx: Float32Array,
  dweight: Float32Array | null,
  n: number,
  d: number,
) => void;

const rmsnormF32 = kernel<Rmsnorm>('rmsnormF32');
const rmsnormBackwardF32 = kernel<RmsnormBackward>('rmsnormBackwardF32');

export function rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor, rstd: Tensor): void {
  const op = 'rmsnorm';
  const [n, d] = rmsnormArgs(args, x, weight, eps, out, rstd);
  rmsnormF32(
    f32(op, 'x', x),
    f32(op, 'weight', weight),
    f32(op, 'out', out),
    f32(op, 'rstd', rstd),
    n,
    d,
    eps,
  );
}

export function rmsnormBackward(
  dout: Tensor,
  x: Tensor,
  weight: Tensor,
  rstd: Tensor,
  dx: Tensor,
  dweight: Tensor | null,
): void {
  const op = 'rmsnormBackward';
  const [n, d] = rmsnormBackwardArgs(args, dout, x, weight, rstd, dx, dweight);
  rmsnormBackwardF32(
    f32(op, 'dout', dout),
    f32(op, 'x', x),
    f32(op, 'weight', weight),
    f32(op, 'rstd', rstd),
    f32(op, 'dx', dx),
    dweight ? f32(op, 'dweight', dweight) : null,
    n,
    d,
  );
}
