/**
 * Device memory for the WebGPU backend: every long-lived tensor owns a GPUBuffer; arenas carve
 * per-step tensors out of big buffers (the shared ChunkArena). Nothing here reads device memory.
 */
import { type Arena, type ArenaChunk, ChunkArena } from '../../tensor/arena.js';
import type { Backend } from '../../tensor/backend.js';
import { BYTES_PER_ELEMENT, type DType } from '../../tensor/dtype.js';
import type { DeviceStorage, Storage, Tensor } from '../../tensor/tensor.js';
import type { GpuContext, GpuSpan } from './context.js';

/** The span of a device tensor (its buffer and byte range). */
export function spanOf(t: Tensor): GpuSpan {
  const s = t.storage;
  if (s.kind !== 'device')
    throw new Error(`webgpu: tensor on backend '${t.backend.name}' is not on the GPU`);
  return {
    buffer: s.handle as GPUBuffer,
    byteOffset: s.byteOffset,
    byteLength: t.size * BYTES_PER_ELEMENT[t.dtype],
  };
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

/**
 * A per-step arena in device memory: the shared chunk arena over GPU buffers, with tensor offsets
 * at the binding alignment (so each tensor can be bound from its own start) and chunks no larger
 * than the adapter's maxBufferSize.
 */
export function createGpuArena(
  backend: Backend,
  ctx: GpuContext,
  bytes: DeviceBytes,
  initialBytes: number,
  name: string,
): Arena {
  const align = ctx.bindAlign;
  const maxChunk = Math.floor(ctx.limits.maxBufferSize / align) * align;
  const allocChunk = (size: number): ArenaChunk => {
    const buffer = ctx.createBuffer(size, `arena ${name}`);
    bytes.add(buffer.size);
    return {
      byteLength: size,
      storageAt: (byteOffset) => deviceStorage(buffer, byteOffset),
      release: () => {
        bytes.remove(buffer.size);
        ctx.release(buffer);
      },
    };
  };
  return new ChunkArena(backend, allocChunk, initialBytes, name, maxChunk, Math.max(64, align));
}

/** Storage for elements [offset, offset+length) of a device storage. */
export function sliceDeviceStorage(storage: Storage, dtype: DType, offset: number): Storage {
  if (storage.kind !== 'device') throw new Error('webgpu: not a device tensor');
  return deviceStorage(
    storage.handle as GPUBuffer,
    storage.byteOffset + offset * BYTES_PER_ELEMENT[dtype],
  );
}
