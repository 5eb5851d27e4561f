/**
 * f32 values → the bytes of a ggml tensor type, for GGUF export: F32, F16, BF16 and the reference
 * quantizers of ggml-quants.c for Q8_0 and Q4_0 (formats.md §4.3). Arithmetic is done in float32
 * (Math.fround) exactly as the C reference does, so files match what llama.cpp's own tools write.
 */
import { GgmlType, ggmlTypeName } from '../io/ggml-types.js';
import { f32ToBF16, f32ToF16 } from '../io/half.js';

const QK = 32;
const f = Math.fround;

/** C roundf: round half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function checkBlocks(n: number, what: string): void {
  if (n % QK !== 0) throw new Error(`${what}: ${n} values is not a multiple of the block size ${QK}`);
}

export function encodeF32(values: Float32Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

export function encodeF16(values: Float32Array): Uint8Array {
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) bits[i] = f32ToF16(values[i]!);
  return new Uint8Array(bits.buffer);
}

export function encodeBF16(values: Float32Array): Uint8Array {
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) bits[i] = f32ToBF16(values[i]!);
  return new Uint8Array(bits.buffer);
}

/** quantize_row_q8_0_ref: d = amax/127, q = roundf(x·(1/d)), block = f16 d + 32 × i8. */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  checkBlocks(values.length, 'Q8_0');
  const out = new Uint8Array((values.length / QK) * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0, p = 0; b < values.length; b += QK, p += 34) {
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(values[b + j]!));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    dv.setUint16(p, f32ToF16(d), true);
    for (let j = 0; j < QK; j++) dv.setInt8(p + 2 + j, roundf(f(values[b + j]! * id)));
  }
  return out;
}

/**
 * quantize_row_q4_0_ref: `max` = the value of largest magnitude, d = max/−8,
 * q = min(15, trunc(x·(1/d) + 8.5)); element j in the low nibble of qs[j], j+16 in the high one.
 */
export function quantizeQ4_0(values: Float32Array): Uint8Array {
  checkBlocks(values.length, 'Q4_0');
  const out = new Uint8Array((values.length / QK) * 18);
  const dv = new DataView(out.buffer);
  for (let b = 0, p = 0; b < values.length; b += QK, p += 18) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = values[b + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f(max / -8);
    const id = d ? f(1 / d) : 0;
    dv.setUint16(p, f32ToF16(d), true);
    for (let j = 0; j < QK / 2; j++) {
      const x0 = f(values[b + j]! * id);
      const x1 = f(values[b + QK / 2 + j]! * id);
      const q0 = Math.min(15, Math.trunc(f(x0 + 8.5)));
      const q1 = Math.min(15, Math.trunc(f(x1 + 8.5)));
      out[p + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** Types encodeGgml can produce. */
export const ENCODABLE_TYPES: readonly number[] = [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0];

/** Encodes f32 values (row-major, innermost dimension last) as ggml `type`. */
export function encodeGgml(type: number, values: Float32Array): Uint8Array {
  switch (type) {
    case GgmlType.F32:
      return encodeF32(values);
    case GgmlType.F16:
      return encodeF16(values);
    case GgmlType.BF16:
      return encodeBF16(values);
    case GgmlType.Q8_0:
      return quantizeQ8_0(values);
    case GgmlType.Q4_0:
      return quantizeQ4_0(values);
    default:
      throw new Error(`cannot encode ggml type ${ggmlTypeName(type)} (supported: F32, F16, BF16, Q8_0, Q4_0)`);
  }
}
