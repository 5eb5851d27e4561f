import type { Packed4bitWeight } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { blockAbsmax, nibbleAt } from '../../quant/quantize4bit.js';
import { matrixRows, packed4bitDims } from '../shape-checks.js';
import { roundBf16, roundedBf16 } from './bf16.js';
import { bytes, checks, expectShape, fail, floats, noAlias, sameFloatType } from './check.js';

/** A validated view of a 4-bit weight: packed codes, code values and float32 absmax per block. */
interface Decoded4bit {
  readonly rows: number;
  readonly cols: number;
  readonly packed: Uint8Array;
  readonly code: ArrayLike<number>;
  readonly absmax: Float32Array;
  readonly blocksize: number;
}

/** Checks a Packed4bitWeight (shape-checks.ts, then dtypes) and resolves its absmax (nblocks values). */
function decode(op: string, w: Packed4bitWeight): Decoded4bit {
  const { rows, cols, blocksize, nested } = packed4bitDims(checks, op, w);
  const packed = bytes(op, 'w.packed', w.packed);
  const code = floats(op, 'w.code', w.code);
  let absmax: Float32Array;
  if (nested && w.nested) {
    absmax = blockAbsmax({
      absmax: bytes(op, 'w.absmax (double-quantized)', w.absmax),
      nested: {
        absmax: Float32Array.from(floats(op, 'w.nested.absmax', w.nested.absmax)),
        code: Float32Array.from(floats(op, 'w.nested.code', w.nested.code)),
        blocksize: nested.blocksize,
        offset: nested.offset,
      },
    });
  } else {
    absmax = Float32Array.from(floats(op, 'w.absmax', w.absmax));
  }
  return { rows, cols, packed, code, absmax, blocksize };
}

/**
 * Row r of the dequantized weight (float32 values, as bnb's fp32 dequantization produces); with
 * `bf16`, each then rounded to bf16 (the bf16 compute reference: dequantize in fp32, round once).
 */
function dequantRow(w: Decoded4bit, r: number, row: Float64Array, bf16 = false): void {
  const base = r * w.cols;
  for (let c = 0; c < w.cols; c++) {
    const i = base + c;
    const v = Math.fround(w.code[nibbleAt(w.packed, i)]! * w.absmax[Math.floor(i / w.blocksize)]!);
    row[c] = bf16 ? roundBf16(v) : v;
  }
}

/**
 * out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out (dequantizes one weight row at a time).
 * `bf16`: the reference of bf16 compute, x and the fp32-dequantized weight rounded to bf16.
 */
export function matmul4bit(
  x: Tensor,
  w: Packed4bitWeight,
  out: Tensor,
  beta = 0,
  bf16 = false,
): void {
  const op = 'matmul4bit';
  const d = decode(op, w);
  sameFloatType(op, { x, out });
  noAlias(op, 'x and out', x, out);
  const n = matrixRows(checks, op, 'x', x, d.cols);
  expectShape(op, 'out', out, [n, d.rows]);
  const X = bf16 ? roundedBf16(x.data) : x.data;
  const O = out.data;
  const row = new Float64Array(d.cols);
  for (let r = 0; r < d.rows; r++) {
    dequantRow(d, r, row, bf16);
    for (let t = 0; t < n; t++) {
      let acc = 0;
      for (let c = 0; c < d.cols; c++) acc += X[t * d.cols + c]! * row[c]!;
      const o = t * d.rows + r;
      O[o] = beta === 0 ? acc : acc + beta * O[o]!;
    }
  }
}

/** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx; `bf16` as for matmul4bit. */
export function matmul4bitInputGrad(
  dy: Tensor,
  w: Packed4bitWeight,
  dx: Tensor,
  beta = 0,
  bf16 = false,
): void {
  const op = 'matmul4bitInputGrad';
  const d = decode(op, w);
  sameFloatType(op, { dy, dx });
  noAlias(op, 'dy and dx', dy, dx);
  const n = matrixRows(checks, op, 'dy', dy, d.rows);
  expectShape(op, 'dx', dx, [n, d.cols]);
  const DY = bf16 ? roundedBf16(dy.data) : dy.data;
  const DX = dx.data;
  const acc = new Float64Array(n * d.cols);
  const row = new Float64Array(d.cols);
  for (let r = 0; r < d.rows; r++) {
    dequantRow(d, r, row, bf16);
    for (let t = 0; t < n; t++) {
      const g = DY[t * d.rows + r]!;
      for (let c = 0; c < d.cols; c++) acc[t * d.cols + c]! += g * row[c]!;
    }
  }
  for (let i = 0; i < acc.length; i++) DX[i] = beta === 0 ? acc[i]! : acc[i]! + beta * DX[i]!;
}

/** out[rows, cols] = dequant(w). */
export function dequantize4bit(w: Packed4bitWeight, out: Tensor): void {
  const op = 'dequantize4bit';
  const d = decode(op, w);
  floats(op, 'out', out);
  expectShape(op, 'out', out, [d.rows, d.cols]);
  const O = out.data;
  const row = new Float64Array(d.cols);
  for (let r = 0; r < d.rows; r++) {
    dequantRow(d, r, row);
    for (let c = 0; c < d.cols; c++) O[r * d.cols + c] = row[c]!;
  }
}

/** out[n, cols] = rows ids[n] of dequant(w): an embedding lookup from a 4-bit table. */
export function embedding4bit(ids: Tensor, w: Packed4bitWeight, out: Tensor): void {
  const op = 'embedding4bit';
  const d = decode(op, w);
  if (ids.dtype !== 'i32') fail(op, `ids must be i32, got ${ids.dtype}`);
  floats(op, 'out', out);
  expectShape(op, 'out', out, [ids.size, d.cols]);
  const I = ids.data;
  for (let i = 0; i < I.length; i++) {
    if (!Number.isInteger(I[i]) || I[i]! < 0 || I[i]! >= d.rows)
      fail(op, `id ${I[i]} at position ${i} is outside [0, ${d.rows})`);
  }
  const O = out.data;
  const row = new Float64Array(d.cols);
  for (let i = 0; i < I.length; i++) {
    dequantRow(d, I[i]!, row);
    for (let c = 0; c < d.cols; c++) O[i * d.cols + c] = row[c]!;
  }
}
