/**
 * Shape validation every backend applies the same way: the contract is the Backend interface, so
 * its checks live once. Each backend binds them to its own error prefix (`cpu.op: …`, `ref.op: …`).
 */
import type { AttentionOptions } from '../tensor/backend.js';
import { shapeString } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';

export interface ShapeChecks {
  fail(op: string, message: string): never;
  expectShape(op: string, name: string, t: Tensor, shape: readonly number[]): void;
  expectSize(op: string, name: string, t: Tensor, size: number): void;
  expectRank(op: string, name: string, t: Tensor, rank: number): void;
}

export function shapeChecks(backend: string): ShapeChecks {
  const fail = (op: string, message: string): never => {
    throw new Error(`${backend}.${op}: ${message}`);
  };
  return {
    fail,
    expectShape(op, name, t, shape) {
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        fail(op, `${name} has shape ${shapeString(t.shape)}, expected ${shapeString(shape)}`);
      }
    },
    expectSize(op, name, t, size) {
      if (t.size !== size) fail(op, `${name} has ${t.size} elements, expected ${size}`);
    },
    expectRank(op, name, t, rank) {
      if (t.rank !== rank) fail(op, `${name} must have rank ${rank}, got shape ${shapeString(t.shape)}`);
    },
  };
}

/** Attention sizes: q [B, Tq, H, D], k/v [B, Tk, Hkv, D]. */
export interface AttentionDims {
  B: number;
  Tq: number;
  Tk: number;
  H: number;
  Hkv: number;
  D: number;
}

/**
 * The shape rules of Backend.attention / attentionBackward: matching batch and head dim, Tk ≥ Tq,
 * query heads a multiple of kv heads, a finite scale, and segment ids [B, Tk] only when Tq == Tk.
 * (The segment ids' dtype is checked by the caller, which reads them.)
 */
export function attentionDims(c: ShapeChecks, op: string, q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions): AttentionDims {
  c.expectRank(op, 'q', q, 4);
  c.expectRank(op, 'k', k, 4);
  const [B, Tq, H, D] = q.shape as [number, number, number, number];
  const [Bk, Tk, Hkv, Dk] = k.shape as [number, number, number, number];
  if (Bk !== B || Dk !== D) c.fail(op, `k [${k.shape.join(', ')}] does not match q [${q.shape.join(', ')}]`);
  c.expectShape(op, 'v', v, k.shape);
  if (D === 0) c.fail(op, 'head dim must be positive');
  if (Tk < Tq) c.fail(op, `Tk (${Tk}) must be ≥ Tq (${Tq})`);
  if (Hkv === 0 || H % Hkv !== 0) c.fail(op, `query heads (${H}) must be a multiple of kv heads (${Hkv})`);
  if (!Number.isFinite(options.scale)) c.fail(op, `scale must be a finite number, got ${options.scale}`);
  if (options.segmentIds) {
    if (Tq !== Tk) c.fail(op, `segment ids need Tq == Tk (got ${Tq} and ${Tk})`);
    c.expectShape(op, 'segmentIds', options.segmentIds, [B, Tk]);
  }
  return { B, Tq, Tk, H, Hkv, D };
}
