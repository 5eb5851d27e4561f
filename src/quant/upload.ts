/**
 * Moves a host-side quantized weight onto a backend as a `Packed4bitWeight` (the layout every
 * backend's 4-bit kernels read), and releases it again.
 */
import type { Backend, Packed4bitWeight } from '../tensor/backend.js';
import {
  layout4bit,
  NESTED_BLOCKSIZE,
  type Quantize4bitOptions,
  type Quantized4bit,
  resolveQuantize4bitOptions,
} from './quantize4bit.js';

/** Uploads `q` as a [rows, cols] weight (rows·cols must equal q.length). Release with disposePacked4bit. */
export function uploadPacked4bit(
  backend: Backend,
  q: Quantized4bit,
  rows: number,
  cols: number,
): Packed4bitWeight {
  if (
    !Number.isInteger(rows) ||
    !Number.isInteger(cols) ||
    rows < 0 ||
    cols < 0 ||
    rows * cols !== q.length
  ) {
    throw new Error(
      `uploadPacked4bit: [${rows}, ${cols}] does not match ${q.length} quantized elements`,
    );
  }
  const packed = backend.fromArray(q.packed, [q.packed.length], 'u8');
  const code = backend.fromArray(q.code, [q.code.length], 'f32');
  const absmax = backend.fromArray(q.absmax, [q.absmax.length], q.nested ? 'u8' : 'f32');
  const nested = q.nested
    ? {
        absmax: backend.fromArray(q.nested.absmax, [q.nested.absmax.length], 'f32'),
        code: backend.fromArray(q.nested.code, [q.nested.code.length], 'f32'),
        blocksize: q.nested.blocksize,
        offset: q.nested.offset,
      }
    : null;
  return {
    rows,
    cols,
    quantType: q.quantType,
    blocksize: q.blocksize,
    packed,
    code,
    absmax,
    nested,
  };
}

/**
 * A [rows, cols] 4-bit weight allocated by shape, with the tensors uploadPacked4bit would create for
 * it but nothing quantized: what a model built on a backend that holds no values (memory planning,
 * backends/counting.ts) gets for each quantized projection.
 */
export function allocPacked4bit(
  backend: Backend,
  rows: number,
  cols: number,
  options: Quantize4bitOptions,
): Packed4bitWeight {
  const { quantType, blocksize, doubleQuant } = resolveQuantize4bitOptions(options);
  const layout = layout4bit(rows * cols, blocksize, doubleQuant);
  return {
    rows,
    cols,
    quantType,
    blocksize,
    packed: backend.zeros([layout.packed], 'u8'),
    code: backend.zeros([16], 'f32'),
    absmax: backend.zeros([layout.absmax], doubleQuant ? 'u8' : 'f32'),
    nested: doubleQuant
      ? {
          absmax: backend.zeros([layout.nestedAbsmax], 'f32'),
          code: backend.zeros([256], 'f32'),
          blocksize: NESTED_BLOCKSIZE,
          offset: 0,
        }
      : null,
  };
}

export function disposePacked4bit(w: Packed4bitWeight): void {
  w.packed.dispose();
  w.code.dispose();
  w.absmax.dispose();
  w.nested?.absmax.dispose();
  w.nested?.code.dispose();
}

/** Bytes a backend holds for a 4-bit weight: packed codes, absmax (8-bit codes + nested f32, or f32) and code tables. */
export function packedWeightBytes(w: Packed4bitWeight): number {
  let bytes = w.packed.size + w.code.size * 4 + w.absmax.size * (w.nested ? 1 : 4);
  if (w.nested) bytes += w.nested.absmax.size * 4 + w.nested.code.size * 4;
  return bytes;
}
