// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { RopeLayout } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';

export function rope(_x: Tensor, _positions: Tensor, _cos: Tensor, _sin: Tensor, _layout: RopeLayout, _inverse: boolean, _out: Tensor): void {
  throw new Error('cpu.rope: not implemented');
}
