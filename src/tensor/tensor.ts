import type { Backend } from './backend.js';
import { type DType, type HostArray, shapeSize, shapeString } from './dtype.js';

/**
 * Where a tensor's elements live. Host backends (ref, cpu) keep a typed array covering exactly the
 * tensor's elements (for cpu it views native memory). A device backend (WebGPU, later) keeps its own
 * handle here; values reach JavaScript only through `Backend.read`.
 */
export type Storage = HostStorage | DeviceStorage;

export interface HostStorage {
  readonly kind: 'host';
  readonly array: HostArray;
}

export interface DeviceStorage {
  readonly kind: 'device';
  readonly handle: unknown;
  readonly byteOffset: number;
}

/** Who releases a tensor's storage. */
export type Lifetime =
  | { readonly kind: 'owned'; release: (() => void) | null }
  | { readonly kind: 'arena'; readonly arena: ArenaLike; readonly generation: number }
  | { readonly kind: 'view'; readonly base: Tensor };

/** The part of an arena a tensor needs to check it is still valid. */
export interface ArenaLike {
  readonly generation: number;
  readonly name: string;
}

/**
 * A dense, row-major (C-order) n-dimensional array owned by one backend.
 *
 * Lifetimes are explicit: long-lived tensors (weights, adapters, optimizer state) are `owned` and
 * released with `dispose()`; per-step activations come from an `Arena` and become invalid when the
 * arena is reset (touching one afterwards throws instead of reading recycled memory).
 */
export class Tensor {
  readonly size: number;
  private disposed = false;

  constructor(
    readonly backend: Backend,
    readonly shape: readonly number[],
    readonly dtype: DType,
    private readonly _storage: Storage,
    private readonly lifetime: Lifetime,
  ) {
    this.size = shapeSize(shape);
  }

  get rank(): number {
    return this.shape.length;
  }

  /** The storage, after checking the tensor is still alive. */
  get storage(): Storage {
    this.assertAlive();
    return this._storage;
  }

  /**
   * Zero-copy access to the elements for host backends. Throws for device-resident tensors:
   * use `read()` there. The array is only valid while the tensor is.
   */
  get data(): HostArray {
    const s = this.storage;
    if (s.kind !== 'host')
      throw new Error(`tensor on backend '${this.backend.name}' is not host-resident; use read()`);
    return s.array;
  }

  /** A copy of the elements (async so device backends can map buffers). */
  read(): Promise<HostArray> {
    return this.backend.read(this);
  }

  /** A copy of the elements as plain numbers (for tests and small tensors). */
  async toArray(): Promise<number[]> {
    return Array.from(await this.read());
  }

  /** Overwrites the elements. */
  write(values: ArrayLike<number>): void {
    this.backend.write(this, values);
  }

  /** Same elements, another shape (sizes must match). */
  view(shape: readonly number[]): Tensor {
    const size = shapeSize(shape);
    if (size !== this.size)
      throw new Error(`cannot view ${shapeString(this.shape)} as ${shapeString(shape)}`);
    return new Tensor(this.backend, [...shape], this.dtype, this.storage, {
      kind: 'view',
      base: this,
    });
  }

  /** Rows [start, end) along the first dimension, as a view (contiguous, no copy). */
  rows(start: number, end: number): Tensor {
    if (this.rank === 0) throw new Error('rows() of a scalar');
    const n = this.shape[0]!;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > n || start > end) {
      throw new Error(`rows(${start}, ${end}) out of range for ${shapeString(this.shape)}`);
    }
    const inner = this.size / (n || 1);
    const shape = [end - start, ...this.shape.slice(1)];
    const storage = this.backend.sliceStorage(
      this.storage,
      this.dtype,
      start * inner,
      (end - start) * inner,
    );
    return new Tensor(this.backend, shape, this.dtype, storage, { kind: 'view', base: this });
  }

  /** True until disposed, or until the arena it came from is reset. */
  get alive(): boolean {
    if (this.disposed) return false;
    switch (this.lifetime.kind) {
      case 'owned':
        return true;
      case 'arena':
        return this.lifetime.arena.generation === this.lifetime.generation;
      case 'view':
        return this.lifetime.base.alive;
    }
  }

  /** Releases owned storage now. A no-op for arena tensors and views (their owner releases them). */
  dispose(): void {
    if (this.disposed) return;
    if (this.lifetime.kind === 'owned') {
      this.disposed = true;
      this.lifetime.release?.();
    }
  }

  /** The tensor that owns a view's storage (a tensor that is no view owns its own). */
  private static storageOwner(t: Tensor): Tensor {
    while (t.lifetime.kind === 'view') t = t.lifetime.base;
    return t;
  }

  private assertAlive(): void {
    if (this.alive) return;
    const root = Tensor.storageOwner(this);
    const why =
      root.lifetime.kind === 'arena' && !root.disposed ? 'its arena was reset' : 'dispose()';
    throw new Error(`tensor ${shapeString(this.shape)} used after ${why}`);
  }

  toString(): string {
    return `Tensor(${shapeString(this.shape)}, ${this.dtype}, ${this.backend.name})`;
  }
}
