import { codeOfZero } from '../backends/adamw8bit-host.js';
import { ADAMW8BIT_BLOCKSIZE, type AdamW8bitState, type Backend } from '../tensor/backend.js';
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
  /** State for checkpoints (exact bytes; restoring gives bit-identical continuation). Read back from the backend. */
  state(): Promise<{ steps: number; arrays: OptimizerStateArrays }>;
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
      p.backend.adamw(p.value, p.grad, this.m[i]!, this.v[i]!, {
        lr,
        ...this.hyper,
        step: this._steps,
      });
    });
  }

  async state(): Promise<{ steps: number; arrays: OptimizerStateArrays }> {
    const arrays: OptimizerStateArrays = {};
    for (const [i, p] of this.params.entries()) {
      arrays[`${p.name}.exp_avg`] = Float32Array.from(await this.m[i]!.read());
      arrays[`${p.name}.exp_avg_sq`] = Float32Array.from(await this.v[i]!.read());
    }
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

/**
 * 8-bit blockwise AdamW with bitsandbytes semantics (docs/formats.md §3): moments stored as uint8
 * codes per block of 256 (signed dynamic map for m, unsigned for v) with a float32 absmax per
 * block; dequantized, updated and requantized each step by the backend's `adamw8bit` op, so the
 * state stays where the parameters live. Parameters with fewer than `min8bitSize` elements keep
 * fp32 moments, as bnb does.
 */
export class AdamW8bit implements Optimizer {
  readonly kind = 'adamw8bit';
  private readonly slots: Slot[];
  private readonly maps = new Map<Backend, { qmap1: Tensor; qmap2: Tensor }>();
  private _steps = 0;

  constructor(
    private readonly params: readonly Param[],
    private readonly hyper: AdamWHyper = ADAMW_DEFAULTS,
    readonly min8bitSize = 4096,
  ) {
    const signed = createDynamicMap(true);
    const unsigned = createDynamicMap(false);
    const zero1 = codeOfZero(signed);
    const zero2 = codeOfZero(unsigned);
    this.slots = params.map((p) => {
      const be = p.backend;
      const n = p.value.size;
      if (n < min8bitSize)
        return {
          kind: 'f32',
          m: be.zeros(p.value.shape, 'f32'),
          v: be.zeros(p.value.shape, 'f32'),
        };
      let maps = this.maps.get(be);
      if (!maps) {
        maps = {
          qmap1: be.fromArray(signed, [256], 'f32'),
          qmap2: be.fromArray(unsigned, [256], 'f32'),
        };
        this.maps.set(be, maps);
      }
      const blocks = Math.ceil(n / ADAMW8BIT_BLOCKSIZE);
      const state1 = be.zeros([n], 'u8');
      const state2 = be.zeros([n], 'u8');
      be.fill(state1, zero1);
      be.fill(state2, zero2);
      return {
        kind: 'u8',
        state: {
          state1,
          state2,
          absmax1: be.zeros([blocks], 'f32'),
          absmax2: be.zeros([blocks], 'f32'),
          ...maps,
        },
      };
    });
  }

  get steps(): number {
    return this._steps;
  }

  get stateBytes(): number {
    return this.slots.reduce(
      (s, x) =>
        s + (x.kind === 'f32' ? x.m.size * 8 : x.state.state1.size * 2 + x.state.absmax1.size * 8),
      0,
    );
  }

  step(lr: number): void {
    this._steps++;
    const options = { lr, ...this.hyper, step: this._steps };
    this.params.forEach((p, i) => {
      if (!p.grad) throw new Error(`parameter ${p.name} has no gradient`);
      const slot = this.slots[i]!;
      if (slot.kind === 'f32') p.backend.adamw(p.value, p.grad, slot.m, slot.v, options);
      else p.backend.adamw8bit(p.value, p.grad, slot.state, options);
    });
  }

  async state(): Promise<{ steps: number; arrays: OptimizerStateArrays }> {
    const arrays: OptimizerStateArrays = {};
    for (const [i, p] of this.params.entries()) {
      const s = this.slots[i]!;
      if (s.kind === 'f32') {
        arrays[`${p.name}.exp_avg`] = Float32Array.from(await s.m.read());
        arrays[`${p.name}.exp_avg_sq`] = Float32Array.from(await s.v.read());
      } else {
        arrays[`${p.name}.state1`] = Uint8Array.from(await s.state.state1.read());
        arrays[`${p.name}.state2`] = Uint8Array.from(await s.state.state2.read());
        arrays[`${p.name}.absmax1`] = Float32Array.from(await s.state.absmax1.read());
        arrays[`${p.name}.absmax2`] = Float32Array.from(await s.state.absmax2.read());
      }
    }
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
        const blocks = Math.ceil(n / ADAMW8BIT_BLOCKSIZE);
        s.state.state1.write(requireArray(arrays, `${p.name}.state1`, n));
        s.state.state2.write(requireArray(arrays, `${p.name}.state2`, n));
        s.state.absmax1.write(requireArray(arrays, `${p.name}.absmax1`, blocks));
        s.state.absmax2.write(requireArray(arrays, `${p.name}.absmax2`, blocks));
      }
    });
    this._steps = steps;
  }

  dispose(): void {
    for (const s of this.slots) {
      if (s.kind === 'f32') {
        s.m.dispose();
        s.v.dispose();
      } else {
        for (const t of [s.state.state1, s.state.state2, s.state.absmax1, s.state.absmax2])
          t.dispose();
      }
    }
    for (const { qmap1, qmap2 } of this.maps.values()) {
      qmap1.dispose();
      qmap2.dispose();
    }
    this.maps.clear();
  }
}

type Slot = { kind: 'f32'; m: Tensor; v: Tensor } | { kind: 'u8'; state: AdamW8bitState };

function requireArray<T extends Float32Array | Uint8Array>(
  arrays: OptimizerStateArrays,
  key: string,
  length: number,
): T {
  const a = arrays[key];
  if (!a) throw new Error(`optimizer state is missing '${key}'`);
  if (a.length !== length)
    throw new Error(`optimizer state '${key}' has ${a.length} values, expected ${length}`);
  return a as T;
}
