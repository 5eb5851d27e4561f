import type { Tensor } from '../tensor/tensor.js';
import type { Param } from '../nn/param.js';
import { createDynamicMap } from '../quant/dynamic-map.js';

export interface AdamWHyper {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

/** Named optimizer state tensors as host arrays (what a checkpoint stores). */
export type OptimizerStateArrays = Record<string, Float32Array | Uint8Array>;

export interface Optimizer {
  readonly kind: 'adamw' | 'adamw8bit';
  /** Number of completed steps. */
  readonly steps: number;
  /** One update of every parameter with its gradient at learning rate lr. */
  step(lr: number): void;
  /** State for checkpoints (exact bytes; restoring gives bit-identical continuation). */
  state(): { steps: number; arrays: OptimizerStateArrays };
  restore(steps: number, arrays: OptimizerStateArrays): void;
  /** Bytes of optimizer state. */
  readonly stateBytes: number;
  dispose(): void;
}

/** AdamW with fp32 first/second moments, on the parameters' backend (PyTorch semantics). */
export class AdamW implements Optimizer {
  readonly kind = 'adamw';
  private readonly m: Tensor[];
  private readonly v: Tensor[];
  private _steps = 0;

  constructor(
    private readonly params: readonly Param[],
    private readonly hyper: AdamWHyper = ADAMW_DEFAULTS,
  ) {
    this.m = params.map((p) => p.backend.zeros(p.value.shape, 'f32'));
    this.v = params.map((p) => p.backend.zeros(p.value.shape, 'f32'));
  }

  get steps(): number {
    return this._steps;
  }

  get stateBytes(): number {
    return this.params.reduce((s, p) => s + p.value.size * 8, 0);
  }

  step(lr: number): void {
    this._steps++;
    this.params.forEach((p, i) => {
      if (!p.grad) throw new Error(`parameter ${p.name} has no gradient`);
      p.backend.adamw(p.value, p.grad, this.m[i]!, this.v[i]!, { lr, ...this.hyper, step: this._steps });
    });
  }

  state(): { steps: number; arrays: OptimizerStateArrays } {
    const arrays: OptimizerStateArrays = {};
    this.params.forEach((p, i) => {
      arrays[`${p.name}.exp_avg`] = Float32Array.from(this.m[i]!.data);
      arrays[`${p.name}.exp_avg_sq`] = Float32Array.from(this.v[i]!.data);
    });
    return { steps: this._steps, arrays };
  }

  restore(steps: number, arrays: OptimizerStateArrays): void {
    this.params.forEach((p, i) => {
      this.m[i]!.write(requireArray(arrays, `${p.name}.exp_avg`, p.value.size));
      this.v[i]!.write(requireArray(arrays, `${p.name}.exp_avg_sq`, p.value.size));
    });
    this._steps = steps;
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose();
  }
}

const BLOCK = 256;

/**
 * 8-bit blockwise AdamW with bitsandbytes semantics (formats.md §2): moments stored as uint8 codes
 * per block of 256 (signed dynamic map for m, unsigned for v) with a float32 absmax per block;
 * dequantized, updated and requantized each step. Parameters with fewer than `min8bitSize`
 * elements keep fp32 moments, as bnb does. States live in host memory, off the backend's hot path.
 */
export class AdamW8bit implements Optimizer {
  readonly kind = 'adamw8bit';
  private readonly qmap1 = createDynamicMap(true);
  private readonly qmap2 = createDynamicMap(false);
  private readonly mids1 = midpoints(this.qmap1);
  private readonly mids2 = midpoints(this.qmap2);
  private readonly slots: Slot[];
  private _steps = 0;

  constructor(
    private readonly params: readonly Param[],
    private readonly hyper: AdamWHyper = ADAMW_DEFAULTS,
    readonly min8bitSize = 4096,
  ) {
    this.slots = params.map((p) => {
      const n = p.value.size;
      if (n < min8bitSize) return { kind: 'f32', m: p.backend.zeros(p.value.shape, 'f32'), v: p.backend.zeros(p.value.shape, 'f32') };
      const blocks = Math.ceil(n / BLOCK);
      return {
        kind: 'u8',
        c1: new Uint8Array(n).fill(nearest(this.mids1, 0)),
        c2: new Uint8Array(n).fill(nearest(this.mids2, 0)),
        absmax1: new Float32Array(blocks),
        absmax2: new Float32Array(blocks),
      };
    });
  }

  get steps(): number {
    return this._steps;
  }

  get stateBytes(): number {
    return this.slots.reduce((s, x) => s + (x.kind === 'f32' ? x.m.size * 8 : x.c1.length * 2 + x.absmax1.byteLength * 2), 0);
  }

  step(lr: number): void {
    this._steps++;
    const t = this._steps;
    const { beta1, beta2, eps, weightDecay } = this.hyper;
    const c1t = 1 - beta1 ** t;
    const c2t = 1 - beta2 ** t;
    this.params.forEach((p, i) => {
      if (!p.grad) throw new Error(`parameter ${p.name} has no gradient`);
      const slot = this.slots[i]!;
      if (slot.kind === 'f32') {
        p.backend.adamw(p.value, p.grad, slot.m, slot.v, { lr, beta1, beta2, eps, weightDecay, step: t });
        return;
      }
      const w = p.value.data as Float32Array;
      const g = p.grad.data as Float32Array;
      const n = w.length;
      const stepSize = (-lr * Math.sqrt(c2t)) / c1t;
      const epsHat = eps * Math.sqrt(c2t);
      const m = new Float32Array(BLOCK);
      const v = new Float32Array(BLOCK);
      for (let b0 = 0, blk = 0; b0 < n; b0 += BLOCK, blk++) {
        const len = Math.min(BLOCK, n - b0);
        const a1 = slot.absmax1[blk]!;
        const a2 = slot.absmax2[blk]!;
        let max1 = 0;
        let max2 = 0;
        for (let j = 0; j < len; j++) {
          const gi = g[b0 + j]!;
          if (!Number.isFinite(gi)) {
            m[j] = 0;
            v[j] = 0;
            continue;
          }
          const mj = Math.fround(beta1 * Math.fround(this.qmap1[slot.c1[b0 + j]!]! * a1) + (1 - beta1) * gi);
          const vj = Math.fround(beta2 * Math.fround(this.qmap2[slot.c2[b0 + j]!]! * a2) + (1 - beta2) * gi * gi);
          m[j] = mj;
          v[j] = vj;
          max1 = Math.max(max1, Math.abs(mj));
          max2 = Math.max(max2, vj);
        }
        for (let j = 0; j < len; j++) {
          if (!Number.isFinite(g[b0 + j]!)) continue;
          let wj = w[b0 + j]! + stepSize * (m[j]! / (Math.sqrt(v[j]!) + epsHat));
          if (weightDecay > 0) wj *= 1 - lr * weightDecay;
          w[b0 + j] = wj;
        }
        slot.absmax1[blk] = max1;
        slot.absmax2[blk] = max2;
        const inv1 = max1 > 0 ? 1 / max1 : 0;
        const inv2 = max2 > 0 ? 1 / max2 : 0;
        for (let j = 0; j < len; j++) {
          const s1 = m[j]! * inv1;
          let c1 = nearest(this.mids1, s1);
          // bnb: keep the sign of m (a tiny m must not flip to a code of the other sign).
          const q = this.qmap1[c1]!;
          if (s1 > 0 && q < 0) c1++;
          else if (s1 < 0 && q > 0) c1--;
          slot.c1[b0 + j] = c1;
          slot.c2[b0 + j] = nearest(this.mids2, v[j]! * inv2);
        }
      }
    });
  }

  state(): { steps: number; arrays: OptimizerStateArrays } {
    const arrays: OptimizerStateArrays = {};
    this.params.forEach((p, i) => {
      const s = this.slots[i]!;
      if (s.kind === 'f32') {
        arrays[`${p.name}.exp_avg`] = Float32Array.from(s.m.data);
        arrays[`${p.name}.exp_avg_sq`] = Float32Array.from(s.v.data);
      } else {
        arrays[`${p.name}.state1`] = s.c1.slice();
        arrays[`${p.name}.state2`] = s.c2.slice();
        arrays[`${p.name}.absmax1`] = s.absmax1.slice();
        arrays[`${p.name}.absmax2`] = s.absmax2.slice();
      }
    });
    return { steps: this._steps, arrays };
  }

  restore(steps: number, arrays: OptimizerStateArrays): void {
    this.params.forEach((p, i) => {
      const s = this.slots[i]!;
      const n = p.value.size;
      if (s.kind === 'f32') {
        s.m.write(requireArray(arrays, `${p.name}.exp_avg`, n));
        s.v.write(requireArray(arrays, `${p.name}.exp_avg_sq`, n));
      } else {
        const blocks = Math.ceil(n / BLOCK);
        s.c1.set(requireArray(arrays, `${p.name}.state1`, n));
        s.c2.set(requireArray(arrays, `${p.name}.state2`, n));
        s.absmax1.set(requireArray(arrays, `${p.name}.absmax1`, blocks));
        s.absmax2.set(requireArray(arrays, `${p.name}.absmax2`, blocks));
      }
    });
    this._steps = steps;
  }

  dispose(): void {
    for (const s of this.slots) {
      if (s.kind === 'f32') {
        s.m.dispose();
        s.v.dispose();
      }
    }
  }
}

type Slot =
  | { kind: 'f32'; m: Tensor; v: Tensor }
  | { kind: 'u8'; c1: Uint8Array; c2: Uint8Array; absmax1: Float32Array; absmax2: Float32Array };

function midpoints(code: Float32Array): Float64Array {
  const mids = new Float64Array(code.length - 1);
  for (let i = 0; i < mids.length; i++) mids[i] = (code[i]! + code[i + 1]!) / 2;
  return mids;
}

/** Index of the nearest code: the number of midpoints below s (bucketize). */
function nearest(mids: Float64Array, s: number): number {
  let lo = 0;
  let hi = mids.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (mids[mid]! < s) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function requireArray<T extends Float32Array | Uint8Array>(arrays: OptimizerStateArrays, key: string, length: number): T {
  const a = arrays[key];
  if (!a) throw new Error(`optimizer state is missing '${key}'`);
  if (a.length !== length) throw new Error(`optimizer state '${key}' has ${a.length} values, expected ${length}`);
  return a as T;
}
