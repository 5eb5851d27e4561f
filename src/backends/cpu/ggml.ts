/**
 * Frozen weights in a GGUF's own blocks on the native addon (native/src/ggml_quants.cc): the two
 * products decode straight into the GEMM's packed panels, in f32 or (where the CPU has AVX512_BF16
 * and the backend computes in bf16) bf16 with f32 accumulation.
 */
import type { Tensor } from '../../tensor/tensor.js';
import { GGML_QUANT_TYPES, type GgmlWeight } from '../../quant/ggml-blocks.js';
import { ggmlDims, matrixRows } from '../shape-checks.js';
import { checks, expectShape, f32, noAlias, u8 } from './checks.js';
import { kernel } from './native.js';

type Matrix = [blocks: Uint8Array, type: number, rows: number, cols: number];

const dequantizeKernel =
  kernel<(...args: [...Matrix, out: Float32Array]) => void>('dequantizeGgml');
const matmulKernel =
  kernel<
    (
      ...args: [
        ...Matrix,
        input: Float32Array,
        out: Float32Array,
        n: number,
        beta: number,
        inputGrad: boolean,
        bf16: boolean,
      ]
    ) => void
  >('matmulGgml');

function matrix(op: string, w: GgmlWeight): Matrix {
  const { rows, cols } = ggmlDims(checks, op, w);
  return [u8(op, 'w.blocks', w.blocks), GGML_QUANT_TYPES[w.type].id, rows, cols];
}

/** out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out */
export function matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor, beta = 0, bf16 = false): void {
  const op = 'matmulGgml';
  const m = matrix(op, w);
  const n = matrixRows(checks, op, 'x', x, w.cols);
  expectShape(op, 'out', out, [n, w.rows]);
  noAlias(op, 'x and out', x, out);
  matmulKernel(...m, f32(op, 'x', x), f32(op, 'out', out), n, beta, false, bf16);
}

/** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx */
export function matmulGgmlInputGrad(
  dy: Tensor,
  w: GgmlWeight,
  dx: Tensor,
  beta = 0,
  bf16 = false,
): void {
  const op = 'matmulGgmlInputGrad';
  const m = matrix(op, w);
  const n = matrixRows(checks, op, 'dy', dy, w.rows);
  expectShape(op, 'dx', dx, [n, w.cols]);
  noAlias(op, 'dy and dx', dy, dx);
  matmulKernel(...m, f32(op, 'dy', dy), f32(op, 'dx', dx), n, beta, true, bf16);
}

/** out[rows, cols] = dequant(w) */
export function dequantizeGgml(w: GgmlWeight, out: Tensor): void {
  const op = 'dequantizeGgml';
  const m = matrix(op, w);
  expectShape(op, 'out', out, [w.rows, w.cols]);
  dequantizeKernel(...m, f32(op, 'out', out));
}
