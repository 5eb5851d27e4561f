/**
 * Argument validation for the cpu kernel wrappers: dtypes and shapes are checked in TypeScript
 * with messages naming the op and argument; the addon then re-checks array lengths (args.h).
 */
import type { Tensor } from '../../tensor/tensor.js';
import { hostOverlap } from '../host-backend.js';
import { type ArgChecks, shapeChecks } from '../shape-checks.js';

/** The shape checks every backend shares, with this backend's error prefix. */
export const checks = shapeChecks('cpu');
export const { fail, expectShape, expectSize, expectRank } = checks;

/** The elements of an f32 tensor (the only float type this backend computes in). */
export function f32(op: string, name: string, t: Tensor): Float32Array {
  if (t.dtype !== 'f32') fail(op, `${name} must be f32, got ${t.dtype}`);
  return t.data as Float32Array;
}

export function i32(op: string, name: string, t: Tensor): Int32Array {
  if (t.dtype !== 'i32') fail(op, `${name} must be i32, got ${t.dtype}`);
  return t.data as Int32Array;
}

export function u8(op: string, name: string, t: Tensor): Uint8Array {
  if (t.dtype !== 'u8') fail(op, `${name} must be u8, got ${t.dtype}`);
  return t.data as Uint8Array;
}

export function expectFinite(op: string, name: string, value: number): void {
  if (!Number.isFinite(value)) fail(op, `${name} must be a finite number, got ${value}`);
}

/** Two tensors must not share memory unless the op allows it (partial overlap is never allowed). */
export function noAlias(op: string, names: string, a: Tensor, b: Tensor): void {
  if (hostOverlap(a, b)) fail(op, `${names} must not alias`);
}

/** Allowed aliasing is exact (same elements); a partial overlap would race. */
export function sameOrDisjoint(op: string, names: string, a: Tensor, b: Tensor): void {
  const x = a.data;
  const y = b.data;
  if (hostOverlap(a, b) && !(x.byteOffset === y.byteOffset && x.byteLength === y.byteLength)) {
    fail(op, `${names} overlap partially (they may only be the same tensor)`);
  }
}

/** Runs a native call, re-throwing its errors (bad ids, labels, positions) under the op's name. */
export function callNative(op: string, call: () => void): void {
  try {
    call();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (!message.startsWith('qlora_native: ')) throw err;
    fail(op, message.replace(/^qlora_native: (\w+: )?/, ''));
  }
}

/** The shared argument rules (shape-checks.ts) bound to this backend's checks. */
export const args: ArgChecks = { ...checks, noAlias, sameOrDisjoint };
