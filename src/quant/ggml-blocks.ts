/**
 * GGUF's own quantized weight blocks (ggml's Q4_0, Q8_0, Q4_K, Q5_K, Q6_K) kept as stored, so LoRA
 * can train on the quantization a model is served with (`--quant keep`), and the plain-TypeScript
 * reference dequantizer of each (docs/formats.md §5.2 gives the layouts). Values are bit-identical
 * to ggml's dequantize_row_*: every product below is exact in f32 (an f16 scale times a 6- or 8-bit
 * integer times a ≤ 6-bit quant fits in 24 bits), so the only rounding is the final one (Q4_K/Q5_K's
 * subtraction of the minimum), which Math.fround reproduces. test/ggml-quants.test.ts checks this
 * against values ggml itself produced.
 */
import type { Tensor } from '../tensor/tensor.js';

export type GgmlQuantType = 'q4_0' | 'q8_0' | 'q4_k' | 'q5_k' | 'q6_k';

export interface GgmlBlockGeometry {
  /** ggml's type id (include/ggml.h). */
  readonly id: number;
  /** ggml's name, as GGUF tools print it. */
  readonly name: string;
  /** Elements per block. */
  readonly blockElems: number;
  /** Bytes per block. */
  readonly blockBytes: number;
}

export const GGML_QUANT_TYPES: Readonly<Record<GgmlQuantType, GgmlBlockGeometry>> = {
  q4_0: { id: 2, name: 'Q4_0', blockElems: 32, blockBytes: 18 },
  q8_0: { id: 8, name: 'Q8_0', blockElems: 32, blockBytes: 34 },
  q4_k: { id: 12, name: 'Q4_K', blockElems: 256, blockBytes: 144 },
  q5_k: { id: 13, name: 'Q5_K', blockElems: 256, blockBytes: 176 },
  q6_k: { id: 14, name: 'Q6_K', blockElems: 256, blockBytes: 210 },
};

/** The GgmlQuantType of a ggml type id, or null for types kept another way (F32, F16, ...). */
export function ggmlQuantTypeOf(id: number): GgmlQuantType | null {
  for (const [t, g] of Object.entries(GGML_QUANT_TYPES)) if (g.id === id) return t as GgmlQuantType;
  return null;
}

/**
 * A frozen [rows, cols] = [out, in] weight held in a GGUF's own blocks: row r is the
 * cols / blockElems consecutive blocks starting at byte r·rowBytes (cols is a multiple of the
 * block's elements, as GGUF requires of a tensor's innermost dimension).
 */
export interface GgmlWeight {
  readonly rows: number;
  readonly cols: number;
  readonly type: GgmlQuantType;
  /** u8 [rows · rowBytes] on the backend. */
  readonly blocks: Tensor;
}

/** Bytes one row of `cols` elements takes (an error when cols is not a whole number of blocks). */
export function ggmlRowBytes(type: GgmlQuantType, cols: number): number {
  const g = GGML_QUANT_TYPES[type];
  if (!Number.isInteger(cols) || cols <= 0 || cols % g.blockElems !== 0)
    throw new Error(
      `${g.name}: a row of ${cols} values is not a whole number of ${g.blockElems}-value blocks`,
    );
  return (cols / g.blockElems) * g.blockBytes;
}

/** A GGUF-quantized matrix on the host: what a TensorSource hands over for `--quant keep`. */
export interface GgmlHostWeight {
  readonly type: GgmlQuantType;
  readonly rows: number;
  readonly cols: number;
  readonly blocks: Uint8Array;
}

/** Uploads host blocks to a backend (u8 tensor); release with `w.blocks.dispose()`. */
export function uploadGgml(
  backend: { fromArray(v: ArrayLike<number>, shape: readonly number[], dtype: 'u8'): Tensor },
  w: GgmlHostWeight,
): GgmlWeight {
  const bytes = w.rows * ggmlRowBytes(w.type, w.cols);
  if (w.blocks.length !== bytes)
    throw new Error(
      `${GGML_QUANT_TYPES[w.type].name} [${w.rows}, ${w.cols}] needs ${bytes} bytes, got ${w.blocks.length}`,
    );
  return {
    rows: w.rows,
    cols: w.cols,
    type: w.type,
    blocks: backend.fromArray(w.blocks, [bytes], 'u8'),
  };
}

/** IEEE half → number (exact). */
function half(b: Uint8Array, p: number): number {
  const h = b[p]! | (b[p + 1]! << 8);
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1024 + m) * 2 ** (e - 25);
}

const i8 = (v: number): number => (v << 24) >> 24;

/** Dequantizes `count` whole blocks of `type` from `src` (starting at byte `at`) into out[o...]. */
export function dequantizeGgmlBlocks(
  type: GgmlQuantType,
  src: Uint8Array,
  at: number,
  count: number,
  out: Float32Array | Float64Array,
  o = 0,
): void {
  const g = GGML_QUANT_TYPES[type];
  for (let b = 0; b < count; b++) {
    const p = at + b * g.blockBytes;
    const y = o + b * g.blockElems;
    switch (type) {
      case 'q8_0':
        blockQ8_0(src, p, out, y);
        break;
      case 'q4_0':
        blockQ4_0(src, p, out, y);
        break;
      case 'q4_k':
        blockQ4_K(src, p, out, y);
        break;
      case 'q5_k':
        blockQ5_K(src, p, out, y);
        break;
      case 'q6_k':
        blockQ6_K(src, p, out, y);
        break;
    }
  }
}

/** Row r of a host weight, dequantized. */
export function dequantizeGgmlRow(
  type: GgmlQuantType,
  blocks: Uint8Array,
  cols: number,
  r: number,
  out: Float32Array | Float64Array,
): void {
  const rowBytes = ggmlRowBytes(type, cols);
  dequantizeGgmlBlocks(type, blocks, r * rowBytes, cols / GGML_QUANT_TYPES[type].blockElems, out);
}

type Out = Float32Array | Float64Array;

// Q8_0 { f16 d; i8 q[32] }: q·d.
function blockQ8_0(s: Uint8Array, p: number, out: Out, y: number): void {
  const d = half(s, p);
  for (let j = 0; j < 32; j++) out[y + j] = Math.fround(i8(s[p + 2 + j]!) * d);
}

// Q4_0 { f16 d; u8 qs[16] }: low nibbles are elements 0..15, high nibbles 16..31; (q − 8)·d.
function blockQ4_0(s: Uint8Array, p: number, out: Out, y: number): void {
  const d = half(s, p);
  for (let j = 0; j < 16; j++) {
    const q = s[p + 2 + j]!;
    out[y + j] = Math.fround(((q & 15) - 8) * d);
    out[y + j + 16] = Math.fround(((q >> 4) - 8) * d);
  }
}

/** The 6-bit (scale, min) pair j (0..7) of a K-quant's 12 packed bytes at `p`. */
export function kScaleMin(s: Uint8Array, p: number, j: number): [number, number] {
  if (j < 4) return [s[p + j]! & 63, s[p + j + 4]! & 63];
  return [
    (s[p + j + 4]! & 15) | ((s[p + j - 4]! >> 6) << 4),
    (s[p + j + 4]! >> 4) | ((s[p + j]! >> 6) << 4),
  ];
}

// Q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }: four 64-value chunks, each 32 bytes of qs;
// low nibbles with pair 2c, high nibbles with pair 2c+1; d·sc·q − dmin·m.
function blockQ4_K(s: Uint8Array, p: number, out: Out, y: number): void {
  const d = half(s, p);
  const dmin = half(s, p + 2);
  for (let c = 0; c < 4; c++) {
    const [sc1, m1] = kScaleMin(s, p + 4, 2 * c);
    const [sc2, m2] = kScaleMin(s, p + 4, 2 * c + 1);
    const q = p + 16 + 32 * c;
    for (let l = 0; l < 32; l++) {
      out[y + 64 * c + l] = Math.fround(d * sc1 * (s[q + l]! & 15) - dmin * m1);
      out[y + 64 * c + 32 + l] = Math.fround(d * sc2 * (s[q + l]! >> 4) - dmin * m2);
    }
  }
}

// Q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: Q4_K plus a fifth bit per value,
// bit 2c (low nibbles) and 2c+1 (high nibbles) of qh[l] for chunk c.
function blockQ5_K(s: Uint8Array, p: number, out: Out, y: number): void {
  const d = half(s, p);
  const dmin = half(s, p + 2);
  const qh = p + 16;
  for (let c = 0; c < 4; c++) {
    const [sc1, m1] = kScaleMin(s, p + 4, 2 * c);
    const [sc2, m2] = kScaleMin(s, p + 4, 2 * c + 1);
    const q = p + 48 + 32 * c;
    for (let l = 0; l < 32; l++) {
      const h = s[qh + l]!;
      const lo = (s[q + l]! & 15) + (((h >> (2 * c)) & 1) << 4);
      const hi = (s[q + l]! >> 4) + (((h >> (2 * c + 1)) & 1) << 4);
      out[y + 64 * c + l] = Math.fround(d * sc1 * lo - dmin * m1);
      out[y + 64 * c + 32 + l] = Math.fround(d * sc2 * hi - dmin * m2);
    }
  }
}

// Q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: two halves of 128 values; in a half, value
// l + 32k (l < 32, k < 4) takes its low four bits from ql[l] (k = 0: low nibble, k = 2: high) or
// ql[l + 32] (k = 1: low, k = 3: high) and its top two from bit pair k of qh[l];
// x = d·scales[l/16 + 2k]·(q − 32).
function blockQ6_K(s: Uint8Array, p: number, out: Out, y: number): void {
  const d = half(s, p + 208);
  for (let h = 0; h < 2; h++) {
    const ql = p + 64 * h;
    const qh = p + 128 + 32 * h;
    const sc = p + 192 + 8 * h;
    for (let l = 0; l < 32; l++) {
      const hb = s[qh + l]!;
      const a = s[ql + l]!;
      const b = s[ql + l + 32]!;
      const q = [
        (a & 15) | ((hb & 3) << 4),
        (b & 15) | (((hb >> 2) & 3) << 4),
        (a >> 4) | (((hb >> 4) & 3) << 4),
        (b >> 4) | (((hb >> 6) & 3) << 4),
      ];
      for (let k = 0; k < 4; k++) {
        const scale = i8(s[sc + (l >> 4) + 2 * k]!);
        out[y + 128 * h + l + 32 * k] = Math.fround(d * scale * (q[k]! - 32));
      }
    }
  }
}
