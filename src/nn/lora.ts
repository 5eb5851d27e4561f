import type { Arena } from '../tensor/arena.js';
import type { Backend } from '../tensor/backend.js';
import type { DType } from '../tensor/dtype.js';
import { mix32 } from '../tensor/rng.js';
import type { Tensor } from '../tensor/tensor.js';
import { holdsShapesOnly } from '../backends/capabilities.js';
import { normalInit, seedFor, uniformInit } from './init.js';
import type { FrozenLinear } from './linear.js';
import { Param } from './param.js';

export interface LoraOptions {
  readonly r: number;
  readonly alpha: number;
  /** Dropout on the input of A only (PEFT semantics). */
  readonly dropout: number;
  /** rsLoRA: scale alpha/√r instead of alpha/r. */
  readonly useRslora: boolean;
  /** 'kaiming': A ~ U(±1/√in) (PEFT default); 'gaussian': A ~ N(0, 1/r²)·; B = 0 either way. */
  readonly init: 'kaiming' | 'gaussian';
  readonly seed: number;
}

/** PEFT's LoRA scale: alpha/r, or alpha/√r with rsLoRA (training, merging and export share it). */
export function loraScaling(alpha: number, r: number, useRslora: boolean): number {
  return useRslora ? alpha / Math.sqrt(r) : alpha / r;
}

/** What the forward pass keeps for backward. */
export interface LoraSaved {
  /** A's input after dropout (x itself when dropout is off). */
  readonly xa: Tensor;
  /** xa·Aᵀ, [n, r]. */
  readonly t: Tensor;
  /** Whether xa is a dropped-out copy of x (then backward re-applies the same mask). */
  readonly dropped: boolean;
  readonly dropoutSeed: number;
}

/**
 * y = base(x) + scaling · B·A·dropout(x), the PEFT LoRA layer over a frozen base (dense or 4-bit).
 * A [r, in] and B [out, r] are the only trainable tensors.
 */
export class LoraLinear {
  readonly A: Param;
  readonly B: Param;
  readonly scaling: number;

  constructor(
    readonly base: FrozenLinear,
    readonly name: string,
    readonly options: LoraOptions,
    readonly dtype: DType = 'f32',
  ) {
    const { r, alpha } = options;
    if (!Number.isInteger(r) || r < 1)
      throw new Error(`${name}: LoRA rank must be a positive integer, got ${r}`);
    if (!(options.dropout >= 0 && options.dropout < 1))
      throw new Error(`${name}: LoRA dropout must be in [0, 1)`);
    this.scaling = loraScaling(alpha, r, options.useRslora);
    const be = this.backend;
    // A backend that holds shapes only (memory planning) gets A by shape: drawing values would be
    // the planner's only real work (18M draws for Llama-2-7B).
    const aValues = holdsShapesOnly(be)
      ? null
      : options.init === 'gaussian'
        ? normalInit(r * base.inFeatures, seedFor(options.seed, `${name}.lora_A`), 1 / r)
        : uniformInit(
            r * base.inFeatures,
            seedFor(options.seed, `${name}.lora_A`),
            1 / Math.sqrt(base.inFeatures),
          );
    const aShape = [r, base.inFeatures];
    this.A = new Param(
      `${name}.lora_A.weight`,
      aValues ? be.fromArray(aValues, aShape, dtype) : be.zeros(aShape, dtype),
    );
    this.B = new Param(`${name}.lora_B.weight`, be.zeros([base.outFeatures, r], dtype));
  }

  get backend(): Backend {
    return this.base.backend;
  }

  get inFeatures(): number {
    return this.base.inFeatures;
  }

  get outFeatures(): number {
    return this.base.outFeatures;
  }

  parameters(): Param[] {
    return [this.A, this.B];
  }

  /**
   * y = base(x) + scaling·(dropout(x)·Aᵀ)·Bᵀ. `stepSeed` varies per step so each step draws a new
   * dropout mask; the layer mixes in its own name so layers differ.
   */
  forward(x: Tensor, y: Tensor, arena: Arena, training: boolean, stepSeed: number): LoraSaved {
    const be = this.backend;
    const n = x.shape[0]!;
    this.base.forward(x, y);
    const dropoutSeed = mix32((seedFor(stepSeed, this.name) ^ 0x5bd1e995) >>> 0);
    let xa = x;
    const dropped = training && this.options.dropout > 0;
    if (dropped) {
      xa = arena.alloc(x.shape, x.dtype);
      be.dropout(x, this.options.dropout, dropoutSeed, xa);
    }
    const t = arena.alloc([n, this.options.r], x.dtype);
    be.matmul(xa, this.A.value, t, { transB: true });
    be.matmul(t, this.B.value, y, { transB: true, alpha: this.scaling, beta: 1 });
    return { xa, t, dropped, dropoutSeed };
  }

  /**
   * Accumulates dA, dB (which must exist: call zeroGrad first) and, when dx is given, writes
   * (or with accumulate adds) the input gradient.
   */
  backward(
    dy: Tensor,
    saved: LoraSaved,
    dx: Tensor | null,
    accumulate: boolean,
    arena: Arena,
  ): void {
    const be = this.backend;
    const dA = this.A.grad;
    const dB = this.B.grad;
    if (!dA || !dB)
      throw new Error(`${this.name}: gradients not allocated (zeroGrad before backward)`);
    const n = dy.shape[0]!;
    // dB += s·dyᵀ·t ; dt = s·dy·B ; dA += dtᵀ·xa
    be.matmul(dy, saved.t, dB, { transA: true, alpha: this.scaling, beta: 1 });
    const dt = arena.alloc([n, this.options.r], dy.dtype);
    be.matmul(dy, this.B.value, dt, { alpha: this.scaling });
    be.matmul(dt, saved.xa, dA, { transA: true, beta: 1 });
    if (!dx) return;
    this.base.inputGrad(dy, dx, accumulate);
    if (saved.dropped) {
      // Through A and the dropout mask: dx += dropout(dt·A), regenerating the forward's mask.
      const dxa = arena.alloc(dx.shape, dx.dtype);
      be.matmul(dt, this.A.value, dxa);
      be.dropout(dxa, this.options.dropout, saved.dropoutSeed, dxa);
      be.axpy(1, dxa, dx);
    } else {
      be.matmul(dt, this.A.value, dx, { beta: 1 });
    }
  }

  /** W + scaling·B·A as a new dense [out, in] tensor (for merge/export). */
  mergedWeight(): Tensor {
    const be = this.backend;
    const w = this.base.dequantize();
    be.matmul(this.B.value, this.A.value, w, { alpha: this.scaling, beta: 1 });
    return w;
  }

  dispose(): void {
    this.base.dispose();
    this.A.dispose();
    this.B.dispose();
  }
}
