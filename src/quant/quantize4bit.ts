/**
 * bitsandbytes-exact blockwise 4-bit quantization (NF4 / FP4) with optional double quantization of
 * the absmax values (docs/formats.md §2.2, §2.4), on host arrays.
 *
 * - absmax per block of `blocksize` consecutive elements of the flat (row-major) tensor; the last
 *   block may be partial.
 * - s = x · (1/absmax) in float32 (CUDA multiplies by the reciprocal; absmax clamped to 1e-38 for
 *   the reciprocal and s clamped to [-1, 1] as in bnb's CPU op), then the CUDA code rule.
 * - packing: element 2i in the HIGH nibble of byte i, 2i+1 in the low nibble; an odd count is padded
 *   with a 0.0 element (see `paddingCode`).
 * - double quant: offset = mean(absmax) (float64 sum, rounded to float32), then (absmax - offset)
 *   in float32 is quantized blockwise (256) with the signed dynamic map.
 */
import { quantizeBlockwise8bit, scaleReciprocal } from './blockwise8bit.js';
import { codeTable, type QuantType4bit, quantizerFor } from './codes4bit.js';
import { createDynamicMap } from './dynamic-map.js';

const f = Math.fround;

export const VALID_4BIT_BLOCKSIZES: readonly number[] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
export const NESTED_BLOCKSIZE = 256;

export interface Quantize4bitOptions {
  readonly quantType?: QuantType4bit;
  /** 32..4096 (powers of two); default 64. */
  readonly blocksize?: number;
  /** Quantize the absmax values to 8 bits (bnb compress_statistics); default true. */
  readonly doubleQuant?: boolean;
}

export interface NestedAbsmaxHost {
  /** float32 absmax of each block of 256 (absmax - offset) values. */
  readonly absmax: Float32Array;
  /** The signed dynamic map (256 float32). */
  readonly code: Float32Array;
  readonly blocksize: number;
  /** float32 mean of the original absmax values. */
  readonly offset: number;
}

/** A host-side 4-bit tensor in bitsandbytes layout. */
export interface Quantized4bit {
  readonly quantType: QuantType4bit;
  readonly blocksize: number;
  /** Number of quantized elements. */
  readonly length: number;
  /** ceil(length / 2) bytes, high nibble first. */
  readonly packed: Uint8Array;
  /** The 16 code values (bnb quant_map). */
  readonly code: Float32Array;
  /** float32 absmax per block, or (double quant) u8 indices into nested.code. */
  readonly absmax: Float32Array | Uint8Array;
  readonly nested: NestedAbsmaxHost | null;
}

/** Default for training: NF4 with double quantization, blocksize 64 (the QLoRA recipe). */
export const QLORA_DEFAULTS: Required<Quantize4bitOptions> = {
  quantType: 'nf4',
  blocksize: 64,
  doubleQuant: true,
};

/** Options with defaults applied and checked (shared by the TypeScript and native quantizers). */
export function resolveQuantize4bitOptions(
  options: Quantize4bitOptions,
): Required<Quantize4bitOptions> {
  const quantType = options.quantType ?? 'nf4';
  const blocksize = options.blocksize ?? 64;
  const doubleQuant = options.doubleQuant ?? true;
  if (quantType !== 'nf4' && quantType !== 'fp4')
    throw new Error(`quantize4bit: unknown quantType '${String(quantType)}'`);
  if (!VALID_4BIT_BLOCKSIZES.includes(blocksize)) {
    throw new Error(
      `quantize4bit: blocksize ${blocksize} not in ${VALID_4BIT_BLOCKSIZES.join(', ')}`,
    );
  }
  return { quantType, blocksize, doubleQuant };
}

/** Element counts of the arrays a 4-bit tensor of n elements is stored in (bitsandbytes layout). */
export interface Layout4bit {
  /** Bytes of packed codes: two elements per byte. */
  readonly packed: number;
  /** One absmax per block (f32, or u8 codes with double quantization). */
  readonly absmax: number;
  /** The f32 absmax of each NESTED_BLOCKSIZE absmax codes (double quantization), else 0. */
  readonly nestedAbsmax: number;
}

export function layout4bit(n: number, blocksize: number, doubleQuant: boolean): Layout4bit {
  const nblocks = Math.ceil(n / blocksize);
  return {
    packed: Math.ceil(n / 2),
    absmax: nblocks,
    nestedAbsmax: doubleQuant ? Math.ceil(nblocks / NESTED_BLOCKSIZE) : 0,
  };
}

export function quantize4bit(
  values: ArrayLike<number>,
  options: Quantize4bitOptions = {},
): Quantized4bit {
  const { quantType, blocksize, doubleQuant } = resolveQuantize4bitOptions(options);
  const n = values.length;
  const layout = layout4bit(n, blocksize, doubleQuant);
  const nblocks = layout.absmax;
  const absmax = new Float32Array(nblocks);
  const packed = new Uint8Array(layout.packed);
  const quantize = quantizerFor(quantType);
  for (let b = 0; b < nblocks; b++) {
    const start = b * blocksize;
    const end = Math.min(n, start + blocksize);
    let amax = 0;
    for (let i = start; i < end; i++) {
      const x = f(values[i]!);
      if (!Number.isFinite(x))
        throw new Error(`quantize4bit: non-finite value ${x} at element ${i}`);
      amax = Math.max(amax, Math.abs(x));
    }
    absmax[b] = amax;
    const recip = scaleReciprocal(amax);
    for (let i = start; i < end; i++) {
      const s = Math.min(1, Math.max(-1, f(f(values[i]!) * recip)));
      const q = quantize(s);
      packed[i >> 1]! |= (i & 1) === 0 ? q << 4 : q;
    }
  }
  if (n % 2 === 1) packed[n >> 1]! |= paddingCode(quantType);
  const code = codeTable(quantType).slice();
  if (!doubleQuant) return { quantType, blocksize, length: n, packed, code, absmax, nested: null };

  let sum = 0;
  for (let b = 0; b < nblocks; b++) sum += absmax[b]!;
  const offset = nblocks === 0 ? 0 : f(sum / nblocks);
  const centered = new Float32Array(nblocks);
  for (let b = 0; b < nblocks; b++) centered[b] = absmax[b]! - offset;
  const q8 = quantizeBlockwise8bit(centered, createDynamicMap(true), NESTED_BLOCKSIZE);
  return {
    quantType,
    blocksize,
    length: n,
    packed,
    code,
    absmax: q8.codes,
    nested: { absmax: q8.absmax, code: q8.code, blocksize: NESTED_BLOCKSIZE, offset },
  };
}

/**
 * The code of the padding element of an odd count: the CUDA kernel loads elements past the end as
 * 0.0f and quantizes them, so the padding nibble is the code of the value 0 (NF4: 7, FP4: 0) and
 * dequantizes to exactly 0. (One bnb CPU variant pads with the raw code 0 instead; readers never
 * look at the padding nibble.)
 */
export function paddingCode(quantType: QuantType4bit): number {
  return quantizerFor(quantType)(0);
}

/** The float32 absmax of every block (dequantizing the nested 8-bit codes when double-quantized). */
export function blockAbsmax(q: Pick<Quantized4bit, 'absmax' | 'nested'>): Float32Array {
  if (!q.nested) {
    if (!(q.absmax instanceof Float32Array))
      throw new Error('blockAbsmax: absmax must be f32 without nested state');
    return q.absmax;
  }
  if (!(q.absmax instanceof Uint8Array))
    throw new Error('blockAbsmax: absmax must be u8 codes with nested state');
  const { absmax: nabs, code, blocksize, offset } = q.nested;
  const out = new Float32Array(q.absmax.length);
  for (let b = 0; b < out.length; b++) {
    out[b] = f(f(code[q.absmax[b]!]! * nabs[Math.floor(b / blocksize)]!) + offset);
  }
  return out;
}

/** The 4-bit code of element i. */
export function nibbleAt(packed: Uint8Array, i: number): number {
  const byte = packed[i >> 1]!;
  return (i & 1) === 0 ? byte >> 4 : byte & 0x0f;
}

/** Float32 values: code[nibble] · absmax[block], like bnb's fp32 dequantization. */
export function dequantize4bit(q: Quantized4bit): Float32Array {
  const absmax = blockAbsmax(q);
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) {
    out[i] = q.code[nibbleAt(q.packed, i)]! * absmax[Math.floor(i / q.blocksize)]!;
  }
  return out;
}

/** Bytes of the quantized tensor (packed + absmax + nested absmax; the shared code tables excluded). */
export function quantizedBytes(q: Quantized4bit): number {
  const absmaxBytes = q.absmax.byteLength;
  const nestedBytes = q.nested ? q.nested.absmax.byteLength + 4 /* offset */ : 0;
  return q.packed.byteLength + absmaxBytes + nestedBytes;
}
