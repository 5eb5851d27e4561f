// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { Tensor } from '../../tensor/tensor.js';

export function rmsnorm(_x: Tensor, _weight: Tensor, _eps: number, _out: Tensor, _rstd: Tensor): void {
  throw new Error('cpu.rmsnorm: not implemented');
}

export function rmsnormBackward(_dout: Tensor, _x: Tensor, _weight: Tensor, _rstd: Tensor, _dx: Tensor, _dweight: Tensor | null): void {
  throw new Error('cpu.rmsnormBackward: not implemented');
}
