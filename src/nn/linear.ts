import type { Backend, Packed4bitWeight } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { disposePacked4bit, packedWeightBytes } from '../quant/upload.js';
import type { GgmlWeight } from '../quant/ggml-blocks.js';
import { type GgmlBackend, ggmlKernelsOf } from '../backends/capabilities.js';

/**
 * A frozen linear map y = x·Wᵀ (+ b), x [n, in] → y [n, out], in full precision or 4-bit.
 * Frozen means no weight gradient: backward only propagates to the input (all QLoRA needs).
 */
export interface FrozenLinear {
  readonly backend: Backend;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** y = x·Wᵀ + b (y is overwritten). */
  forward(x: Tensor, y: Tensor): void;
  /** dx (+)= dy·W; accumulate adds into dx instead of overwriting it. */
  inputGrad(dy: Tensor, dx: Tensor, accumulate: boolean): void;
  /** Bytes the weight occupies in memory. */
  readonly weightBytes: number;
  /** The bias [out], if any. */
  readonly bias: Tensor | null;
  /** The dense weight [out, in] (a new long-lived tensor the caller disposes), for merges and export. */
  dequantize(): Tensor;
  dispose(): void;
}

/**
 * Adds a bias row to every row of y (y [n, out] += 1·bᵀ, a rank-1 matmul), keeping a long-lived
 * column of ones that grows with n, so no per-call allocation happens.
 */
class BiasAdder {
  private ones: Tensor | null = null;

  constructor(readonly bias: Tensor) {}

  apply(y: Tensor): void {
    const be = this.bias.backend;
    const n = y.shape[0]!;
    if (!this.ones || this.ones.shape[0]! < n) {
      this.ones?.dispose();
      this.ones = be.zeros([Math.max(n, 2 * (this.ones?.shape[0] ?? 0)), 1], y.dtype);
      be.fill(this.ones, 1);
    }
    be.matmul(this.ones.rows(0, n), this.bias.view([1, this.bias.size]), y, { beta: 1 });
  }

  dispose(): void {
    this.ones?.dispose();
    this.bias.dispose();
  }
}

/** Full-precision frozen linear (embeddings-adjacent layers, unquantized bases, merged models). */
export class DenseLinear implements FrozenLinear {
  private readonly biasAdder: BiasAdder | null;
  readonly outFeatures: number;
  readonly inFeatures: number;

  constructor(
    readonly weight: Tensor,
    bias: Tensor | null = null,
  ) {
    this.biasAdder = bias ? new BiasAdder(bias) : null;
    if (weight.rank !== 2)
      throw new Error(`linear weight must be 2-D, got [${weight.shape.join(', ')}]`);
    this.outFeatures = weight.shape[0]!;
    this.inFeatures = weight.shape[1]!;
  }

  get backend(): Backend {
    return this.weight.backend;
  }

  get bias(): Tensor | null {
    return this.biasAdder?.bias ?? null;
  }

  get weightBytes(): number {
    return this.weight.size * 4 + (this.biasAdder ? this.biasAdder.bias.size * 4 : 0);
  }

  forward(x: Tensor, y: Tensor): void {
    this.weight.backend.matmul(x, this.weight, y, { transB: true, frozenB: true });
    this.biasAdder?.apply(y);
  }

  inputGrad(dy: Tensor, dx: Tensor, accumulate: boolean): void {
    this.weight.backend.matmul(dy, this.weight, dx, { beta: accumulate ? 1 : 0, frozenB: true });
  }

  dequantize(): Tensor {
    const be = this.weight.backend;
    const out = be.zeros(this.weight.shape, this.weight.dtype);
    be.copy(this.weight, out);
    return out;
  }

  dispose(): void {
    this.weight.dispose();
    this.biasAdder?.dispose();
  }
}

/** A 4-bit (NF4/FP4, bitsandbytes layout) frozen linear: the QLoRA base layer. */
export class Linear4bit implements FrozenLinear {
  private readonly biasAdder: BiasAdder | null;
  readonly outFeatures: number;
  readonly inFeatures: number;

  constructor(
    readonly weight: Packed4bitWeight,
    bias: Tensor | null = null,
  ) {
    this.biasAdder = bias ? new BiasAdder(bias) : null;
    this.outFeatures = weight.rows;
    this.inFeatures = weight.cols;
  }

  get backend(): Backend {
    return this.weight.packed.backend;
  }

  get bias(): Tensor | null {
    return this.biasAdder?.bias ?? null;
  }

  get weightBytes(): number {
    return packedWeightBytes(this.weight) + (this.biasAdder ? this.biasAdder.bias.size * 4 : 0);
  }

  forward(x: Tensor, y: Tensor): void {
    this.weight.packed.backend.matmul4bit(x, this.weight, y, 0);
    this.biasAdder?.apply(y);
  }

  inputGrad(dy: Tensor, dx: Tensor, accumulate: boolean): void {
    this.weight.packed.backend.matmul4bitInputGrad(dy, this.weight, dx, accumulate ? 1 : 0);
  }

  dequantize(): Tensor {
    const be = this.weight.packed.backend;
    const out = be.zeros([this.outFeatures, this.inFeatures]);
    be.dequantize4bit(this.weight, out);
    return out;
  }

  dispose(): void {
    disposePacked4bit(this.weight);
    this.biasAdder?.dispose();
  }
}

/**
 * A frozen linear layer whose weight stays in a GGUF's own quantized blocks (Q4_0, Q8_0, Q4_K,
 * Q5_K, Q6_K; `--quant keep`): LoRA trains against exactly the weights llama.cpp serves.
 */
export class LinearGgml implements FrozenLinear {
  private readonly biasAdder: BiasAdder | null;
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly backend: GgmlBackend;

  constructor(
    readonly weight: GgmlWeight,
    bias: Tensor | null = null,
  ) {
    this.backend = ggmlKernelsOf(weight.blocks.backend);
    this.biasAdder = bias ? new BiasAdder(bias) : null;
    this.outFeatures = weight.rows;
    this.inFeatures = weight.cols;
  }

  get bias(): Tensor | null {
    return this.biasAdder?.bias ?? null;
  }

  get weightBytes(): number {
    return this.weight.blocks.size + (this.biasAdder ? this.biasAdder.bias.size * 4 : 0);
  }

  forward(x: Tensor, y: Tensor): void {
    this.backend.matmulGgml(x, this.weight, y, 0);
    this.biasAdder?.apply(y);
  }

  inputGrad(dy: Tensor, dx: Tensor, accumulate: boolean): void {
    this.backend.matmulGgmlInputGrad(dy, this.weight, dx, accumulate ? 1 : 0);
  }

  dequantize(): Tensor {
    const out = this.backend.zeros([this.outFeatures, this.inFeatures]);
    this.backend.dequantizeGgml(this.weight, out);
    return out;
  }

  dispose(): void {
    this.weight.blocks.dispose();
    this.biasAdder?.dispose();
  }
}
