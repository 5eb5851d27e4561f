import type { AttentionOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { type AttentionDims, attentionDims } from '../shape-checks.js';
import { checks, expectShape, ints, noAlias, sameFloatType } from './check.js';

/**
 * Reference causal grouped-query attention. Clarity first: each query's full score row is held
 * (the contract's "never a full T×T matrix" is about the fast kernels' memory; one row is O(Tk)).
 */
type Dims = AttentionDims;

function checkDims(
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions,
): { dims: Dims; seg: Int32Array | null } {
  const dims = attentionDims(checks, op, q, k, v, options);
  const seg = options.segmentIds ? ints(op, 'segmentIds', options.segmentIds) : null;
  return { dims, seg };
}

/**
 * Keys query i may see: j ≤ its absolute position p, j > p - window with a sliding window
 * (docs/attention.md), and (with segment ids) the same segment.
 */
function visible(dims: Dims, seg: Int32Array | null, b: number, i: number, j: number): boolean {
  const pos = dims.Tk - dims.Tq + i;
  if (j > pos) return false;
  if (dims.window !== null && j <= pos - dims.window) return false;
  return !seg || seg[b * dims.Tk + j] === seg[b * dims.Tk + pos];
}

const qIndex = (d: Dims, b: number, i: number, h: number) => ((b * d.Tq + i) * d.H + h) * d.D;
const kIndex = (d: Dims, b: number, j: number, g: number) => ((b * d.Tk + j) * d.Hkv + g) * d.D;

/**
 * Scaled scores of query (b, i, h) against every key (−∞ where masked), soft-capped
 * (cap·tanh(s / cap)) when the options ask.
 */
function scoreRow(
  d: Dims,
  seg: Int32Array | null,
  Q: ArrayLike<number>,
  K: ArrayLike<number>,
  scale: number,
  b: number,
  i: number,
  h: number,
  row: Float64Array,
): void {
  const g = Math.floor(h / (d.H / d.Hkv));
  const qi = qIndex(d, b, i, h);
  for (let j = 0; j < d.Tk; j++) {
    if (!visible(d, seg, b, i, j)) {
      row[j] = -Infinity;
      continue;
    }
    const kj = kIndex(d, b, j, g);
    let s = 0;
    for (let e = 0; e < d.D; e++) s += Q[qi + e]! * K[kj + e]!;
    row[j] = d.softcap === null ? s * scale : d.softcap * Math.tanh((s * scale) / d.softcap);
  }
}

export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  options: AttentionOptions,
): void {
  const op = 'attention';
  sameFloatType(op, { q, k, v, out, lse });
  const { dims: d, seg } = checkDims(op, q, k, v, options);
  expectShape(op, 'out', out, q.shape);
  expectShape(op, 'lse', lse, [d.B, d.H, d.Tq]);
  for (const [name, t] of [
    ['q', q],
    ['k', k],
    ['v', v],
  ] as const)
    noAlias(op, `${name} and out`, t, out);
  const Q = q.data;
  const K = k.data;
  const V = v.data;
  const O = out.data;
  const L = lse.data;
  const row = new Float64Array(d.Tk);
  const acc = new Float64Array(d.D);
  for (let b = 0; b < d.B; b++) {
    for (let h = 0; h < d.H; h++) {
      const g = Math.floor(h / (d.H / d.Hkv));
      for (let i = 0; i < d.Tq; i++) {
        scoreRow(d, seg, Q, K, options.scale, b, i, h, row);
        let m = -Infinity;
        for (let j = 0; j < d.Tk; j++) m = Math.max(m, row[j]!);
        let sum = 0;
        for (let j = 0; j < d.Tk; j++) sum += Math.exp(row[j]! - m);
        const l = m + Math.log(sum);
        acc.fill(0);
        for (let j = 0; j < d.Tk; j++) {
          const p = Math.exp(row[j]! - l);
          if (p === 0) continue;
          const vj = kIndex(d, b, j, g);
          for (let e = 0; e < d.D; e++) acc[e]! += p * V[vj + e]!;
        }
        const oi = qIndex(d, b, i, h);
        for (let e = 0; e < d.D; e++) O[oi + e] = acc[e]!;
        L[(b * d.H + h) * d.Tq + i] = l;
      }
    }
  }
}

/**
 * With P = exp(S - lse): dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ∘ (dP - rowsum(dO ∘ O)), dQ = scale·dS·K,
 * dK = scale·dSᵀ·Q (summed over the query heads sharing a key/value head). With a soft-cap
 * S = cap·tanh(S₀ / cap), so dS₀ = dS ∘ (1 - (S / cap)²).
 */
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
  sameFloatType(op, { dout, q, k, v, out, lse, dq, dk, dv });
  const { dims: d, seg } = checkDims(op, q, k, v, options);
  expectShape(op, 'dout', dout, q.shape);
  expectShape(op, 'out', out, q.shape);
  expectShape(op, 'lse', lse, [d.B, d.H, d.Tq]);
  expectShape(op, 'dq', dq, q.shape);
  expectShape(op, 'dk', dk, k.shape);
  expectShape(op, 'dv', dv, v.shape);
  const inputs = { dout, q, k, v, out, lse };
  for (const [gname, grad] of [
    ['dq', dq],
    ['dk', dk],
    ['dv', dv],
  ] as const) {
    for (const [name, t] of Object.entries(inputs)) noAlias(op, `${gname} and ${name}`, grad, t);
  }
  const DO = dout.data;
  const Q = q.data;
  const K = k.data;
  const V = v.data;
  const O = out.data;
  const L = lse.data;
  const dQ = new Float64Array(q.size);
  const dK = new Float64Array(k.size);
  const dV = new Float64Array(v.size);
  const row = new Float64Array(d.Tk);
  const scale = options.scale;
  for (let b = 0; b < d.B; b++) {
    for (let h = 0; h < d.H; h++) {
      const g = Math.floor(h / (d.H / d.Hkv));
      for (let i = 0; i < d.Tq; i++) {
        scoreRow(d, seg, Q, K, scale, b, i, h, row);
        const l = L[(b * d.H + h) * d.Tq + i]!;
        const qi = qIndex(d, b, i, h);
        let rowDot = 0;
        for (let e = 0; e < d.D; e++) rowDot += DO[qi + e]! * O[qi + e]!;
        for (let j = 0; j < d.Tk; j++) {
          // Masked keys get nothing, even from a query whose lse is not finite.
          if (row[j] === -Infinity) continue;
          const p = Math.exp(row[j]! - l);
          if (p === 0) continue;
          const kj = kIndex(d, b, j, g);
          let dp = 0;
          for (let e = 0; e < d.D; e++) {
            dV[kj + e]! += p * DO[qi + e]!;
            dp += DO[qi + e]! * V[kj + e]!;
          }
          const capGrad = d.softcap === null ? 1 : 1 - (row[j]! / d.softcap) ** 2;
          const ds = p * (dp - rowDot) * capGrad * scale;
          for (let e = 0; e < d.D; e++) {
            dQ[qi + e]! += ds * K[kj + e]!;
            dK[kj + e]! += ds * Q[qi + e]!;
          }
        }
      }
    }
  }
  dq.data.set(dQ);
  dk.data.set(dK);
  dv.data.set(dV);
}
