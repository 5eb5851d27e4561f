// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { MatmulOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';

export function matmul(_a: Tensor, _b: Tensor, _out: Tensor, _options: MatmulOptions = {}): void {
  throw new Error('cpu.matmul: not implemented');
}
