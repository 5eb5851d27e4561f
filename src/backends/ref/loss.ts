// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { Tensor } from '../../tensor/tensor.js';

export function crossEntropy(_logits: Tensor, _labels: Tensor, _ignoreIndex: number, _losses: Tensor, _dlogits: Tensor | null, _gradScale: number): void {
  throw new Error('ref.crossEntropy: not implemented');
}
