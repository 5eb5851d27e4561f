import type { Backend } from './backend.js';
import { BYTES_PER_ELEMENT, type DType, hostArrayFor, shapeSize } from './dtype.js';
import { Tensor } from './tensor.js';

/**
 * Per-step memory: tensors are carved out of large chunks by bumping an offset, and reset()
 * recycles everything at once (tensors handed out before become invalid and throw if touched).
 * No per-op allocation reaches the garbage collector or the system allocator in steady state.
 */
export interface Arena {
  readonly name: string;
  /** Incremented by every reset(); tensors remember the generation they were born in. */
  readonly generation: number;
  /** Uninitialised tensor (contents are whatever the last step left). */
  alloc(shape: readonly number[], dtype?: DType): Tensor;
  /** Zero-filled tensor. */
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  reset(): void;
  readonly bytesInUse: number;
  /** Largest bytesInUse seen since creation. */
  readonly peakBytes: number;
  /** Bytes reserved from the backend. */
  readonly capacity: number;
  dispose(): void;
}

/** A chunk of host memory an arena carves tensors from. */
export interface HostChunk {
  readonly buffer: ArrayBuffer;
  release(): void;
}

const ALIGN = 64;

/**
 * Arena over host memory, shared by the host backends. `allocChunk` supplies the memory (JS
 * ArrayBuffers for ref, native aligned blocks for cpu). When a step needs more than the current
 * chunk, another chunk is added; on reset the chunks are merged into one big enough for the
 * largest step, so steady state is a single chunk and zero allocations.
 */
export class HostArena implements Arena {
  private chunks: HostChunk[] = [];
  private chunkIndex = 0;
  private offset = 0;
  private usedInEarlierChunks = 0;
  private _generation = 0;
  private _peak = 0;
  private disposed = false;

  constructor(
    private readonly backend: Backend,
    private readonly allocChunk: (bytes: number) => HostChunk,
    initialBytes: number,
    readonly name: string,
  ) {
    if (initialBytes > 0) this.chunks.push(allocChunk(roundUp(initialBytes)));
  }

  get generation(): number {
    return this._generation;
  }

  get bytesInUse(): number {
    return this.usedInEarlierChunks + this.offset;
  }

  get peakBytes(): number {
    return this._peak;
  }

  get capacity(): number {
    return this.chunks.reduce((s, c) => s + c.buffer.byteLength, 0);
  }

  alloc(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    if (this.disposed) throw new Error(`arena '${this.name}' used after dispose()`);
    const length = shapeSize(shape);
    const bytes = roundUp(length * BYTES_PER_ELEMENT[dtype]);
    let chunk = this.chunks[this.chunkIndex];
    if (!chunk || this.offset + bytes > chunk.buffer.byteLength) {
      this.usedInEarlierChunks += this.offset;
      this.offset = 0;
      this.chunkIndex = chunk ? this.chunkIndex + 1 : this.chunkIndex;
      chunk = this.chunks[this.chunkIndex];
      if (!chunk || bytes > chunk.buffer.byteLength) {
        const last = this.chunks[this.chunks.length - 1];
        const grow = Math.max(bytes, last ? last.buffer.byteLength : 0, 1 << 20);
        chunk = this.allocChunk(roundUp(grow));
        this.chunks.splice(this.chunkIndex, 0, chunk);
      }
    }
    const array = hostArrayFor(dtype, chunk.buffer, this.offset, length);
    this.offset += bytes;
    this._peak = Math.max(this._peak, this.bytesInUse);
    return new Tensor(this.backend, [...shape], dtype, { kind: 'host', array }, {
      kind: 'arena',
      arena: this,
      generation: this._generation,
    });
  }

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.alloc(shape, dtype);
    this.backend.fill(t, 0);
    return t;
  }

  reset(): void {
    this._generation++;
    if (this.chunks.length > 1) {
      // Merge: one chunk as large as everything this step needed.
      const total = this.chunks.reduce((s, c) => s + c.buffer.byteLength, 0);
      for (const c of this.chunks) c.release();
      this.chunks = [this.allocChunk(roundUp(total))];
    }
    this.chunkIndex = 0;
    this.offset = 0;
    this.usedInEarlierChunks = 0;
  }

  dispose(): void {
    if (this.disposed) return;
    this._generation++;
    this.disposed = true;
    for (const c of this.chunks) c.release();
    this.chunks = [];
  }
}

function roundUp(bytes: number): number {
  return Math.ceil(bytes / ALIGN) * ALIGN;
}
