import type { Backend } from './backend.js';
import { BYTES_PER_ELEMENT, type DType, hostArrayFor, shapeString, shapeSize } from './dtype.js';
import { type Storage, Tensor } from './tensor.js';

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

/** A block of a backend's memory that an arena carves tensors from. */
export interface ArenaChunk {
  readonly byteLength: number;
  /** Storage for `length` elements of `dtype` starting `byteOffset` bytes (arena-aligned) into the block. */
  storageAt(byteOffset: number, dtype: DType, length: number): Storage;
  release(): void;
}

/** A chunk of host memory (ref: a JS ArrayBuffer, cpu: native aligned memory). */
export interface HostChunk {
  readonly buffer: ArrayBuffer;
  release(): void;
}

const ALIGN = 64;

/**
 * The largest block a host chunk may be. Node wraps native memory in an ArrayBuffer only up to
 * buffer.constants.MAX_LENGTH bytes (4 GiB on Node 20): the addon's alloc() fails past it, so an
 * arena that needs more holds several chunks instead of one merged block.
 */
export const MAX_CHUNK_BYTES = Math.floor(maxArrayBufferBytes() / ALIGN) * ALIGN;

/**
 * Node's buffer.constants.MAX_LENGTH, read without a static node: import so the library still
 * bundles for browsers (src/io/host.ts); browsers cap ArrayBuffers near 2 GiB (Chromium) or 4 GiB.
 */
function maxArrayBufferBytes(): number {
  const load = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    ?.getBuiltinModule;
  const buffer =
    typeof load === 'function'
      ? (load('node:buffer') as { constants: { MAX_LENGTH: number } })
      : null;
  return buffer?.constants.MAX_LENGTH ?? 2 ** 31 - 1;
}

/** Chunk sizes for `total` bytes (64-byte multiples): as few as possible, none above `maxChunk`. */
export function chunkSizes(total: number, maxChunk: number): number[] {
  const sizes: number[] = [];
  for (let left = roundUp(total); left > 0; left -= Math.min(left, maxChunk))
    sizes.push(Math.min(left, maxChunk));
  return sizes;
}

/** Size of the chunk added when a request of `bytes` does not fit: max(request, last chunk, 1 MiB), capped. */
export function growChunkSize(bytes: number, lastChunk: number, maxChunk: number): number {
  return roundUp(Math.max(bytes, Math.min(Math.max(lastChunk, 1 << 20), maxChunk)));
}

/**
 * Arena over any backend's memory: `allocChunk` supplies blocks (host buffers, device buffers),
 * each tensor is a byte range of one, and zeros() clears through the backend's fill op. When a
 * step needs more than the current chunk, another chunk is added; on reset the chunks are merged
 * into one big enough for the largest step, so steady state is a single chunk and zero allocations.
 */
export class ChunkArena implements Arena {
  private chunks: ArenaChunk[] = [];
  private chunkIndex = 0;
  private offset = 0;
  private usedInEarlierChunks = 0;
  private _generation = 0;
  private _peak = 0;
  private disposed = false;

  constructor(
    private readonly backend: Backend,
    private readonly allocChunk: (bytes: number) => ArenaChunk,
    initialBytes: number,
    readonly name: string,
    private readonly maxChunkBytes: number = MAX_CHUNK_BYTES,
    /** Tensor offsets are multiples of this (64 for SIMD loads; a device may need its binding alignment). */
    private readonly align: number = ALIGN,
  ) {
    if (align % ALIGN !== 0)
      throw new Error(`arena '${name}': alignment ${align} is not a multiple of ${ALIGN}`);
    for (const size of chunkSizes(Math.max(0, initialBytes), maxChunkBytes))
      this.chunks.push(allocChunk(size));
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
    return this.chunks.reduce((s, c) => s + c.byteLength, 0);
  }

  alloc(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    if (this.disposed) throw new Error(`arena '${this.name}' used after dispose()`);
    const length = shapeSize(shape);
    const bytes = Math.ceil((length * BYTES_PER_ELEMENT[dtype]) / this.align) * this.align;
    if (bytes > this.maxChunkBytes) {
      throw new Error(
        `arena '${this.name}': a ${dtype} tensor of shape ${shapeString(shape)} needs ${bytes} bytes, more than ` +
          `the largest block this runtime can hold (${this.maxChunkBytes} bytes); use a smaller batch or sequence length`,
      );
    }
    let chunk = this.chunks[this.chunkIndex];
    if (!chunk || this.offset + bytes > chunk.byteLength) {
      this.usedInEarlierChunks += this.offset;
      this.offset = 0;
      this.chunkIndex = chunk ? this.chunkIndex + 1 : this.chunkIndex;
      chunk = this.chunks[this.chunkIndex];
      if (!chunk || bytes > chunk.byteLength) {
        const last = this.chunks[this.chunks.length - 1];
        chunk = this.allocChunk(
          growChunkSize(bytes, last ? last.byteLength : 0, this.maxChunkBytes),
        );
        this.chunks.splice(this.chunkIndex, 0, chunk);
      }
    }
    const storage = chunk.storageAt(this.offset, dtype, length);
    this.offset += bytes;
    this._peak = Math.max(this._peak, this.bytesInUse);
    return new Tensor(this.backend, [...shape], dtype, storage, {
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
      // Merge: one chunk as large as everything this step needed (several when that is more than
      // one block may hold), unless it already is as merged as it can be.
      const total = this.chunks.reduce((s, c) => s + c.byteLength, 0);
      const sizes = chunkSizes(total, this.maxChunkBytes);
      if (sizes.length < this.chunks.length) {
        for (const c of this.chunks) c.release();
        this.chunks = [];
        for (const size of sizes) this.chunks.push(this.allocChunk(size));
      }
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

/** The arena of the host backends: chunks are host buffers, tensors typed arrays over them. */
export class HostArena extends ChunkArena {
  constructor(
    backend: Backend,
    allocChunk: (bytes: number) => HostChunk,
    initialBytes: number,
    name: string,
    maxChunkBytes: number = MAX_CHUNK_BYTES,
  ) {
    super(backend, (bytes) => hostArenaChunk(allocChunk(bytes)), initialBytes, name, maxChunkBytes);
  }
}

function hostArenaChunk(chunk: HostChunk): ArenaChunk {
  return {
    byteLength: chunk.buffer.byteLength,
    storageAt: (byteOffset, dtype, length) => ({
      kind: 'host',
      array: hostArrayFor(dtype, chunk.buffer, byteOffset, length),
    }),
    release: () => chunk.release(),
  };
}

function roundUp(bytes: number): number {
  return Math.ceil(bytes / ALIGN) * ALIGN;
}
