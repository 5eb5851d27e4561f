import type { RopeLayout } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { expectRank, expectShape, fail, floats, ints, sameFloatType } from './check.js';

/**
 * Rotary embedding of x [B, T, H, D] with tables [maxPos, R/2], R ≤ D: pair p (frequency index
 * p < R/2) is rotated by the angle whose cos/sin are cos[pos, p], sin[pos, p]. 'half' pairs
 * elements (p, p + R/2) (HF rotate_half over the first R dims); 'interleaved' pairs (2p, 2p+1).
 * Dimensions R..D pass through unchanged (partial rotary, Phi-4-mini's partial_rotary_factor).
 * inverse rotates by -angle, which is the backward pass (the rotation is orthogonal). out may
 * alias x: each pair is read fully before it is written.
 */
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
  sameFloatType(op, { x, out });
  const C = floats(op, 'cos', cos);
  const S = floats(op, 'sin', sin);
  const P = ints(op, 'positions', positions);
  expectRank(op, 'x', x, 4);
  const [B, T, H, D] = x.shape as [number, number, number, number];
  if (D % 2 !== 0) fail(op, `head dim ${D} must be even`);
  expectShape(op, 'out', out, x.shape);
  expectShape(op, 'positions', positions, [B * T]);
  expectRank(op, 'cos', cos, 2);
  const maxPos = cos.shape[0]!;
  const half = cos.shape[1]!;
  if (!(half >= 1 && half <= D / 2)) expectShape(op, 'cos', cos, [maxPos, D / 2]);
  expectShape(op, 'sin', sin, [maxPos, half]);
  if (layout !== 'half' && layout !== 'interleaved') fail(op, `unknown layout '${String(layout)}'`);
  const X = x.data;
  const O = out.data;
  const sign = inverse ? -1 : 1;
  for (let bt = 0; bt < B * T; bt++) {
    const pos = P[bt]!;
    if (pos < 0 || pos >= maxPos)
      fail(op, `position ${pos} at index ${bt} is outside the table [0, ${maxPos})`);
    for (let h = 0; h < H; h++) {
      const base = (bt * H + h) * D;
      for (let p = 0; p < half; p++) {
        const c = C[pos * half + p]!;
        const s = sign * S[pos * half + p]!;
        const i0 = layout === 'half' ? base + p : base + 2 * p;
        const i1 = layout === 'half' ? base + p + half : base + 2 * p + 1;
        const a = X[i0]!;
        const b = X[i1]!;
        O[i0] = a * c - b * s;
        O[i1] = b * c + a * s;
      }
      if (O !== X) for (let i = 2 * half; i < D; i++) O[base + i] = X[base + i]!;
    }
  }
}
