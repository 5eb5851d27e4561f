import { type Arena, type HostChunk, HostArena } from '../tensor/arena.js';
import type { Backend, MemoryStats } from '../tensor/backend.js';
import {
  BYTES_PER_ELEMENT,
  type DType,
  type HostArray,
  hostArrayFor,
  shapeSize,
} from '../tensor/dtype.js';
import { type Storage, Tensor } from '../tensor/tensor.js';

/** Whether two host tensors share any byte of memory (the aliasing checks of ref and cpu). */
export function hostOverlap(a: Tensor, b: Tensor): boolean {
  const x = a.data;
  const y = b.data;
  if (x.buffer !== y.buffer) return false;
  return x.byteOffset < y.byteOffset + y.byteLength && y.byteOffset < x.byteOffset + x.byteLength;
}

/**
 * Memory management shared by the backends whose tensors live in host memory (ref, cpu): storage
 * is a typed array over a chunk that `allocChunk` provides.
 */
export abstract class HostMemory {
  abstract readonly name: string;

  /** A zero-filled block of at least `bytes`, released explicitly. */
  protected abstract allocChunk(bytes: number): HostChunk;

  abstract memoryStats(): MemoryStats;

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const length = shapeSize(shape);
    const chunk = this.allocChunk(length * BYTES_PER_ELEMENT[dtype]);
    const array = hostArrayFor(dtype, chunk.buffer, 0, length);
    return new Tensor(
      this as unknown as Backend,
      [...shape],
      dtype,
      { kind: 'host', array },
      {
        kind: 'owned',
        release: () => chunk.release(),
      },
    );
  }

  fromArray(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.zeros(shape, dtype);
    this.write(t, values);
    return t;
  }

  createArena(initialBytes = 0, name = 'arena'): Arena {
    return new HostArena(
      this as unknown as Backend,
      (bytes) => this.allocChunk(bytes),
      initialBytes,
      name,
    );
  }

  read(t: Tensor): Promise<HostArray> {
    return Promise.resolve(t.data.slice());
  }

  write(t: Tensor, values: ArrayLike<number>): void {
    if (values.length !== t.size)
      throw new Error(`write: ${values.length} values for a tensor of ${t.size}`);
    const a = t.data;
    if (a.constructor === (values as object).constructor) {
      a.set(values as unknown as ArrayLike<number> & HostArray);
    } else {
      for (let i = 0; i < values.length; i++) a[i] = values[i]!;
    }
  }

  sliceStorage(storage: Storage, _dtype: DType, offset: number, length: number): Storage {
    if (storage.kind !== 'host') throw new Error(`${this.name}: not a host tensor`);
    return { kind: 'host', array: storage.array.subarray(offset, offset + length) };
  }
}

/** Every op of the Backend interface (everything but memory management). */
export const KERNEL_NAMES = [
  'fill',
  'copy',
  'copyColumns',
  'add',
  'scale',
  'axpy',
  'sumOfSquares',
  'sum',
  'matmul',
  'matmul4bit',
  'matmul4bitInputGrad',
  'dequantize4bit',
  'embedding4bit',
  'embedding',
  'embeddingBackward',
  'rmsnorm',
  'rmsnormBackward',
  'rope',
  'attention',
  'attentionBackward',
  'softcap',
  'softcapBackward',
  'swiglu',
  'swigluBackward',
  'geluTanh',
  'geluTanhBackward',
  'geglu',
  'gegluBackward',
  'crossEntropy',
  'dropout',
  'adamw',
  'adamw8bit',
] as const satisfies readonly (keyof Backend)[];

export type Kernels = Pick<Backend, (typeof KERNEL_NAMES)[number]>;

/**
 * A backend's kernel table from its per-op modules (each exports functions named after the ops):
 * exactly the ops, each found once, so a missing or doubly defined kernel fails at start-up.
 */
export function kernelTable(modules: readonly Record<string, unknown>[]): Kernels {
  const table: Record<string, unknown> = {};
  for (const name of KERNEL_NAMES) {
    const [found, ...others] = modules.filter((m) => typeof m[name] === 'function');
    if (found === undefined || others.length > 0)
      throw new Error(
        `kernel '${name}' is defined in ${found ? 1 + others.length : 0} modules (expected 1)`,
      );
    table[name] = found[name];
  }
  return table as unknown as Kernels;
}
