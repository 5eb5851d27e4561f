// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { Tensor } from '../../tensor/tensor.js';

export function embedding(_ids: Tensor, _table: Tensor, _out: Tensor): void {
  throw new Error('ref.embedding: not implemented');
}

export function embeddingBackward(_ids: Tensor, _dout: Tensor, _dtable: Tensor): void {
  throw new Error('ref.embeddingBackward: not implemented');
}
