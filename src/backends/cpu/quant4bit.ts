// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { Packed4bitWeight } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';

export function matmul4bit(_x: Tensor, _w: Packed4bitWeight, _out: Tensor, _beta = 0): void {
  throw new Error('cpu.matmul4bit: not implemented');
}

export function matmul4bitInputGrad(_dy: Tensor, _w: Packed4bitWeight, _dx: Tensor, _beta = 0): void {
  throw new Error('cpu.matmul4bitInputGrad: not implemented');
}

export function dequantize4bit(_w: Packed4bitWeight, _out: Tensor): void {
  throw new Error('cpu.dequantize4bit: not implemented');
}
