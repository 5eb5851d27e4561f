// A "device-like" backend for tests: tensors are device-resident the way WebGPU's are (storage kind
// 'device', so `tensor.data` throws; values reach JavaScript only through an async read()), while
// the compute is the ref backend's, run on private host arrays behind the device handles. Anything
// above src/backends that still touched storage synchronously fails on it; anything that works on
// it gives ref's results bit for bit.
import { KERNEL_NAMES } from '../src/backends/host-backend.js';
import { RefBackend } from '../src/backends/ref/index.js';
import { type Arena, ChunkArena } from '../src/tensor/arena.js';
import type { Backend, MemoryStats } from '../src/tensor/backend.js';
import {
  BYTES_PER_ELEMENT,
  type DType,
  type HostArray,
  hostArrayFor,
} from '../src/tensor/dtype.js';
import { type DeviceStorage, type Storage, Tensor } from '../src/tensor/tensor.js';

// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging -- the constructor installs the kernel functions on the instance; this merge gives them their types
export interface DeviceLikeBackend extends Backend {}
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- see the interface above
export class DeviceLikeBackend implements Backend {
  readonly name = 'device-like';
  readonly floatTypes: readonly DType[] = ['f32'];
  /** Number of read() calls so far (device → host transfers). */
  reads = 0;
  private arenaBytes = 0;

  constructor(private readonly inner: Backend = new RefBackend()) {
    for (const name of KERNEL_NAMES) {
      const kernel = inner[name] as (...args: unknown[]) => void;
      (this as Record<string, unknown>)[name] = (...args: unknown[]) =>
        kernel.apply(
          inner,
          args.map((a) => this.toHost(a)),
        );
    }
  }

  describe(): string {
    return 'device-like test backend (ref kernels behind device storage)';
  }

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const host = this.inner.zeros(shape, dtype);
    const storage: DeviceStorage = { kind: 'device', handle: hostArrayOf(host), byteOffset: 0 };
    return new Tensor(this, [...shape], dtype, storage, {
      kind: 'owned',
      release: () => host.dispose(),
    });
  }

  fromArray(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.zeros(shape, dtype);
    this.write(t, values);
    return t;
  }

  createArena(initialBytes = 0, name = 'arena'): Arena {
    return new ChunkArena(
      this,
      (bytes) => {
        const buffer = new ArrayBuffer(bytes);
        this.arenaBytes += bytes;
        return {
          byteLength: bytes,
          storageAt: (byteOffset, dtype, length) => ({
            kind: 'device',
            handle: hostArrayFor(dtype, buffer, byteOffset, length),
            byteOffset,
          }),
          release: () => {
            this.arenaBytes -= bytes;
          },
        };
      },
      initialBytes,
      name,
    );
  }

  /** A copy taken now (in order with the kernels before it), delivered on a later turn of the event loop. */
  read(t: Tensor): Promise<HostArray> {
    this.reads++;
    const copy = handleOf(t).slice();
    return new Promise((resolve) => setImmediate(() => resolve(copy)));
  }

  write(t: Tensor, values: ArrayLike<number>): void {
    this.inner.write(this.hostTwin(t), values);
  }

  sliceStorage(storage: Storage, dtype: DType, offset: number, length: number): Storage {
    if (storage.kind !== 'device') throw new Error('device-like: not a device tensor');
    const array = storage.handle as HostArray;
    return {
      kind: 'device',
      handle: array.subarray(offset, offset + length),
      byteOffset: storage.byteOffset + offset * BYTES_PER_ELEMENT[dtype],
    };
  }

  memoryStats(): MemoryStats {
    const s = this.inner.memoryStats();
    return {
      allocatedBytes: s.allocatedBytes + this.arenaBytes,
      peakBytes: s.peakBytes + this.arenaBytes,
    };
  }

  /** The same elements as a ref tensor (the kernels' view of device memory). */
  private hostTwin(t: Tensor): Tensor {
    if (t.backend !== this)
      throw new Error(`device-like: a tensor of backend '${t.backend.name}' was passed in`);
    return new Tensor(
      this.inner,
      t.shape,
      t.dtype,
      { kind: 'host', array: handleOf(t) },
      { kind: 'owned', release: null },
    );
  }

  /** Kernel arguments: tensors become host twins, inside plain objects too (weights, options, optimizer state). */
  private toHost(a: unknown): unknown {
    if (a instanceof Tensor) return this.hostTwin(a);
    if (Array.isArray(a)) return a.map((x) => this.toHost(x));
    if (a !== null && typeof a === 'object' && Object.getPrototypeOf(a) === Object.prototype) {
      return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, this.toHost(v)]));
    }
    return a;
  }
}

function handleOf(t: Tensor): HostArray {
  const s = t.storage;
  if (s.kind !== 'device') throw new Error(`device-like: tensor ${t} is not device-resident`);
  return s.handle as HostArray;
}

function hostArrayOf(t: Tensor): HostArray {
  const s = t.storage;
  if (s.kind !== 'host') throw new Error('expected a host tensor');
  return s.array;
}
