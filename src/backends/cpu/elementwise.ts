import type { Tensor } from '../../tensor/tensor.js';
import { copyColumnsArgs, softcapOption } from '../shape-checks.js';
import {
  args,
  checks,
  expectFinite,
  expectSize,
  f32,
  fail,
  noAlias,
  sameOrDisjoint,
} from './checks.js';
import { kernel } from './native.js';

type Fill = (out: Float32Array, n: number, value: number) => void;
type Copy = (src: Float32Array, dst: Float32Array, n: number) => void;
type Binary = (a: Float32Array, b: Float32Array, out: Float32Array, n: number) => void;
type Scale = (x: Float32Array, alpha: number, out: Float32Array, n: number) => void;
type Axpy = (alpha: number, x: Float32Array, y: Float32Array, n: number) => void;
type SumOfSquares = (x: Float32Array, out: Float32Array, n: number, accumulate: boolean) => void;
type SwigluBackward = (
  dout: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  dgate: Float32Array,
  dup: Float32Array,
  n: number,
) => void;
type Dropout = (x: Float32Array, p: number, seed: number, out: Float32Array, n: number) => void;

const fillF32 = kernel<Fill>('fillF32');
const copyF32 = kernel<Copy>('copyF32');
const addF32 = kernel<Binary>('addF32');
const scaleF32 = kernel<Scale>('scaleF32');
const axpyF32 = kernel<Axpy>('axpyF32');
const sumOfSquaresF32 = kernel<SumOfSquares>('sumOfSquaresF32');
const swigluF32 = kernel<Binary>('swigluF32');
const swigluBackwardF32 = kernel<SwigluBackward>('swigluBackwardF32');
const dropoutF32 = kernel<Dropout>('dropoutF32');
const softcapF32 =
  kernel<(x: Float32Array, out: Float32Array, n: number, cap: number) => void>('softcapF32');
const softcapBackwardF32 =
  kernel<(dout: Float32Array, x: Float32Array, dx: Float32Array, n: number, cap: number) => void>(
    'softcapBackwardF32',
  );

/** out = cap·tanh(x / cap); out may alias x. */
export function softcap(x: Tensor, cap: number, out: Tensor): void {
  const op = 'softcap';
  const c = softcapOption(checks, op, 'cap', cap)!;
  const xs = f32(op, 'x', x);
  const o = f32(op, 'out', out);
  expectSize(op, 'out', out, x.size);
  sameOrDisjoint(op, 'out and x', out, x);
  softcapF32(xs, o, x.size, c);
}

/** dx = dout·(1 - tanh²(x / cap)); dx may alias dout. */
export function softcapBackward(dout: Tensor, x: Tensor, cap: number, dx: Tensor): void {
  const op = 'softcapBackward';
  const c = softcapOption(checks, op, 'cap', cap)!;
  const d = f32(op, 'dout', dout);
  const xs = f32(op, 'x', x);
  const g = f32(op, 'dx', dx);
  expectSize(op, 'x', x, dout.size);
  expectSize(op, 'dx', dx, dout.size);
  sameOrDisjoint(op, 'dx and dout', dx, dout);
  sameOrDisjoint(op, 'dx and x', dx, x);
  softcapBackwardF32(d, xs, g, dout.size, c);
}

/** out[i] = value. f32 runs natively; other dtypes (storage only here) fill through the typed array. */
export function fill(out: Tensor, value: number): void {
  if (typeof value !== 'number') fail('fill', 'value must be a number');
  if (out.dtype === 'f32') {
    fillF32(out.data as Float32Array, out.size, value);
    return;
  }
  if ((out.dtype === 'i32' || out.dtype === 'u8') && !Number.isInteger(value)) {
    fail('fill', `${value} is not an integer for a ${out.dtype} tensor`);
  }
  out.data.fill(value);
}

/** dst = src (same dtype and element count; the shapes may differ, like a view). */
/**
 * dst[:, dstCol .. dstCol+width) = src[:, srcCol .. srcCol+width): one TypedArray copy (a memcpy)
 * per row of the addon's host-visible memory; a few rows of a projection output per step.
 */
export function copyColumns(
  src: Tensor,
  srcCol: number,
  dst: Tensor,
  dstCol: number,
  width: number,
): void {
  const [n, a, b] = copyColumnsArgs(args, src, srcCol, dst, dstCol, width);
  const S = f32('copyColumns', 'src', src);
  const D = f32('copyColumns', 'dst', dst);
  for (let r = 0; r < n; r++)
    D.set(S.subarray(r * a + srcCol, r * a + srcCol + width), r * b + dstCol);
}

export function copy(src: Tensor, dst: Tensor): void {
  if (src.dtype !== dst.dtype) fail('copy', `src is ${src.dtype} but dst is ${dst.dtype}`);
  expectSize('copy', 'dst', dst, src.size);
  if (src.dtype === 'f32') {
    copyF32(src.data as Float32Array, dst.data as Float32Array, src.size);
    return;
  }
  // TypedArray.set is a memmove for the other dtypes.
  (dst.data as Int32Array).set(src.data as Int32Array);
}

export function add(a: Tensor, b: Tensor, out: Tensor): void {
  const x = f32('add', 'a', a);
  const y = f32('add', 'b', b);
  const o = f32('add', 'out', out);
  expectSize('add', 'b', b, a.size);
  expectSize('add', 'out', out, a.size);
  sameOrDisjoint('add', 'out and a', out, a);
  sameOrDisjoint('add', 'out and b', out, b);
  addF32(x, y, o, a.size);
}

export function scale(x: Tensor, alpha: number, out: Tensor): void {
  expectFinite('scale', 'alpha', alpha);
  const xs = f32('scale', 'x', x);
  const o = f32('scale', 'out', out);
  expectSize('scale', 'out', out, x.size);
  sameOrDisjoint('scale', 'out and x', out, x);
  scaleF32(xs, alpha, o, x.size);
}

export function axpy(alpha: number, x: Tensor, y: Tensor): void {
  expectFinite('axpy', 'alpha', alpha);
  const xs = f32('axpy', 'x', x);
  const ys = f32('axpy', 'y', y);
  expectSize('axpy', 'y', y, x.size);
  sameOrDisjoint('axpy', 'y and x', y, x);
  axpyF32(alpha, xs, ys, x.size);
}

export function sumOfSquares(x: Tensor, out: Tensor, accumulate: boolean): void {
  const xs = f32('sumOfSquares', 'x', x);
  const o = f32('sumOfSquares', 'out', out);
  expectSize('sumOfSquares', 'out', out, 1);
  noAlias('sumOfSquares', 'out and x', out, x);
  sumOfSquaresF32(xs, o, x.size, accumulate);
}

/**
 * out[0] (+)= Σ x in float64, element order: a sequential loop here rather than a threaded native
 * reduction, because the contract fixes the summation order (the same bits as ref) and its uses
 * are small (a batch's per-row losses).
 */
export function sum(x: Tensor, out: Tensor, accumulate: boolean): void {
  const xs = f32('sum', 'x', x);
  const o = f32('sum', 'out', out);
  expectSize('sum', 'out', out, 1);
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  o[0] = accumulate ? o[0]! + s : s;
}

export function swiglu(gate: Tensor, up: Tensor, out: Tensor): void {
  const g = f32('swiglu', 'gate', gate);
  const u = f32('swiglu', 'up', up);
  const o = f32('swiglu', 'out', out);
  expectSize('swiglu', 'up', up, gate.size);
  expectSize('swiglu', 'out', out, gate.size);
  sameOrDisjoint('swiglu', 'out and gate', out, gate);
  sameOrDisjoint('swiglu', 'out and up', out, up);
  swigluF32(g, u, o, gate.size);
}

export function swigluBackward(
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
  dgate: Tensor,
  dup: Tensor,
): void {
  const op = 'swigluBackward';
  const d = f32(op, 'dout', dout);
  const g = f32(op, 'gate', gate);
  const u = f32(op, 'up', up);
  const dg = f32(op, 'dgate', dgate);
  const du = f32(op, 'dup', dup);
  const n = dout.size;
  for (const [name, t] of [
    ['gate', gate],
    ['up', up],
    ['dgate', dgate],
    ['dup', dup],
  ] as const)
    expectSize(op, name, t, n);
  noAlias(op, 'dgate and dup', dgate, dup);
  for (const [name, t] of [
    ['dout', dout],
    ['gate', gate],
    ['up', up],
  ] as const) {
    sameOrDisjoint(op, `dgate and ${name}`, dgate, t);
    sameOrDisjoint(op, `dup and ${name}`, dup, t);
  }
  swigluBackwardF32(d, g, u, dg, du, n);
}

export function dropout(x: Tensor, p: number, seed: number, out: Tensor): void {
  if (!(p >= 0 && p < 1)) fail('dropout', `p must be in [0, 1), got ${p}`);
  if (!Number.isInteger(seed)) fail('dropout', `seed must be an integer, got ${seed}`);
  const xs = f32('dropout', 'x', x);
  const o = f32('dropout', 'out', out);
  expectSize('dropout', 'out', out, x.size);
  if (x.size > 2 ** 32) fail('dropout', 'more than 2^32 elements');
  sameOrDisjoint('dropout', 'out and x', out, x);
  // rng.ts hashes `seed >>> 0`; pass the same u32.
  dropoutF32(xs, p, seed >>> 0, o, x.size);
}
