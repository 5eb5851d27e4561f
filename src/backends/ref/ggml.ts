/**
 * Reference kernels for frozen weights in a GGUF's own blocks (capabilities.ts GgmlBackend): each
 * row is dequantized with the reference dequantizer (ggml's values), products summed in float64.
 */
import type { Tensor } from '../../tensor/tensor.js';
import { dequantizeGgmlRow, type GgmlWeight } from '../../quant/ggml-blocks.js';
import { ggmlDims, matrixRows } from '../shape-checks.js';
import { bytes, checks, expectShape, floats, noAlias, sameFloatType } from './check.js';

function rowsOf(op: string, w: GgmlWeight): { rows: number; cols: number; blocks: Uint8Array } {
  const { rows, cols } = ggmlDims(checks, op, w);
  return { rows, cols, blocks: bytes(op, 'w.blocks', w.blocks) };
}

/** out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out */
export function matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor, beta = 0): void {
  const op = 'matmulGgml';
  const { rows, cols, blocks } = rowsOf(op, w);
  sameFloatType(op, { x, out });
  noAlias(op, 'x and out', x, out);
  const n = matrixRows(checks, op, 'x', x, cols);
  expectShape(op, 'out', out, [n, rows]);
  const X = x.data;
  const O = out.data;
  const row = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    dequantizeGgmlRow(w.type, blocks, cols, r, row);
    for (let t = 0; t < n; t++) {
      let acc = 0;
      for (let c = 0; c < cols; c++) acc += X[t * cols + c]! * row[c]!;
      const o = t * rows + r;
      O[o] = beta === 0 ? acc : acc + beta * O[o]!;
    }
  }
}

/** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx */
export function matmulGgmlInputGrad(dy: Tensor, w: GgmlWeight, dx: Tensor, beta = 0): void {
  const op = 'matmulGgmlInputGrad';
  const { rows, cols, blocks } = rowsOf(op, w);
  sameFloatType(op, { dy, dx });
  noAlias(op, 'dy and dx', dy, dx);
  const n = matrixRows(checks, op, 'dy', dy, rows);
  expectShape(op, 'dx', dx, [n, cols]);
  const DY = dy.data;
  const DX = dx.data;
  const acc = new Float64Array(n * cols);
  const row = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    dequantizeGgmlRow(w.type, blocks, cols, r, row);
    for (let t = 0; t < n; t++) {
      const g = DY[t * rows + r]!;
      for (let c = 0; c < cols; c++) acc[t * cols + c]! += g * row[c]!;
    }
  }
  for (let i = 0; i < acc.length; i++) DX[i] = beta === 0 ? acc[i]! : acc[i]! + beta * DX[i]!;
}

/** out[rows, cols] = dequant(w) */
export function dequantizeGgml(w: GgmlWeight, out: Tensor): void {
  const op = 'dequantizeGgml';
  const { rows, cols, blocks } = rowsOf(op, w);
  floats(op, 'out', out);
  expectShape(op, 'out', out, [rows, cols]);
  const row = new Float64Array(cols);
  const O = out.data;
  for (let r = 0; r < rows; r++) {
    dequantizeGgmlRow(w.type, blocks, cols, r, row);
    for (let c = 0; c < cols; c++) O[r * cols + c] = row[c]!;
  }
}
