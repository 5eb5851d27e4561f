/**
 * The memory planner's backend: tensors carry shapes, dtypes and byte counts but no storage, and
 * kernels do no arithmetic (ggml's allocator measures a graph the same way, in a reserve pass over
 * tensors without data). Running the real training step on it gives the bytes the real code
 * allocates, in the order it allocates them, through the real arena (ChunkArena) — so a change to
 * the model or the trainer changes the plan with no second copy of the allocation order to keep in
 * step. Reads return zeros: a loss or a gradient norm planned this way is a placeholder.
 *
 * Byte counts follow the native cpu backend (native/src/memory.cc): every owned tensor is a block
 * rounded up to 64 bytes, at least 64; arena chunks likewise.
 */
import { type Arena, type ArenaChunk, ChunkArena, MAX_CHUNK_BYTES } from '../tensor/arena.js';
import type { GgmlWeight } from '../quant/ggml-blocks.js';
import type {
  AdamW8bitState,
  AdamWOptions,
  AttentionOptions,
  Backend,
  MatmulOptions,
  MemoryStats,
  Packed4bitWeight,
  RopeLayout,
} from '../tensor/backend.js';
import {
  BYTES_PER_ELEMENT,
  type DType,
  type HostArray,
  newHostArray,
  shapeSize,
} from '../tensor/dtype.js';
import { type DeviceStorage, type Storage, Tensor } from '../tensor/tensor.js';
import { attentionDims, copyColumnsArgs, matmulDims, shapeChecks } from './shape-checks.js';

const BLOCK = 64;

/** Bytes the native allocator reserves for a request (64-byte multiples, at least 64). */
export function nativeBlockBytes(bytes: number): number {
  return Math.max(BLOCK, Math.ceil(bytes / BLOCK) * BLOCK);
}

const checks = shapeChecks('counting');

/** Storage of a counting tensor: no handle, only where it would start. */
function nowhere(byteOffset = 0): DeviceStorage {
  return { kind: 'device', handle: null, byteOffset };
}

export class CountingBackend implements Backend {
  readonly name = 'counting';
  /** Capability (capabilities.ts): tensors hold no values, so builders allocate by shape and load nothing. */
  readonly shapesOnly = true;
  readonly floatTypes: readonly DType[] = ['f32'];
  private allocated = 0;
  private peak = 0;
  /** Bytes of each live owned tensor (what planners attribute to weights, adapters, states). */
  private readonly owned = new WeakMap<Tensor, number>();

  /** maxChunkBytes: the largest block an arena may hold (this runtime's, unless told otherwise). */
  constructor(private readonly maxChunkBytes: number = MAX_CHUNK_BYTES) {}

  private reserve(bytes: number): () => void {
    const size = nativeBlockBytes(bytes);
    this.allocated += size;
    this.peak = Math.max(this.peak, this.allocated);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.allocated -= size;
    };
  }

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const bytes = shapeSize(shape) * BYTES_PER_ELEMENT[dtype];
    const t = new Tensor(this, [...shape], dtype, nowhere(), {
      kind: 'owned',
      release: this.reserve(bytes),
    });
    this.owned.set(t, nativeBlockBytes(bytes));
    return t;
  }

  fromArray(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.zeros(shape, dtype);
    this.write(t, values);
    return t;
  }

  /** Bytes an owned tensor of this backend holds (0 for arena tensors and views). */
  bytesOf(t: Tensor): number {
    return this.owned.get(t) ?? 0;
  }

  createArena(initialBytes = 0, name = 'arena'): Arena {
    const allocChunk = (bytes: number): ArenaChunk => {
      const release = this.reserve(bytes);
      return {
        byteLength: nativeBlockBytes(bytes),
        storageAt: (byteOffset) => nowhere(byteOffset),
        release,
      };
    };
    return new ChunkArena(this, allocChunk, initialBytes, name, this.maxChunkBytes);
  }

  read(t: Tensor): Promise<HostArray> {
    void t.storage; // a reset arena's tensor still throws, as on a real backend
    return Promise.resolve(newHostArray(t.dtype, t.size));
  }

  write(t: Tensor, values: ArrayLike<number>): void {
    void t.storage;
    if (values.length !== t.size)
      throw new Error(`counting.write: ${values.length} values for a tensor of ${t.size}`);
  }

  sliceStorage(storage: Storage, dtype: DType, offset: number): Storage {
    const start = storage.kind === 'device' ? storage.byteOffset : 0;
    return nowhere(start + offset * BYTES_PER_ELEMENT[dtype]);
  }

  /** Starts a new peak from what is allocated now (to measure one phase of a run). */
  resetPeak(): void {
    this.peak = this.allocated;
  }

  memoryStats(): MemoryStats {
    return { allocatedBytes: this.allocated, peakBytes: this.peak };
  }

  describe(): string {
    return 'counting (shapes and bytes only: no storage, no arithmetic)';
  }

  // ---- kernels: the shapes are checked where it is cheap, nothing is computed ----------------

  fill(): void {}
  copy(src: Tensor, dst: Tensor): void {
    checks.expectSize('copy', 'dst', dst, src.size);
  }
  copyColumns(src: Tensor, srcCol: number, dst: Tensor, dstCol: number, width: number): void {
    copyColumnsArgs(
      { ...checks, noAlias: () => {}, sameOrDisjoint: () => {} },
      src,
      srcCol,
      dst,
      dstCol,
      width,
    );
  }
  add(): void {}
  scale(): void {}
  axpy(): void {}
  sumOfSquares(): void {}
  sum(): void {}
  matmul(a: Tensor, b: Tensor, out: Tensor, options: MatmulOptions = {}): void {
    matmulDims(checks, 'matmul', a, b, out, options.transA ?? false, options.transB ?? false);
  }
  matmul4bit(x: Tensor, w: Packed4bitWeight, out: Tensor): void {
    checks.expectShape('matmul4bit', 'out', out, [x.size / w.cols, w.rows]);
  }
  matmul4bitInputGrad(dy: Tensor, w: Packed4bitWeight, dx: Tensor): void {
    checks.expectShape('matmul4bitInputGrad', 'dx', dx, [dy.size / w.rows, w.cols]);
  }
  dequantize4bit(): void {}
  embedding4bit(): void {}
  /** Capability (capabilities.ts GgmlBackend): GGUF-block weights, planned by shape. */
  matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor): void {
    checks.expectShape('matmulGgml', 'out', out, [x.size / w.cols, w.rows]);
  }
  matmulGgmlInputGrad(dy: Tensor, w: GgmlWeight, dx: Tensor): void {
    checks.expectShape('matmulGgmlInputGrad', 'dx', dx, [dy.size / w.rows, w.cols]);
  }
  dequantizeGgml(): void {}
  embedding(): void {}
  embeddingBackward(): void {}
  rmsnorm(): void {}
  rmsnormBackward(): void {}
  rope(
    _x: Tensor,
    _positions: Tensor,
    _cos: Tensor,
    _sin: Tensor,
    _layout: RopeLayout,
    _inverse: boolean,
    _out: Tensor,
  ): void {}
  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    _out: Tensor,
    _lse: Tensor,
    options: AttentionOptions,
  ): void {
    attentionDims(checks, 'attention', q, k, v, options);
  }
  attentionBackward(): void {}
  softcap(): void {}
  softcapBackward(): void {}
  swiglu(): void {}
  swigluBackward(): void {}
  geluTanh(): void {}
  geluTanhBackward(): void {}
  geglu(): void {}
  gegluBackward(): void {}
  crossEntropy(): void {}
  dropout(): void {}
  adamw(_p: Tensor, _g: Tensor, _m: Tensor, _v: Tensor, _o: AdamWOptions): void {}
  adamw8bit(_p: Tensor, _g: Tensor, _s: AdamW8bitState, _o: AdamWOptions): void {}
}
