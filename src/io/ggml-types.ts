/**
 * ggml tensor types (include/ggml.h numbering) with their block geometry, and dequantization of
 * the ones we load (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K) to f32. Layouts follow
 * ggml-common.h / ggml-quants.c (docs/formats.md §5.2).
 */
import { decodeBF16, decodeF16, f16ToF32 } from './half.js';

export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  BF16: 30,
} as const;
export type GgmlTypeId = number;

interface TypeInfo {
  name: string;
  /** Elements per block (1 for plain types). */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

/** Geometry of every type we can at least size (so unknown-but-sized tensors can be skipped). */
const TYPES: ReadonlyMap<number, TypeInfo> = new Map([
  [0, { name: 'F32', blockSize: 1, typeSize: 4 }],
  [1, { name: 'F16', blockSize: 1, typeSize: 2 }],
  [2, { name: 'Q4_0', blockSize: 32, typeSize: 18 }],
  [3, { name: 'Q4_1', blockSize: 32, typeSize: 20 }],
  [6, { name: 'Q5_0', blockSize: 32, typeSize: 22 }],
  [7, { name: 'Q5_1', blockSize: 32, typeSize: 24 }],
  [8, { name: 'Q8_0', blockSize: 32, typeSize: 34 }],
  [9, { name: 'Q8_1', blockSize: 32, typeSize: 36 }],
  [10, { name: 'Q2_K', blockSize: 256, typeSize: 84 }],
  [11, { name: 'Q3_K', blockSize: 256, typeSize: 110 }],
  [12, { name: 'Q4_K', blockSize: 256, typeSize: 144 }],
  [13, { name: 'Q5_K', blockSize: 256, typeSize: 176 }],
  [14, { name: 'Q6_K', blockSize: 256, typeSize: 210 }],
  [15, { name: 'Q8_K', blockSize: 256, typeSize: 292 }],
  [24, { name: 'I8', blockSize: 1, typeSize: 1 }],
  [25, { name: 'I16', blockSize: 1, typeSize: 2 }],
  [26, { name: 'I32', blockSize: 1, typeSize: 4 }],
  [27, { name: 'I64', blockSize: 1, typeSize: 8 }],
  [28, { name: 'F64', blockSize: 1, typeSize: 8 }],
  [30, { name: 'BF16', blockSize: 1, typeSize: 2 }],
]);

/** Types `dequantize` handles. */
const DEQUANTIZABLE = new Set<number>([0, 1, 30, 8, 2, 12, 14]);

export function ggmlTypeName(type: number): string {
  return TYPES.get(type)?.name ?? `unknown type ${type}`;
}

export function ggmlTypeInfo(type: number): TypeInfo | undefined {
  return TYPES.get(type);
}

export function canDequantize(type: number): boolean {
  return DEQUANTIZABLE.has(type);
}

/**
 * Bytes a tensor of `nElements` with innermost dimension `ne0` takes, or a string explaining why
 * the shape is impossible for the type.
 */
export function ggmlByteSize(type: number, ne0: number, nElements: number): number | string {
  const info = TYPES.get(type);
  if (!info) return `unsupported ggml type ${type}`;
  if (ne0 % info.blockSize !== 0)
    return `innermost dimension ${ne0} is not a multiple of ${info.name} block size ${info.blockSize}`;
  return (nElements / info.blockSize) * info.typeSize;
}

/** Dequantizes `nElements` values of `type` stored in `src` into `out` (length ≥ nElements). */
export function dequantize(
  type: number,
  src: Uint8Array,
  nElements: number,
  out: Float32Array,
): void {
  switch (type) {
    case GgmlType.F32: {
      const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
      for (let i = 0; i < nElements; i++) out[i] = dv.getFloat32(4 * i, true);
      return;
    }
    case GgmlType.F16:
      return decodeF16(src, 0, nElements, out);
    case GgmlType.BF16:
      return decodeBF16(src, 0, nElements, out);
    case GgmlType.Q8_0:
      return dequantQ8_0(src, nElements, out);
    case GgmlType.Q4_0:
      return dequantQ4_0(src, nElements, out);
    case GgmlType.Q4_K:
      return dequantQ4_K(src, nElements, out);
    case GgmlType.Q6_K:
      return dequantQ6_K(src, nElements, out);
    default:
      throw new Error(
        `cannot dequantize ggml type ${ggmlTypeName(type)} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)`,
      );
  }
}

const halfAt = (b: Uint8Array, p: number): number => f16ToF32(b[p]! | (b[p + 1]! << 8));

/** block_q8_0 { f16 d; i8 qs[32]; } → q·d */
function dequantQ8_0(src: Uint8Array, n: number, out: Float32Array): void {
  for (let o = 0, p = 0; o < n; o += 32, p += 34) {
    const d = halfAt(src, p);
    for (let j = 0; j < 32; j++) out[o + j] = ((src[p + 2 + j]! << 24) >> 24) * d;
  }
}

/** block_q4_0 { f16 d; u8 qs[16]; }: element j in the low nibble of qs[j], j+16 in the high one. */
function dequantQ4_0(src: Uint8Array, n: number, out: Float32Array): void {
  for (let o = 0, p = 0; o < n; o += 32, p += 18) {
    const d = halfAt(src, p);
    for (let j = 0; j < 16; j++) {
      const q = src[p + 2 + j]!;
      out[o + j] = ((q & 0x0f) - 8) * d;
      out[o + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

/** The 6-bit (scale, min) pair j of a Q4_K super-block's packed 12-byte `scales`. */
function scaleMinK4(j: number, s: Uint8Array, p: number): [number, number] {
  if (j < 4) return [s[p + j]! & 63, s[p + j + 4]! & 63];
  return [
    (s[p + j + 4]! & 0x0f) | ((s[p + j - 4]! >> 6) << 4),
    (s[p + j + 4]! >> 4) | ((s[p + j]! >> 6) << 4),
  ];
}

/**
 * block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; } over 256 values: per 64-value chunk,
 * 32 low nibbles use (sc, m) pair 2c and the 32 high nibbles of the same bytes pair 2c+1;
 * y = d·sc·q − dmin·m.
 */
function dequantQ4_K(src: Uint8Array, n: number, out: Float32Array): void {
  for (let o = 0, p = 0; o < n; o += 256, p += 144) {
    const d = halfAt(src, p);
    const dmin = halfAt(src, p + 2);
    const scales = p + 4;
    let q = p + 16;
    for (let chunk = 0; chunk < 4; chunk++) {
      const [sc1, m1] = scaleMinK4(2 * chunk, src, scales);
      const [sc2, m2] = scaleMinK4(2 * chunk + 1, src, scales);
      const d1 = d * sc1,
        mm1 = dmin * m1,
        d2 = d * sc2,
        mm2 = dmin * m2;
      const base = o + 64 * chunk;
      for (let l = 0; l < 32; l++) {
        out[base + l] = d1 * (src[q + l]! & 0x0f) - mm1;
        out[base + 32 + l] = d2 * (src[q + l]! >> 4) - mm2;
      }
      q += 32;
    }
  }
}

/**
 * block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d; } over 256 values, in two halves of
 * 128. Within a half (ql += 64, qh += 32, scales += 8 per half), for l < 32 the four values
 * l, l+32, l+64, l+96 take low/low/high/high nibbles of ql[l], ql[l+32], ql[l], ql[l+32] and bit
 * pairs 0-1/2-3/4-5/6-7 of qh[l]; q = 6-bit value − 32; y = d·scales[l/16 + 2k]·q (k = 0..3).
 */
function dequantQ6_K(src: Uint8Array, n: number, out: Float32Array): void {
  for (let o = 0, p = 0; o < n; o += 256, p += 210) {
    const d = halfAt(src, p + 208);
    for (let half = 0; half < 2; half++) {
      const ql = p + 64 * half;
      const qh = p + 128 + 32 * half;
      const sc = p + 192 + 8 * half;
      const base = o + 128 * half;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l]!;
        const q1 = ((src[ql + l]! & 0x0f) | ((h & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32]! & 0x0f) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const s = (k: number): number => (src[sc + is + 2 * k]! << 24) >> 24;
        out[base + l] = d * s(0) * q1;
        out[base + l + 32] = d * s(1) * q2;
        out[base + l + 64] = d * s(2) * q3;
        out[base + l + 96] = d * s(3) * q4;
      }
    }
  }
}
