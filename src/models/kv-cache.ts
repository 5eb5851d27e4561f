/** The KV cache generation uses (CausalLM.forwardCached). */
import type { Backend } from '../tensor/backend.js';
import type { DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { layerWindowOf, type ModelDims } from './causal-lm.js';

export interface KvCacheOptions {
  /**
   * The most tokens one forward appends (generate prefills a long prompt in chunks of this size).
   * Given, a sliding-window layer keeps only the keys its window can still reach: a buffer of
   * 2·(window − 1) + maxAppend rows instead of `capacity` (Mistral, Qwen2, Gemma's local layers),
   * so long generations hold bounded memory there. Absent: every layer keeps every position.
   */
  readonly maxAppend?: number;
}

/**
 * Keys and values of past positions, per layer ([rows, Hkv, D], batch 1), so generation processes
 * each new token once. A global layer holds all `capacity` positions. A sliding layer with
 * `maxAppend` set holds the most recent ones in a buffer that starts at absolute position
 * `start`: when an append would overflow it, the last window − 1 positions (all that a query of
 * this call or later can see) move to its front. Attention reads the buffer's rows from its front
 * and places the queries at its end (query i of n sits at key n_keys − n + i), so the absolute
 * positions, and with them the window mask, are unchanged.
 */
export class KvCache {
  private readonly keys: Tensor[];
  private readonly values: Tensor[];
  /** Per layer: its window (null: global) and the absolute position of its buffer's first row. */
  private readonly windows: (number | null)[];
  private readonly starts: number[];
  private _length = 0;
  private pending = 0;
  readonly maxAppend: number;

  constructor(
    readonly model: { readonly dims: ModelDims; readonly backend: Backend; readonly dtype: DType },
    readonly capacity: number,
    options: KvCacheOptions = {},
  ) {
    const d = model.dims;
    const be = model.backend;
    this.maxAppend = options.maxAppend ?? capacity;
    if (!Number.isSafeInteger(this.maxAppend) || this.maxAppend < 1)
      throw new Error(`KvCache: maxAppend ${this.maxAppend} is not a positive integer`);
    this.keys = [];
    this.values = [];
    this.windows = [];
    this.starts = [];
    for (let i = 0; i < d.numLayers; i++) {
      const w = options.maxAppend === undefined ? null : layerWindowOf(d, i);
      // 2·(w − 1) + maxAppend rows: a move then never overlaps what it moves (see append).
      const rows = w === null ? capacity : Math.min(capacity, 2 * (w - 1) + this.maxAppend);
      this.windows.push(w);
      this.starts.push(0);
      this.keys.push(be.zeros([rows, d.numKvHeads, d.headDim], model.dtype));
      this.values.push(be.zeros([rows, d.numKvHeads, d.headDim], model.dtype));
    }
  }

  get length(): number {
    return this._length;
  }

  /** Positions layer `layer` holds memory for (capacity, or less for a trimmed sliding layer). */
  layerRows(layer: number): number {
    return this.keys[layer]!.shape[0]!;
  }

  /** Writes this call's k/v rows for `layer` after the committed prefix; returns the views attention reads. */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const be = this.model.backend;
    const d = this.model.dims;
    const n = k.shape[0]!;
    if (n > this.maxAppend)
      throw new Error(`KvCache: ${n} tokens in one forward exceed maxAppend ${this.maxAppend}`);
    this.pending = n;
    const keys = this.keys[layer]!;
    const values = this.values[layer]!;
    const rows = keys.shape[0]!;
    let start = this.starts[layer]!;
    const w = this.windows[layer]!;
    if (this._length + n - start > rows && w !== null) {
      // Keep the last w − 1 positions. Moving happens only when length − start > rows − n ≥
      // 2·(w − 1), so the rows moved start at or past w − 1 > keep: source and destination never
      // overlap.
      const keep = Math.min(this._length - start, w - 1);
      const from = this._length - keep - start;
      if (keep > 0) {
        be.copy(keys.rows(from, from + keep), keys.rows(0, keep));
        be.copy(values.rows(from, from + keep), values.rows(0, keep));
      }
      start = this._length - keep;
      this.starts[layer] = start;
    }
    const at = this._length - start;
    const end = at + n;
    be.copy(k, keys.rows(at, end).view(k.shape));
    be.copy(v, values.rows(at, end).view(v.shape));
    return {
      k: keys.rows(0, end).view([1, end, d.numKvHeads, d.headDim]),
      v: values.rows(0, end).view([1, end, d.numKvHeads, d.headDim]),
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
    this.windows.forEach((w, layer) => {
      const start = this.starts[layer]!;
      // The next query (at `length`) sees keys from length − w + 1: they must still be held.
      if (w !== null && start > Math.max(0, length - w + 1))
        throw new Error(
          `KvCache.truncate(${length}): layer ${layer} keeps positions from ${start} only (sliding window ${w})`,
        );
    });
    this._length = length;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
  }
}
