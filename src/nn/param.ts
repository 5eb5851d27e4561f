import type { Backend } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';

/**
 * A trainable parameter: its value and (while training) its gradient, both long-lived tensors
 * owned by the module that created them. Gradients accumulate (+=) across micro-batches until
 * the trainer zeroes them.
 */
export class Param {
  grad: Tensor | null = null;

  constructor(
    readonly name: string,
    readonly value: Tensor,
  ) {}

  /** Allocates (zeroed) or re-zeroes the gradient. */
  zeroGrad(): Tensor {
    if (this.grad) this.value.backend.fill(this.grad, 0);
    else this.grad = this.value.backend.zeros(this.value.shape, this.value.dtype);
    return this.grad;
  }

  get backend(): Backend {
    return this.value.backend;
  }

  dispose(): void {
    this.value.dispose();
    this.grad?.dispose();
    this.grad = null;
  }
}
