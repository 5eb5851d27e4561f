/**
 * f32 values → the bytes of a ggml tensor type, for GGUF export: F32, F16, BF16 and the reference
 * quantizers of ggml-quants.c for Q8_0, Q4_0 and Q4_K (docs/formats.md §5.3). Arithmetic is done in
 * float32 (Math.fround) exactly as the C reference does, so files match what llama.cpp's own tools
 * write.
 */
import { GgmlType, ggmlTypeName } from '../io/ggml-types.js';
import { f16ToF32, f32ToBF16, f32ToF16 } from '../io/half.js';

const QK = 32;
const f = Math.fround;

/** C roundf: round half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function checkBlocks(n: number, what: string): void {
  if (n % QK !== 0)
    throw new Error(`${what}: ${n} values is not a multiple of the block size ${QK}`);
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

/** ggml's nearest_int: round to nearest, ties to even (the 1.5·2^23 float trick). */
function nearestInt(x: number): number {
  return f(x + 12582912) - 12582912;
}

/** Scratch for makeQkx2Quants's candidate levels (one sub-block of 32). */
const AUX = new Uint8Array(32);
const MIN_OUT = new Float32Array(1);

/**
 * make_qkx2_quants (ggml-quants.c) for the 32 values x[o..o+32): 4-bit levels with a scale and a
 * non-positive offset, refined by a weighted least-squares search over 21 candidate scales.
 * Returns the scale, writes the levels to L[lo..lo+32) and −offset to MIN_OUT[0].
 */
function makeQkx2Quants(
  x: Float32Array,
  o: number,
  weights: Float32Array,
  L: Uint8Array,
  lo: number,
): number {
  const n = 32;
  const nmax = 15;
  const rmin = -1;
  const rdelta = 0.1;
  const nstep = 20;
  let min = x[o]!;
  let max = x[o]!;
  let sumW = weights[0]!;
  let sumX = f(sumW * x[o]!);
  for (let i = 1; i < n; i++) {
    const v = x[o + i]!;
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = f(sumW + weights[i]!);
    sumX = f(sumX + f(weights[i]! * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    MIN_OUT[0] = -min;
    return 0;
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const v = x[o + i]!;
    const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(v - min)))));
    L[lo + i] = l;
    const diff = f(f(f(scale * l) + min) - v);
    bestError = f(bestError + f(weights[i]! * f(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const v = x[o + i]!;
      // `min` is the best offset so far: the C code updates it inside this loop (here and in iscale).
      const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(v - min)))));
      AUX[i] = l;
      const wl = f(weights[i]! * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * v));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        const diff = f(f(f(thisScale * AUX[i]!) + thisMin) - x[o + i]!);
        curError = f(curError + f(weights[i]! * f(diff * diff)));
      }
      if (curError < bestError) {
        L.set(AUX, lo);
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  MIN_OUT[0] = -min;
  return scale;
}

/**
 * quantize_row_q4_K_ref: per 256-value super-block, eight 32-value sub-blocks each get a scale and
 * min from makeQkx2Quants (weights |x| + rms); those are quantized to 6 bits against f16 d / dmin,
 * then every value is re-quantized with its sub-block's final scale. Block: f16 d, f16 dmin,
 * u8 scales[12] (get_scale_min_k4 packing), u8 qs[128] (values 0-31 of each 64 in low nibbles,
 * 32-63 in high nibbles).
 */
export function quantizeQ4_K(values: Float32Array): Uint8Array {
  const QK_K = 256;
  if (values.length % QK_K !== 0)
    throw new Error(`Q4_K: ${values.length} values is not a multiple of the block size ${QK_K}`);
  const out = new Uint8Array((values.length / QK_K) * 144);
  const dv = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const weights = new Float32Array(32);
  const mins = new Float32Array(8);
  const scales = new Float32Array(8);
  const ls = new Uint8Array(8);
  const lm = new Uint8Array(8);
  for (let b = 0, p = 0; b < values.length; b += QK_K, p += 144) {
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      const o = b + 32 * j;
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(values[o + l]! * values[o + l]!));
      const avX = f(Math.sqrt(f(sumX2 / 32)));
      for (let l = 0; l < 32; l++) weights[l] = f(avX + Math.abs(values[o + l]!));
      scales[j] = makeQkx2Quants(values, o, weights, L, 32 * j);
      mins[j] = MIN_OUT[0]!;
      if (scales[j]! > maxScale) maxScale = scales[j]!;
      if (mins[j]! > maxMin) maxMin = mins[j]!;
    }
    const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
    const sc = p + 4;
    for (let j = 0; j < 8; j++) {
      ls[j] = Math.min(63, nearestInt(f(invScale * scales[j]!)) & 0xff);
      lm[j] = Math.min(63, nearestInt(f(invMin * mins[j]!)) & 0xff);
      if (j < 4) {
        out[sc + j] = ls[j]!;
        out[sc + j + 4] = lm[j]!;
      } else {
        out[sc + j + 4] = (ls[j]! & 0xf) | ((lm[j]! & 0xf) << 4);
        out[sc + j - 4]! |= (ls[j]! >> 4) << 6;
        out[sc + j]! |= (lm[j]! >> 4) << 6;
      }
    }
    const dBits = f32ToF16(f(maxScale / 63));
    const dminBits = f32ToF16(f(maxMin / 63));
    dv.setUint16(p, dBits, true);
    dv.setUint16(p + 2, dminBits, true);
    const d0 = f16ToF32(dBits);
    const dmin0 = f16ToF32(dminBits);
    for (let j = 0; j < 8; j++) {
      // The 6-bit values written above are exactly what get_scale_min_k4 unpacks.
      const d = f(d0 * ls[j]!);
      if (!d) continue;
      const dm = f(dmin0 * lm[j]!);
      for (let ii = 0; ii < 32; ii++) {
        L[32 * j + ii] = Math.max(
          0,
          Math.min(15, nearestInt(f(f(values[b + 32 * j + ii]! + dm) / d))),
        );
      }
    }
    for (let j = 0, q = p + 16; j < QK_K; j += 64, q += 32) {
      for (let l = 0; l < 32; l++) out[q + l] = L[j + l]! | (L[j + l + 32]! << 4);
    }
  }
  return out;
}

/** Types encodeGgml can produce. */
export const ENCODABLE_TYPES: readonly number[] = [
  GgmlType.F32,
  GgmlType.F16,
  GgmlType.BF16,
  GgmlType.Q8_0,
  GgmlType.Q4_0,
  GgmlType.Q4_K,
];

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
    case GgmlType.Q4_K:
      return quantizeQ4_K(values);
    default:
      throw new Error(
        `cannot encode ggml type ${ggmlTypeName(type)} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K)`,
      );
  }
}
