/**
 * Argument validation shared by the reference kernels: every op checks dtypes and shapes up front
 * and throws a message naming the op and the offending argument.
 */
import type { Tensor } from '../../tensor/tensor.js';
import { hostOverlap } from '../host-backend.js';
import { type ArgChecks, shapeChecks } from '../shape-checks.js';

export type FloatArray = Float32Array | Float64Array;

/** The shape checks every backend shares, with this backend's error prefix. */
export const checks = shapeChecks('ref');
export const { fail, expectShape, expectSize, expectRank } = checks;

/** The elements of a float (f32/f64) tensor. */
export function floats(op: string, name: string, t: Tensor): FloatArray {
  if (t.dtype !== 'f32' && t.dtype !== 'f64')
    fail(op, `${name} must be f32 or f64, got ${t.dtype}`);
  return t.data as FloatArray;
}

export function ints(op: string, name: string, t: Tensor): Int32Array {
  if (t.dtype !== 'i32') fail(op, `${name} must be i32, got ${t.dtype}`);
  return t.data as Int32Array;
}

export function bytes(op: string, name: string, t: Tensor): Uint8Array {
  if (t.dtype !== 'u8') fail(op, `${name} must be u8, got ${t.dtype}`);
  return t.data as Uint8Array;
}

/** All float tensors of one op share a dtype (no silent mixed precision). */
export function sameFloatType(op: string, tensors: Record<string, Tensor>): void {
  let first: [string, Tensor] | null = null;
  for (const [name, t] of Object.entries(tensors)) {
    floats(op, name, t);
    if (!first) first = [name, t];
    else if (t.dtype !== first[1].dtype)
      fail(op, `${name} is ${t.dtype} but ${first[0]} is ${first[1].dtype}`);
  }
}

/** Two tensors must not share memory unless the op allows it. */
export function noAlias(op: string, names: string, a: Tensor, b: Tensor): void {
  if (hostOverlap(a, b)) fail(op, `${names} must not alias`);
}

/** Allowed aliasing is exact (same elements): a partial overlap is a caller's mistake. */
export function sameOrDisjoint(op: string, names: string, a: Tensor, b: Tensor): void {
  const x = a.data;
  const y = b.data;
  if (hostOverlap(a, b) && !(x.byteOffset === y.byteOffset && x.byteLength === y.byteLength))
    fail(op, `${names} overlap partially (they may only be the same tensor)`);
}

/** The shared argument rules (shape-checks.ts) bound to this backend's checks. */
export const args: ArgChecks = { ...checks, noAlias, sameOrDisjoint };
