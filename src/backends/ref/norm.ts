import type { Tensor } from '../../tensor/tensor.js';
import { expectShape, fail, noAlias, sameFloatType } from './check.js';

function rowsAndWidth(op: string, x: Tensor): [number, number] {
  if (x.rank < 1) fail(op, 'x must have rank ≥ 1');
  const d = x.shape[x.rank - 1]!;
  return [d === 0 ? 0 : x.size / d, d];
}

/** out = x·rstd·weight per row, rstd = 1/sqrt(mean(x²) + eps), all in float64. out may alias x. */
export function rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor, rstd: Tensor): void {
  const op = 'rmsnorm';
  sameFloatType(op, { x, weight, out, rstd });
  const [n, d] = rowsAndWidth(op, x);
  expectShape(op, 'weight', weight, [d]);
  expectShape(op, 'out', out, x.shape);
  expectShape(op, 'rstd', rstd, [n]);
  if (!(eps >= 0)) fail(op, `eps must be ≥ 0, got ${eps}`);
  const X = x.data;
  const W = weight.data;
  const O = out.data;
  const R = rstd.data;
  for (let r = 0; r < n; r++) {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += X[r * d + j]! ** 2;
    const inv = 1 / Math.sqrt(ss / d + eps);
    R[r] = inv;
    for (let j = 0; j < d; j++) O[r * d + j] = X[r * d + j]! * inv * W[j]!;
  }
}

/**
 * With y = x·r·w and r = (mean(x²)+eps)^-½ (taken from `rstd` as stored):
 * dx_j = r·(w_j·g_j) - r³/d · x_j · Σ_k w_k g_k x_k;  dweight_j += Σ_rows g_j·x_j·r.
 */
export function rmsnormBackward(
  dout: Tensor,
  x: Tensor,
  weight: Tensor,
  rstd: Tensor,
  dx: Tensor,
  dweight: Tensor | null,
): void {
  const op = 'rmsnormBackward';
  sameFloatType(
    op,
    dweight ? { dout, x, weight, rstd, dx, dweight } : { dout, x, weight, rstd, dx },
  );
  const [n, d] = rowsAndWidth(op, x);
  expectShape(op, 'dout', dout, x.shape);
  expectShape(op, 'weight', weight, [d]);
  expectShape(op, 'rstd', rstd, [n]);
  expectShape(op, 'dx', dx, x.shape);
  noAlias(op, 'dx and x', dx, x);
  if (dweight) expectShape(op, 'dweight', dweight, [d]);
  const G = dout.data;
  const X = x.data;
  const W = weight.data;
  const R = rstd.data;
  const DX = dx.data;
  const DW = dweight?.data;
  const dwAcc = new Float64Array(d);
  for (let r = 0; r < n; r++) {
    const inv = R[r]!;
    let dot = 0;
    for (let j = 0; j < d; j++) dot += W[j]! * G[r * d + j]! * X[r * d + j]!;
    const c = (inv * inv * inv * dot) / d;
    for (let j = 0; j < d; j++) {
      const i = r * d + j;
      dwAcc[j]! += G[i]! * X[i]! * inv;
      DX[i] = inv * W[j]! * G[i]! - c * X[i]!;
    }
  }
  if (DW) for (let j = 0; j < d; j++) DW[j] = DW[j]! + dwAcc[j]!;
}
