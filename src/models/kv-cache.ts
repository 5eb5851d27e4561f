/** The KV cache generation uses (CausalLM.forwardCached). */
import type { Backend } from '../tensor/backend.js';
import type { DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ModelDims } from './causal-lm.js';

/**
 * Keys and values of past positions, per layer ([capacity, Hkv, D], batch 1), so generation
 * processes each new token once.
 */
export class KvCache {
  private readonly keys: Tensor[];
  private readonly values: Tensor[];
  private _length = 0;
  private pending = 0;

  constructor(
    readonly model: { readonly dims: ModelDims; readonly backend: Backend; readonly dtype: DType },
    readonly capacity: number,
  ) {
    const d = model.dims;
    const be = model.backend;
    this.keys = [];
    this.values = [];
    for (let i = 0; i < d.numLayers; i++) {
      this.keys.push(be.zeros([capacity, d.numKvHeads, d.headDim], model.dtype));
      this.values.push(be.zeros([capacity, d.numKvHeads, d.headDim], model.dtype));
    }
  }

  get length(): number {
    return this._length;
  }

  /** Writes this call's k/v rows for `layer` after the committed prefix; returns the views attention reads. */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const be = this.model.backend;
    const d = this.model.dims;
    const n = k.shape[0]!;
    this.pending = n;
    const end = this._length + n;
    be.copy(k, this.keys[layer]!.rows(this._length, end).view(k.shape));
    be.copy(v, this.values[layer]!.rows(this._length, end).view(v.shape));
    return {
      k: this.keys[layer]!.rows(0, end).view([1, end, d.numKvHeads, d.headDim]),
      v: this.values[layer]!.rows(0, end).view([1, end, d.numKvHeads, d.headDim]),
    };
  }

  /** Makes the rows written by the last forward part of the prefix. */
  commit(n: number): void {
    if (n !== this.pending) throw new Error('KvCache: commit does not match the appended rows');
    this._length += n;
    this.pending = 0;
  }

  /** Forgets everything after `length` tokens (e.g. to reuse a shared prompt prefix). */
  truncate(length: number): void {
    if (length < 0 || length > this._length)
      throw new Error(`KvCache.truncate(${length}) out of range`);
    this._length = length;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
  }
}
