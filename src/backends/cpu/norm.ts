import type { Tensor } from '../../tensor/tensor.js';
import { expectFinite, expectShape, expectSize, f32, fail, noAlias, sameOrDisjoint } from './checks.js';
import { kernel } from './native.js';

type Rmsnorm = (
  x: Float32Array, weight: Float32Array, out: Float32Array, rstd: Float32Array, n: number, d: number, eps: number,
) => void;
type RmsnormBackward = (
  dout: Float32Array, x: Float32Array, weight: Float32Array, rstd: Float32Array,
  dx: Float32Array, dweight: Float32Array | null, n: number, d: number,
) => void;

const rmsnormF32 = kernel<Rmsnorm>('rmsnormF32');
const rmsnormBackwardF32 = kernel<RmsnormBackward>('rmsnormBackwardF32');

/** Rows of x [n, d] (any rank: the last dimension is d). */
function rowsOf(op: string, x: Tensor): [number, number] {
  if (x.rank < 1) fail(op, 'x must have at least one dimension');
  const d = x.shape[x.rank - 1]!;
  return [d === 0 ? 0 : x.size / d, d];
}

export function rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor, rstd: Tensor): void {
  const op = 'rmsnorm';
  expectFinite(op, 'eps', eps);
  if (eps < 0) fail(op, `eps must be ≥ 0, got ${eps}`);
  const [n, d] = rowsOf(op, x);
  expectShape(op, 'weight', weight, [d]);
  expectShape(op, 'out', out, x.shape);
  expectSize(op, 'rstd', rstd, n);
  sameOrDisjoint(op, 'out and x', out, x);
  noAlias(op, 'out and weight', out, weight);
  noAlias(op, 'rstd and out', rstd, out);
  noAlias(op, 'rstd and x', rstd, x);
  rmsnormF32(f32(op, 'x', x), f32(op, 'weight', weight), f32(op, 'out', out), f32(op, 'rstd', rstd), n, d, eps);
}

export function rmsnormBackward(
  dout: Tensor, x: Tensor, weight: Tensor, rstd: Tensor, dx: Tensor, dweight: Tensor | null,
): void {
  const op = 'rmsnormBackward';
  const [n, d] = rowsOf(op, x);
  expectShape(op, 'dout', dout, x.shape);
  expectShape(op, 'weight', weight, [d]);
  expectSize(op, 'rstd', rstd, n);
  expectShape(op, 'dx', dx, x.shape);
  // dx may be dout itself (each element of dout is read before dx overwrites it).
  sameOrDisjoint(op, 'dx and dout', dx, dout);
  for (const [name, t] of [['x', x], ['weight', weight], ['rstd', rstd]] as const) noAlias(op, `dx and ${name}`, dx, t);
  if (dweight) {
    expectShape(op, 'dweight', dweight, [d]);
    for (const [name, t] of [['dout', dout], ['x', x], ['weight', weight], ['rstd', rstd], ['dx', dx]] as const) {
      noAlias(op, `dweight and ${name}`, dweight, t);
    }
  }
  rmsnormBackwardF32(
    f32(op, 'dout', dout), f32(op, 'x', x), f32(op, 'weight', weight), f32(op, 'rstd', rstd), f32(op, 'dx', dx),
    dweight ? f32(op, 'dweight', dweight) : null, n, d,
  );
}
