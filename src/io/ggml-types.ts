/**
 * ggml tensor types (include/ggml.h numbering) with their block geometry, and dequantization of
 * the ones we load (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K) to f32. Layouts follow
 * ggml-common.h / ggml-quants.c (docs/formats.md §5.2).
 */
import { decodeBF16, decodeF16 } from './half.js';
import { dequantizeGgmlBlocks, GGML_QUANT_TYPES, ggmlQuantTypeOf } from '../quant/ggml-blocks.js';

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
const DEQUANTIZABLE = new Set<number>([0, 1, 30, 8, 2, 12, 13, 14]);

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
    default: {
      const q = ggmlQuantTypeOf(type);
      if (q === null)
        throw new Error(
          `cannot dequantize ggml type ${ggmlTypeName(type)} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)`,
        );
      // The block formats and their reference dequantizers live in the quant layer (also used by
      // the backends' GGUF-block matmuls, --quant keep).
      dequantizeGgmlBlocks(q, src, 0, nElements / GGML_QUANT_TYPES[q].blockElems, out);
    }
  }
}
