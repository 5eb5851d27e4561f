import { uniformAt } from '../../tensor/rng.js';
import type { Tensor } from '../../tensor/tensor.js';
import { copyColumnsArgs, softcapOption } from '../shape-checks.js';
import { args, checks, expectSize, fail, floats, noAlias, sameFloatType } from './check.js';

/** out[i] = value (any dtype; integer tensors must receive an integer). */
export function fill(out: Tensor, value: number): void {
  if (out.dtype === 'i32' || out.dtype === 'u8') {
    if (!Number.isInteger(value))
      fail('fill', `${value} is not an integer for a ${out.dtype} tensor`);
  }
  out.data.fill(value);
}

/** dst = src: same dtype and element count (shape may differ, like a view). */
export function copy(src: Tensor, dst: Tensor): void {
  if (src.dtype !== dst.dtype) fail('copy', `src is ${src.dtype} but dst is ${dst.dtype}`);
  expectSize('copy', 'dst', dst, src.size);
  const s = src.data;
  const d = dst.data;
  if (s === d) return;
  // TypedArray.set handles overlapping ranges of one buffer like memmove.
  (d as Float64Array).set(s as Float64Array);
}

/** dst[:, dstCol .. dstCol+width) = src[:, srcCol .. srcCol+width). */
export function copyColumns(
  src: Tensor,
  srcCol: number,
  dst: Tensor,
  dstCol: number,
  width: number,
): void {
  const [n, a, b] = copyColumnsArgs(args, src, srcCol, dst, dstCol, width);
  const S = floats('copyColumns', 'src', src);
  const D = floats('copyColumns', 'dst', dst);
  for (let r = 0; r < n; r++)
    for (let j = 0; j < width; j++) D[r * b + dstCol + j] = S[r * a + srcCol + j]!;
}

/** out = a + b (out may alias a or b). */
export function add(a: Tensor, b: Tensor, out: Tensor): void {
  sameFloatType('add', { a, b, out });
  expectSize('add', 'b', b, a.size);
  expectSize('add', 'out', out, a.size);
  const A = a.data;
  const B = b.data;
  const O = out.data;
  for (let i = 0; i < O.length; i++) O[i] = A[i]! + B[i]!;
}

/** out = alpha·x (out may alias x). */
export function scale(x: Tensor, alpha: number, out: Tensor): void {
  sameFloatType('scale', { x, out });
  expectSize('scale', 'out', out, x.size);
  const X = x.data;
  const O = out.data;
  for (let i = 0; i < O.length; i++) O[i] = alpha * X[i]!;
}

/** y += alpha·x. */
export function axpy(alpha: number, x: Tensor, y: Tensor): void {
  sameFloatType('axpy', { x, y });
  expectSize('axpy', 'y', y, x.size);
  noAlias('axpy', 'x and y', x, y);
  const X = x.data;
  const Y = y.data;
  for (let i = 0; i < Y.length; i++) Y[i] = Y[i]! + alpha * X[i]!;
}

/** out[0] (+)= Σ x², summed in float64 in index order. */
export function sumOfSquares(x: Tensor, out: Tensor, accumulate: boolean): void {
  const X = floats('sumOfSquares', 'x', x);
  const O = floats('sumOfSquares', 'out', out);
  expectSize('sumOfSquares', 'out', out, 1);
  let s = 0;
  for (let i = 0; i < X.length; i++) s += X[i]! * X[i]!;
  O[0] = accumulate ? O[0]! + s : s;
}

/** out[0] (+)= Σ x, a float64 sum in element order. */
export function sum(x: Tensor, out: Tensor, accumulate: boolean): void {
  const X = floats('sum', 'x', x);
  const O = floats('sum', 'out', out);
  expectSize('sum', 'out', out, 1);
  let s = 0;
  for (let i = 0; i < X.length; i++) s += X[i]!;
  O[0] = accumulate ? O[0]! + s : s;
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** out = cap·tanh(x / cap). out may alias x (elementwise). */
export function softcap(x: Tensor, cap: number, out: Tensor): void {
  const op = 'softcap';
  sameFloatType(op, { x, out });
  expectSize(op, 'out', out, x.size);
  const c = softcapOption(checks, op, 'cap', cap)!;
  const X = x.data;
  const O = out.data;
  for (let i = 0; i < O.length; i++) O[i] = c * Math.tanh(X[i]! / c);
}

/** dx = dout·(1 - tanh²(x / cap)). dx may alias dout (elementwise). */
export function softcapBackward(dout: Tensor, x: Tensor, cap: number, dx: Tensor): void {
  const op = 'softcapBackward';
  sameFloatType(op, { dout, x, dx });
  expectSize(op, 'x', x, dout.size);
  expectSize(op, 'dx', dx, dout.size);
  const c = softcapOption(checks, op, 'cap', cap)!;
  const D = dout.data;
  const X = x.data;
  const G = dx.data;
  for (let i = 0; i < G.length; i++) G[i] = D[i]! * (1 - Math.tanh(X[i]! / c) ** 2);
}

/** out = silu(gate)·up, silu(g) = g·sigmoid(g). out may alias gate or up (elementwise). */
export function swiglu(gate: Tensor, up: Tensor, out: Tensor): void {
  sameFloatType('swiglu', { gate, up, out });
  expectSize('swiglu', 'up', up, gate.size);
  expectSize('swiglu', 'out', out, gate.size);
  const G = gate.data;
  const U = up.data;
  const O = out.data;
  for (let i = 0; i < O.length; i++) {
    const g = G[i]!;
    O[i] = g * sigmoid(g) * U[i]!;
  }
}

/**
 * dgate = dout·up·silu'(gate) with silu'(g) = σ(g)(1 + g(1 - σ(g))); dup = dout·silu(gate).
 * Reads gate and up for an element before writing it, so dgate/dup may alias gate/up.
 */
export function swigluBackward(
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
  dgate: Tensor,
  dup: Tensor,
): void {
  sameFloatType('swigluBackward', { dout, gate, up, dgate, dup });
  for (const [name, t] of [
    ['gate', gate],
    ['up', up],
    ['dgate', dgate],
    ['dup', dup],
  ] as const) {
    expectSize('swigluBackward', name, t, dout.size);
  }
  noAlias('swigluBackward', 'dgate and dup', dgate, dup);
  const D = dout.data;
  const G = gate.data;
  const U = up.data;
  const DG = dgate.data;
  const DU = dup.data;
  for (let i = 0; i < D.length; i++) {
    const g = G[i]!;
    const u = U[i]!;
    const d = D[i]!;
    const s = sigmoid(g);
    DG[i] = d * u * s * (1 + g * (1 - s));
    DU[i] = d * g * s;
  }
}

/** out = x·keep/(1-p), keep[i] = uniformAt(seed, i) ≥ p. p = 0 copies; out may alias x. */
export function dropout(x: Tensor, p: number, seed: number, out: Tensor): void {
  sameFloatType('dropout', { x, out });
  expectSize('dropout', 'out', out, x.size);
  if (!(p >= 0 && p < 1)) fail('dropout', `p must be in [0, 1), got ${p}`);
  if (!Number.isInteger(seed)) fail('dropout', `seed must be an integer, got ${seed}`);
  const X = x.data;
  const O = out.data;
  const keepScale = 1 / (1 - p);
  for (let i = 0; i < O.length; i++) O[i] = uniformAt(seed, i) >= p ? X[i]! * keepScale : 0;
}
