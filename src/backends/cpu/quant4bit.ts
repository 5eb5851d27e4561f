import type { Packed4bitWeight } from '../../tensor/backend.js';
import { shapeString } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import { assertNoOverlap } from './matmul.js';
import { kernel } from './native.js';

/** The weight's arrays and sizes in the order the native entry points take them. */
type QuantArgs = [
  packed: Uint8Array,
  code: Float32Array,
  absmax: Float32Array | null,
  absmaxCodes: Uint8Array | null,
  nestedAbsmax: Float32Array | null,
  nestedCode: Float32Array | null,
  nestedBlocksize: number,
  nestedOffset: number,
  rows: number,
  cols: number,
  blocksize: number,
];

type Dequantize4bitKernel = (...args: [...QuantArgs, out: Float32Array]) => void;
type Matmul4bitKernel = (
  ...args: [
    ...QuantArgs,
    input: Float32Array,
    out: Float32Array,
    n: number,
    beta: number,
    inputGrad: boolean,
  ]
) => void;

const dequantizeKernel = kernel<Dequantize4bitKernel>('dequantize4bit');
const embeddingKernel =
  kernel<(...args: [...QuantArgs, ids: Int32Array, out: Float32Array, n: number]) => void>(
    'embedding4bit',
  );
const matmulKernel = kernel<Matmul4bitKernel>('matmul4bit');

/** out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out (dequantized panel by panel, never whole). */
export function matmul4bit(x: Tensor, w: Packed4bitWeight, out: Tensor, beta = 0): void {
  const q = quantArgs(w, 'matmul4bit');
  const n = rowsOf(x, w.cols, 'matmul4bit', 'x');
  expectShape(out, [n, w.rows], 'matmul4bit', 'out');
  const xd = f32(x, 'matmul4bit', 'x');
  const od = f32(out, 'matmul4bit', 'out');
  assertNoOverlap(od, xd, 'x');
  matmulKernel(...q, xd, od, n, beta, false);
}

/** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx (the input gradient; w is frozen). */
export function matmul4bitInputGrad(dy: Tensor, w: Packed4bitWeight, dx: Tensor, beta = 0): void {
  const q = quantArgs(w, 'matmul4bitInputGrad');
  const n = rowsOf(dy, w.rows, 'matmul4bitInputGrad', 'dy');
  expectShape(dx, [n, w.cols], 'matmul4bitInputGrad', 'dx');
  const dyd = f32(dy, 'matmul4bitInputGrad', 'dy');
  const dxd = f32(dx, 'matmul4bitInputGrad', 'dx');
  assertNoOverlap(dxd, dyd, 'dy');
  matmulKernel(...q, dyd, dxd, n, beta, true);
}

/** out[rows, cols] = dequant(w) */
export function dequantize4bit(w: Packed4bitWeight, out: Tensor): void {
  const q = quantArgs(w, 'dequantize4bit');
  expectShape(out, [w.rows, w.cols], 'dequantize4bit', 'out');
  dequantizeKernel(...q, f32(out, 'dequantize4bit', 'out'));
}

/** out[n, cols] = rows ids[n] of dequant(w): an embedding lookup from a 4-bit table. */
export function embedding4bit(ids: Tensor, w: Packed4bitWeight, out: Tensor): void {
  const q = quantArgs(w, 'embedding4bit');
  if (ids.dtype !== 'i32') throw new Error(`cpu.embedding4bit: ids must be i32, got ${ids.dtype}`);
  expectShape(out, [ids.size, w.cols], 'embedding4bit', 'out');
  embeddingKernel(...q, ids.data as Int32Array, f32(out, 'embedding4bit', 'out'), ids.size);
}

function quantArgs(w: Packed4bitWeight, op: string): QuantArgs {
  const { rows, cols, blocksize } = w;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new Error(`cpu.${op}: bad weight shape [${rows}, ${cols}]`);
  }
  if (!Number.isInteger(blocksize) || blocksize < 1)
    throw new Error(`cpu.${op}: bad blocksize ${blocksize}`);
  const size = rows * cols;
  const nblocks = Math.ceil(size / blocksize);
  const packed = typed(w.packed, 'u8', Math.ceil(size / 2), op, 'packed') as Uint8Array;
  const code = typed(w.code, 'f32', 16, op, 'code') as Float32Array;
  if (w.nested === null) {
    const absmax = typed(w.absmax, 'f32', nblocks, op, 'absmax (no double quant)') as Float32Array;
    return [packed, code, absmax, null, null, null, 0, 0, rows, cols, blocksize];
  }
  const nb = w.nested.blocksize;
  if (!Number.isInteger(nb) || nb < 1) throw new Error(`cpu.${op}: bad nested blocksize ${nb}`);
  const codes = typed(w.absmax, 'u8', nblocks, op, 'absmax (double quant codes)') as Uint8Array;
  const nestedAbsmax = typed(
    w.nested.absmax,
    'f32',
    Math.ceil(nblocks / nb),
    op,
    'nested.absmax',
  ) as Float32Array;
  const nestedCode = typed(w.nested.code, 'f32', 256, op, 'nested.code') as Float32Array;
  return [
    packed,
    code,
    null,
    codes,
    nestedAbsmax,
    nestedCode,
    nb,
    w.nested.offset,
    rows,
    cols,
    blocksize,
  ];
}

function typed(
  t: Tensor,
  dtype: 'u8' | 'f32',
  size: number,
  op: string,
  what: string,
): Uint8Array | Float32Array {
  if (t.dtype !== dtype) throw new Error(`cpu.${op}: ${what} must be ${dtype}, got ${t.dtype}`);
  if (t.size !== size)
    throw new Error(`cpu.${op}: ${what} has ${t.size} elements, expected ${size}`);
  return t.data as Uint8Array | Float32Array;
}

function rowsOf(t: Tensor, cols: number, op: string, what: string): number {
  if (t.rank !== 2 || t.shape[1] !== cols) {
    throw new Error(`cpu.${op}: ${what} ${shapeString(t.shape)} must be [n, ${cols}]`);
  }
  return t.shape[0]!;
}

function expectShape(t: Tensor, shape: readonly number[], op: string, what: string): void {
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`cpu.${op}: ${what} ${shapeString(t.shape)} must be ${shapeString(shape)}`);
  }
}

function f32(t: Tensor, op: string, what: string): Float32Array {
  if (t.dtype !== 'f32') throw new Error(`cpu.${op}: ${what} must be f32, got ${t.dtype}`);
  return t.data as Float32Array;
}
