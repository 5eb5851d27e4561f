/**
 * Argument validation for the WebGPU kernels: the shared shape rules with this backend's prefix,
 * dtype checks, and aliasing checks on device spans (buffer identity and byte ranges).
 */
import type { Tensor } from '../../tensor/tensor.js';
import { type ArgChecks, shapeChecks } from '../shape-checks.js';
import type { GpuContext, GpuSpan } from './context.js';
import { spanOf } from './memory.js';

export const checks = shapeChecks('webgpu');
export const { fail, expectShape, expectSize, expectRank } = checks;

/** The tensor's span after checking it is f32 (the only float type this backend computes in). */
export function f32(op: string, name: string, t: Tensor): GpuSpan {
  if (t.dtype !== 'f32') fail(op, `${name} must be f32, got ${t.dtype}`);
  return spanOf(t);
}

export function i32(op: string, name: string, t: Tensor): GpuSpan {
  if (t.dtype !== 'i32') fail(op, `${name} must be i32, got ${t.dtype}`);
  return spanOf(t);
}

export function u8(op: string, name: string, t: Tensor): GpuSpan {
  if (t.dtype !== 'u8') fail(op, `${name} must be u8, got ${t.dtype}`);
  return spanOf(t);
}

export function expectFinite(op: string, name: string, value: number): void {
  if (!Number.isFinite(value)) fail(op, `${name} must be a finite number, got ${value}`);
}

function overlap(x: GpuSpan, y: GpuSpan): boolean {
  if (x.buffer !== y.buffer) return false;
  return x.byteOffset < y.byteOffset + y.byteLength && y.byteOffset < x.byteOffset + x.byteLength;
}

/** Two tensors must not share memory unless the op allows it. */
export function noAlias(op: string, names: string, a: Tensor, b: Tensor): void {
  if (overlap(spanOf(a), spanOf(b))) fail(op, `${names} must not alias`);
}

/** Allowed aliasing is exact (same elements); a partial overlap would race. */
export function sameOrDisjoint(op: string, names: string, a: Tensor, b: Tensor): void {
  const x = spanOf(a);
  const y = spanOf(b);
  if (overlap(x, y) && !(x.byteOffset === y.byteOffset && x.byteLength === y.byteLength)) {
    fail(op, `${names} overlap partially (they may only be the same tensor)`);
  }
}

/** The context of the backend a tensor lives on. */
export function ctxOf(t: Tensor): GpuContext {
  return (t.backend as unknown as { ctx: GpuContext }).ctx;
}

/** The shared argument rules (shape-checks.ts) bound to this backend's checks. */
export const args: ArgChecks = { ...checks, noAlias, sameOrDisjoint };
