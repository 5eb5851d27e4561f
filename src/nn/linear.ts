import type { Arena } from '../tensor/arena.js';
import type { Backend, Packed4bitWeight } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { disposePacked4bit } from '../quant/upload.js';

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
  /** The dense weight [out, in] (a new long-lived tensor the caller disposes), for merges and export. */
  dequantize(): Tensor;
  dispose(): void;
}

/** Adds a bias row to every row of y (y [n, out] += 1·bᵀ, as a rank-1 matmul). */
function addBias(backend: Backend, arena: Arena | null, bias: Tensor, y: Tensor): void {
  const n = y.shape[0]!;
  const ones = arena ? arena.alloc([n, 1], y.dtype) : backend.zeros([n, 1], y.dtype);
  backend.fill(ones, 1);
  backend.matmul(ones, bias.view([1, bias.size]), y, { beta: 1 });
  if (!arena) ones.dispose();
}

/** Full-precision frozen linear (embeddings-adjacent layers, unquantized bases, merged models). */
export class DenseLinear implements FrozenLinear {
  readonly outFeatures: number;
  readonly inFeatures: number;

  constructor(
    readonly weight: Tensor,
    readonly bias: Tensor | null = null,
    private readonly scratch: () => Arena | null = () => null,
  ) {
    if (weight.rank !== 2) throw new Error(`linear weight must be 2-D, got [${weight.shape.join(', ')}]`);
    this.outFeatures = weight.shape[0]!;
    this.inFeatures = weight.shape[1]!;
  }

  get backend(): Backend {
    return this.weight.backend;
  }

  get weightBytes(): number {
    return this.weight.size * 4 + (this.bias ? this.bias.size * 4 : 0);
  }

  forward(x: Tensor, y: Tensor): void {
    const be = this.weight.backend;
    be.matmul(x, this.weight, y, { transB: true });
    if (this.bias) addBias(be, this.scratch(), this.bias, y);
  }

  inputGrad(dy: Tensor, dx: Tensor, accumulate: boolean): void {
    this.weight.backend.matmul(dy, this.weight, dx, { beta: accumulate ? 1 : 0 });
  }

  dequantize(): Tensor {
    const be = this.weight.backend;
    const out = be.zeros(this.weight.shape, this.weight.dtype);
    be.copy(this.weight, out);
    return out;
  }

  dispose(): void {
    this.weight.dispose();
    this.bias?.dispose();
  }
}

/** A 4-bit (NF4/FP4, bitsandbytes layout) frozen linear: the QLoRA base layer. */
export class Linear4bit implements FrozenLinear {
  readonly outFeatures: number;
  readonly inFeatures: number;

  constructor(
    readonly weight: Packed4bitWeight,
    readonly bias: Tensor | null = null,
    private readonly scratch: () => Arena | null = () => null,
  ) {
    this.outFeatures = weight.rows;
    this.inFeatures = weight.cols;
  }

  get backend(): Backend {
    return this.weight.packed.backend;
  }

  get weightBytes(): number {
    const w = this.weight;
    let bytes = w.packed.size + w.code.size * 4 + w.absmax.size * (w.nested ? 1 : 4);
    if (w.nested) bytes += w.nested.absmax.size * 4 + w.nested.code.size * 4;
    return bytes + (this.bias ? this.bias.size * 4 : 0);
  }

  forward(x: Tensor, y: Tensor): void {
    const be = this.weight.packed.backend;
    be.matmul4bit(x, this.weight, y, 0);
    if (this.bias) addBias(be, this.scratch(), this.bias, y);
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
    this.bias?.dispose();
  }
}
