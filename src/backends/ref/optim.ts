// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { AdamWOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';

export function adamw(_param: Tensor, _grad: Tensor, _m: Tensor, _v: Tensor, _options: AdamWOptions): void {
  throw new Error('ref.adamw: not implemented');
}
