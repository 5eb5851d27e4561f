import type { Packed4bitWeight } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { matrixRows, packed4bitDims } from '../shape-checks.js';
import { checks, expectShape, f32, i32, noAlias, u8 } from './checks.js';
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
    bf16: boolean,
  ]
) => void;

const dequantizeKernel = kernel<Dequantize4bitKernel>('dequantize4bit');
const embeddingKernel =
  kernel<(...args: [...QuantArgs, ids: Int32Array, out: Float32Array, n: number]) => void>(
    'embedding4bit',
  );
const matmulKernel = kernel<Matmul4bitKernel>('matmul4bit');

/**
 * out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out (dequantized panel by panel, never whole).
 * `bf16`: x and the dequantized weight rounded to bf16, products summed in f32 (vdpbf16ps; only
 * where the addon reports bf16Available()).
 */
export function matmul4bit(
  x: Tensor,
  w: Packed4bitWeight,
  out: Tensor,
  beta = 0,
  bf16 = false,
): void {
  const op = 'matmul4bit';
  const q = quantArgs(op, w);
  const n = matrixRows(checks, op, 'x', x, w.cols);
  expectShape(op, 'out', out, [n, w.rows]);
  const xd = f32(op, 'x', x);
  const od = f32(op, 'out', out);
  noAlias(op, 'x and out', x, out);
  matmulKernel(...q, xd, od, n, beta, false, bf16);
}

/** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx (the input gradient; w is frozen); `bf16` as above. */
export function matmul4bitInputGrad(
  dy: Tensor,
  w: Packed4bitWeight,
  dx: Tensor,
  beta = 0,
  bf16 = false,
): void {
  const op = 'matmul4bitInputGrad';
  const q = quantArgs(op, w);
  const n = matrixRows(checks, op, 'dy', dy, w.rows);
  expectShape(op, 'dx', dx, [n, w.cols]);
  const dyd = f32(op, 'dy', dy);
  const dxd = f32(op, 'dx', dx);
  noAlias(op, 'dy and dx', dy, dx);
  matmulKernel(...q, dyd, dxd, n, beta, true, bf16);
}

/** out[rows, cols] = dequant(w) */
export function dequantize4bit(w: Packed4bitWeight, out: Tensor): void {
  const op = 'dequantize4bit';
  const q = quantArgs(op, w);
  expectShape(op, 'out', out, [w.rows, w.cols]);
  dequantizeKernel(...q, f32(op, 'out', out));
}

/** out[n, cols] = rows ids[n] of dequant(w): an embedding lookup from a 4-bit table. */
export function embedding4bit(ids: Tensor, w: Packed4bitWeight, out: Tensor): void {
  const op = 'embedding4bit';
  const q = quantArgs(op, w);
  const idd = i32(op, 'ids', ids);
  expectShape(op, 'out', out, [ids.size, w.cols]);
  embeddingKernel(...q, idd, f32(op, 'out', out), ids.size);
}

/** The weight's arrays after the shared size checks (shape-checks.ts) and this backend's dtypes. */
function quantArgs(op: string, w: Packed4bitWeight): QuantArgs {
  const { rows, cols, blocksize, nested } = packed4bitDims(checks, op, w);
  const packed = u8(op, 'w.packed', w.packed);
  const code = f32(op, 'w.code', w.code);
  if (nested === null || w.nested === null) {
    const absmax = f32(op, 'w.absmax', w.absmax);
    return [packed, code, absmax, null, null, null, 0, 0, rows, cols, blocksize];
  }
  return [
    packed,
    code,
    null,
    u8(op, 'w.absmax (double-quantized)', w.absmax),
    f32(op, 'w.nested.absmax', w.nested.absmax),
    f32(op, 'w.nested.code', w.nested.code),
    nested.blocksize,
    nested.offset,
    rows,
    cols,
    blocksize,
  ];
}
