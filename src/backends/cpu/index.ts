import type { HostChunk } from '../../tensor/arena.js';
import type { Backend, MemoryStats } from '../../tensor/backend.js';
import type { DType } from '../../tensor/dtype.js';
import { HostMemory, type Kernels, kernelTable } from '../host-backend.js';
import * as elementwise from './elementwise.js';
import * as matmul from './matmul.js';
import * as quant4bit from './quant4bit.js';
import * as embedding from './embedding.js';
import * as norm from './norm.js';
import * as rope from './rope.js';
import * as attention from './attention.js';
import * as loss from './loss.js';
import * as optim from './optim.js';
import { native } from './native.js';
import { quantize4bitNative } from './quantize4bit-native.js';
import type { HostQuantize4bit } from '../capabilities.js';

const KERNELS = kernelTable([
  elementwise,
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
 * The native CPU backend: C++ kernels (AVX-512 / AVX2+FMA / scalar, chosen at build time)
 * on a thread pool sized to the machine (QLORA_THREADS overrides). Tensor memory is 64-byte
 * aligned native memory, released explicitly (dispose, arena reset) rather than by the GC.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging -- the constructor installs the kernel functions on the instance; this merge gives them their types
export interface CpuBackend extends Kernels {}
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- see the interface above
export class CpuBackend extends HostMemory implements Backend {
  readonly name = 'cpu';

  protected allocChunk(bytes: number): HostChunk {
    const buffer = native.alloc(bytes);
    return { buffer, release: () => native.free(buffer) };
  }

  memoryStats(): MemoryStats {
    const s = native.memoryStats();
    return { allocatedBytes: s.allocatedBytes, peakBytes: s.peakBytes };
  }

  /** Instruction set the addon's kernels were compiled for: 'avx512', 'avx2' or 'scalar'. */
  get simd(): string {
    return native.simdLevel();
  }

  get threads(): number {
    return native.getThreads();
  }

  set threads(n: number) {
    native.setThreads(n);
  }

  readonly floatTypes: readonly DType[] = ['f32'];

  /** Capability (capabilities.ts): the threaded native quantizer, bit-identical to the TypeScript one. */
  readonly quantize4bitHost: HostQuantize4bit = quantize4bitNative;

  describe(): string {
    return `native addon (${this.simd}, ${this.threads} threads)`;
  }

  /** malloc_trim where the addon has it: the heap holes building a model leaves go back to the OS. */
  trimMemory(): boolean {
    return typeof native.trimMemory === 'function' ? (native.trimMemory as () => boolean)() : false;
  }

  constructor() {
    super();
    // The ops come from the per-op modules (see kernelTable); declaration merging types them.
    Object.assign(this, KERNELS);
  }
}
