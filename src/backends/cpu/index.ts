import type { HostChunk } from '../../tensor/arena.js';
import type {
  Backend,
  ComputeDtype,
  MatmulOptions,
  MemoryStats,
  Packed4bitWeight,
} from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
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
import { addonBuildId, bf16Available, native } from './native.js';
import { quantize4bitNative } from './quantize4bit-native.js';
import type { ComputeDtypeBackend, GgmlBackend, HostQuantize4bit } from '../capabilities.js';
import * as ggml from './ggml.js';
import type { GgmlWeight } from '../../quant/ggml-blocks.js';

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

export interface CpuBackendOptions {
  /**
   * Precision of the frozen-base matmuls (4-bit, and dense ones marked frozenB such as an f32
   * lm_head): 'f32' (default: the exact-parity path) or 'bf16' (activations and weights rounded to
   * bf16, f32 accumulation with vdpbf16ps; needs an AVX-512 build on a CPU with AVX512_BF16).
   */
  readonly computeDtype?: 'f32' | 'bf16';
}

/** One instance per compute dtype, so twins are reused (they share the addon's memory). */
const twins = new Map<ComputeDtype, CpuBackend>();

/**
 * The native CPU backend: C++ kernels (AVX-512 / AVX2+FMA / scalar, chosen at build time)
 * on a thread pool sized to the machine (QLORA_THREADS overrides). Tensor memory is 64-byte
 * aligned native memory, released explicitly (dispose, arena reset) rather than by the GC.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging -- the constructor installs the kernel functions on the instance; this merge gives them their types
export interface CpuBackend extends Kernels {}
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- see the interface above
export class CpuBackend extends HostMemory implements Backend, ComputeDtypeBackend, GgmlBackend {
  readonly name = 'cpu';
  readonly computeDtype: 'f32' | 'bf16';

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

  /** Capability (capabilities.ts): frozen weights in a GGUF's own blocks, in this twin's compute dtype. */
  matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor, beta = 0): void {
    ggml.matmulGgml(x, w, out, beta, this.computeDtype === 'bf16');
  }

  matmulGgmlInputGrad(dy: Tensor, w: GgmlWeight, dx: Tensor, beta = 0): void {
    ggml.matmulGgmlInputGrad(dy, w, dx, beta, this.computeDtype === 'bf16');
  }

  dequantizeGgml(w: GgmlWeight, out: Tensor): void {
    ggml.dequantizeGgml(w, out);
  }

  describe(): string {
    return `native addon (${this.simd}, ${this.threads} threads, compute ${this.computeDtype})`;
  }

  /** Capability (capabilities.ts): the addon build whose kernels run. */
  readonly buildId: string = addonBuildId;

  /**
   * Capability (capabilities.ts): the FMA peak of all threads, FLOP/s: the thread count × the best
   * of several short register-only loops on one thread (bench_kernels.cc; ~10 ms in all). Other
   * processes only ever slow a measurement down, and a short single-thread loop is the least
   * disturbed, so the best one is the machine's figure even on a busy machine.
   */
  measureFmaPeak(dtype: ComputeDtype = 'f32'): number {
    const bench = native['benchFmaPeak'] as (
      iterations: number,
      dtype?: string,
    ) => { seconds: number; flops: number };
    const threads = native.getThreads();
    native.setThreads(1);
    let best = 0;
    try {
      for (let i = 0; i < 10; i++) {
        const r = bench(200_000, dtype);
        best = Math.max(best, r.flops / r.seconds);
      }
    } finally {
      native.setThreads(threads);
    }
    return best * threads;
  }

  /** Capability (capabilities.ts): bf16 first where the CPU has AVX512_BF16, then f32. */
  get computeDtypes(): readonly ComputeDtype[] {
    return bf16Available() ? ['bf16', 'f32'] : ['f32'];
  }

  /** The cpu backend computing its 4-bit matmuls in `dtype` (same memory, every other kernel f32). */
  withComputeDtype(dtype: ComputeDtype): CpuBackend {
    if (dtype === this.computeDtype) return this;
    if (!twins.has(this.computeDtype)) twins.set(this.computeDtype, this);
    let twin = twins.get(dtype);
    if (!twin) {
      if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(unavailable(dtype));
      twin = new CpuBackend({ computeDtype: dtype });
      twins.set(dtype, twin);
    }
    return twin;
  }

  /** malloc_trim where the addon has it: the heap holes building a model leaves go back to the OS. */
  trimMemory(): boolean {
    return typeof native.trimMemory === 'function' ? (native.trimMemory as () => boolean)() : false;
  }

  constructor(options: CpuBackendOptions = {}) {
    super();
    // The ops come from the per-op modules (see kernelTable); declaration merging types them.
    Object.assign(this, KERNELS);
    this.computeDtype = options.computeDtype ?? 'f32';
    if (this.computeDtype === 'bf16') {
      if (!bf16Available()) throw new Error(unavailable('bf16'));
      this.matmul4bit = (x: Tensor, w: Packed4bitWeight, out: Tensor, beta = 0) =>
        quant4bit.matmul4bit(x, w, out, beta, true);
      this.matmul4bitInputGrad = (dy: Tensor, w: Packed4bitWeight, dx: Tensor, beta = 0) =>
        quant4bit.matmul4bitInputGrad(dy, w, dx, beta, true);
      // Frozen dense base weights (an f32 lm_head, an unquantized base) too; LoRA and the rest stay f32.
      this.matmul = (x: Tensor, y: Tensor, out: Tensor, o?: MatmulOptions) =>
        matmul.matmul(x, y, out, o, true);
    } else if (this.computeDtype !== 'f32') {
      throw new Error(unavailable(this.computeDtype));
    }
  }
}

function unavailable(dtype: string): string {
  if (dtype === 'bf16') {
    return `cpu: compute dtype bf16 needs an AVX-512 build of the native addon on a CPU with AVX512_BF16; this one (${native.simdLevel()}) computes in f32`;
  }
  return `cpu: compute dtype must be f32 or bf16, got '${dtype}'`;
}
