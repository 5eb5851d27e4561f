/**
 * Device memory for the WebGPU backend: every long-lived tensor owns a GPUBuffer; arenas carve
 * per-step tensors out of big buffers (offsets aligned for binding), growing by adding buffers and
 * merging them into one on reset, as the host arena does. Nothing here reads device memory.
 */
import type { Arena } from '../../tensor/arena.js';
import type { Backend } from '../../tensor/backend.js';
import { BYTES_PER_ELEMENT, type DType, shapeSize } from '../../tensor/dtype.js';
import { type DeviceStorage, type Storage, Tensor } from '../../tensor/tensor.js';
import { type GpuContext, type GpuSpan, roundUp } from './context.js';

/** The span of a device tensor (its buffer and byte range). */
export function spanOf(t: Tensor): GpuSpan {
  const s = t.storage;
  if (s.kind !== 'device') throw new Error(`webgpu: tensor on backend '${t.backend.name}' is not on the GPU`);
  return { buffer: s.handle as GPUBuffer, byteOffset: s.byteOffset, byteLength: t.size * BYTES_PER_ELEMENT[t.dtype] };
}

export function deviceStorage(buffer: GPUBuffer, byteOffset: number): DeviceStorage {
  return { kind: 'device', handle: buffer, byteOffset };
}

/** Byte accounting for memoryStats(). */
export class DeviceBytes {
  allocated = 0;
  peak = 0;
  add(n: number): void {
    this.allocated += n;
    this.peak = Math.max(this.peak, this.allocated);
  }
  remove(n: number): void {
    this.allocated -= n;
  }
}

/** A per-step arena in device memory. */
export class GpuArena implements Arena {
  private chunks: GPUBuffer[] = [];
  private chunkIndex = 0;
  private offset = 0;
  private usedInEarlierChunks = 0;
  private _generation = 0;
  private _peak = 0;
  private disposed = false;

  constructor(
    private readonly backend: Backend,
    private readonly ctx: GpuContext,
    private readonly bytes: DeviceBytes,
    initialBytes: number,
    readonly name: string,
  ) {
    if (initialBytes > 0) this.chunks.push(this.newChunk(initialBytes));
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
    return this.chunks.reduce((s, c) => s + c.size, 0);
  }

  alloc(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    if (this.disposed) throw new Error(`arena '${this.name}' used after dispose()`);
    const bytes = roundUp(Math.max(4, shapeSize(shape) * BYTES_PER_ELEMENT[dtype]), this.ctx.bindAlign);
    let chunk = this.chunks[this.chunkIndex];
    if (!chunk || this.offset + bytes > chunk.size) {
      this.usedInEarlierChunks += this.offset;
      this.offset = 0;
      this.chunkIndex = chunk ? this.chunkIndex + 1 : this.chunkIndex;
      chunk = this.chunks[this.chunkIndex];
      if (!chunk || bytes > chunk.size) {
        const last = this.chunks[this.chunks.length - 1];
        // Grow geometrically but never past one binding: a chunk is bound whole by no kernel, but a
        // tensor must fit a binding, and the adapter caps buffer sizes.
        const grow = Math.min(Math.max(bytes, last ? last.size : 0, 1 << 20), Math.max(bytes, this.ctx.limits.maxBufferSize));
        chunk = this.newChunk(grow);
        this.chunks.splice(this.chunkIndex, 0, chunk);
      }
    }
    const t = new Tensor(this.backend, [...shape], dtype, deviceStorage(chunk, this.offset), {
      kind: 'arena',
      arena: this,
      generation: this._generation,
    });
    this.offset += bytes;
    this._peak = Math.max(this._peak, this.bytesInUse);
    return t;
  }

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.alloc(shape, dtype);
    this.backend.fill(t, 0);
    return t;
  }

  reset(): void {
    this._generation++;
    if (this.chunks.length > 1) {
      const total = this.chunks.reduce((s, c) => s + c.size, 0);
      if (total <= this.ctx.limits.maxBufferSize) {
        for (const c of this.chunks) this.releaseChunk(c);
        this.chunks = [this.newChunk(total)];
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
    for (const c of this.chunks) this.releaseChunk(c);
    this.chunks = [];
  }

  private newChunk(bytes: number): GPUBuffer {
    const b = this.ctx.createBuffer(roundUp(bytes, this.ctx.bindAlign), `arena ${this.name}`);
    this.bytes.add(b.size);
    return b;
  }

  private releaseChunk(b: GPUBuffer): void {
    this.bytes.remove(b.size);
    this.ctx.release(b);
  }
}

/** Storage for elements [offset, offset+length) of a device storage. */
export function sliceDeviceStorage(storage: Storage, dtype: DType, offset: number): Storage {
  if (storage.kind !== 'device') throw new Error('webgpu: not a device tensor');
  return deviceStorage(storage.handle as GPUBuffer, storage.byteOffset + offset * BYTES_PER_ELEMENT[dtype]);
}
