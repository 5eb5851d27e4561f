// STUB: to be implemented (see src/tensor/backend.ts for the contract).
import type { AttentionOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';

export function attention(_q: Tensor, _k: Tensor, _v: Tensor, _out: Tensor, _lse: Tensor, _options: AttentionOptions): void {
  throw new Error('cpu.attention: not implemented');
}

export function attentionBackward(_dout: Tensor, _q: Tensor, _k: Tensor, _v: Tensor, _out: Tensor, _lse: Tensor, _dq: Tensor, _dk: Tensor, _dv: Tensor, _options: AttentionOptions): void {
  throw new Error('cpu.attentionBackward: not implemented');
}
