/**
 * tanh-approximation GELU and GeGLU (Gemma's gated MLP), in float64.
 *
 * gelu_tanh(x) = 0.5·x·(1 + tanh(z)), z = √(2/π)·(x + 0.044715·x³). Since 0.5·(1 + tanh(z)) is
 * σ(2z), this is x·σ(2z): the form every backend computes, because it needs no tanh (which some
 * GPU drivers evaluate with overflow for large |z|) and saturates to 0 and x without cancellation.
 * Its derivative: σ(2z) + x·2σ(2z)(1 - σ(2z))·z', z' = √(2/π)·(1 + 3·0.044715·x²).
 */
import type { Tensor } from '../../tensor/tensor.js';
import { elementwiseArgs } from '../shape-checks.js';
import { args, sameFloatType } from './check.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const CUBIC = 0.044715;

/** gelu_tanh(x) and its derivative at x. */
export function geluTanhAt(x: number): [value: number, slope: number] {
  const z = SQRT_2_OVER_PI * (x + CUBIC * x * x * x);
  const s = 1 / (1 + Math.exp(-2 * z));
  // x·σ' is 0 where σ saturated (x³ may overflow to ±Infinity, whose product with 0 is NaN).
  const ds = s === 0 || s === 1 ? 0 : 2 * s * (1 - s) * SQRT_2_OVER_PI * (1 + 3 * CUBIC * x * x);
  return [x * s, s + x * ds];
}

export function geluTanh(x: Tensor, out: Tensor): void {
  sameFloatType('geluTanh', { x, out });
  const n = elementwiseArgs(args, 'geluTanh', [['x', x]], [['out', out]]);
  const X = x.data;
  const O = out.data;
  for (let i = 0; i < n; i++) O[i] = geluTanhAt(X[i]!)[0];
}

export function geluTanhBackward(dout: Tensor, x: Tensor, dx: Tensor): void {
  const op = 'geluTanhBackward';
  sameFloatType(op, { dout, x, dx });
  const n = elementwiseArgs(
    args,
    op,
    [
      ['dout', dout],
      ['x', x],
    ],
    [['dx', dx]],
  );
  const D = dout.data;
  const X = x.data;
  const DX = dx.data;
  for (let i = 0; i < n; i++) DX[i] = D[i]! * geluTanhAt(X[i]!)[1];
}

export function geglu(gate: Tensor, up: Tensor, out: Tensor): void {
  sameFloatType('geglu', { gate, up, out });
  const n = elementwiseArgs(
    args,
    'geglu',
    [
      ['gate', gate],
      ['up', up],
    ],
    [['out', out]],
  );
  const G = gate.data;
  const U = up.data;
  const O = out.data;
  for (let i = 0; i < n; i++) O[i] = geluTanhAt(G[i]!)[0] * U[i]!;
}

/** dgate = dout·up·gelu_tanh'(gate), dup = dout·gelu_tanh(gate); both may overwrite their inputs. */
export function gegluBackward(
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
  dgate: Tensor,
  dup: Tensor,
): void {
  const op = 'gegluBackward';
  sameFloatType(op, { dout, gate, up, dgate, dup });
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
  const D = dout.data;
  const G = gate.data;
  const U = up.data;
  const DG = dgate.data;
  const DU = dup.data;
  for (let i = 0; i < n; i++) {
    const [value, slope] = geluTanhAt(G[i]!);
    const d = D[i]!;
    const u = U[i]!;
    DG[i] = d * u * slope;
    DU[i] = d * value;
  }
}
