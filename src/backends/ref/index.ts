import type { HostChunk } from '../../tensor/arena.js';
import type { Backend, MemoryStats } from '../../tensor/backend.js';
import type { DType } from '../../tensor/dtype.js';
import { HostMemory, type Kernels, kernelTable } from '../host-backend.js';
import * as elementwise from './elementwise.js';
import * as gelu from './gelu.js';
import * as matmul from './matmul.js';
import * as quant4bit from './quant4bit.js';
import * as embedding from './embedding.js';
import * as norm from './norm.js';
import * as rope from './rope.js';
import * as attention from './attention.js';
import * as loss from './loss.js';
import * as optim from './optim.js';
import * as ggml from './ggml.js';
import type { GgmlBackend } from '../capabilities.js';

const KERNELS = kernelTable([
  elementwise,
  gelu,
  matmul,
  quant4bit,
  embedding,
  norm,
  rope,
  attention,
  loss,
  optim,
]);

/**
 * The reference backend: plain TypeScript loops, written for clarity and checked against math,
 * not speed. Computes in float64 internally (JS numbers) and stores in the tensor's dtype, so with
 * f64 tensors it is the ground truth for finite-difference gradient checks.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging -- the constructor installs the kernel functions on the instance; this merge gives them their types
export interface RefBackend extends Kernels {}
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- see the interface above
export class RefBackend extends HostMemory implements Backend, GgmlBackend {
  readonly name = 'ref';
  private allocated = 0;
  private peak = 0;

  protected allocChunk(bytes: number): HostChunk {
    const buffer = new ArrayBuffer(bytes);
    this.allocated += bytes;
    this.peak = Math.max(this.peak, this.allocated);
    let released = false;
    return {
      buffer,
      release: () => {
        if (released) return;
        released = true;
        this.allocated -= bytes;
      },
    };
  }

  memoryStats(): MemoryStats {
    return { allocatedBytes: this.allocated, peakBytes: this.peak };
  }

  readonly floatTypes: readonly DType[] = ['f32', 'f64'];

  /** Capability (capabilities.ts): frozen weights in a GGUF's own blocks (ggml's values, f64 sums). */
  readonly matmulGgml = ggml.matmulGgml;
  readonly matmulGgmlInputGrad = ggml.matmulGgmlInputGrad;
  readonly dequantizeGgml = ggml.dequantizeGgml;

  describe(): string {
    return 'plain TypeScript reference (f32, f64)';
  }

  constructor() {
    super();
    // The ops come from the per-op modules (see kernelTable); declaration merging types them.
    Object.assign(this, KERNELS);
  }
}
