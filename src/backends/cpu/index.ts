import type { HostChunk } from '../../tensor/arena.js';
import type {
  AdamWOptions,
  AttentionOptions,
  Backend,
  MatmulOptions,
  MemoryStats,
  Packed4bitWeight,
  RopeLayout,
} from '../../tensor/backend.js';
import type { DType } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import { HostMemory } from '../host-backend.js';
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

/**
 * The native CPU backend: C++ kernels (AVX-512 / AVX2+FMA / NEON / scalar, chosen at build time)
 * on a thread pool sized to the machine (QLORA_THREADS overrides). Tensor memory is 64-byte
 * aligned native memory, released explicitly (dispose, arena reset) rather than by the GC.
 */
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

  /** Instruction set the addon was compiled for. */
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

  fill(out: Tensor, value: number): void {
    elementwise.fill(out, value);
  }
  copy(src: Tensor, dst: Tensor): void {
    elementwise.copy(src, dst);
  }
  add(a: Tensor, b: Tensor, out: Tensor): void {
    elementwise.add(a, b, out);
  }
  scale(x: Tensor, alpha: number, out: Tensor): void {
    elementwise.scale(x, alpha, out);
  }
  axpy(alpha: number, x: Tensor, y: Tensor): void {
    elementwise.axpy(alpha, x, y);
  }
  sumOfSquares(x: Tensor, out: Tensor, accumulate: boolean): void {
    elementwise.sumOfSquares(x, out, accumulate);
  }
  swiglu(gate: Tensor, up: Tensor, out: Tensor): void {
    elementwise.swiglu(gate, up, out);
  }
  swigluBackward(dout: Tensor, gate: Tensor, up: Tensor, dgate: Tensor, dup: Tensor): void {
    elementwise.swigluBackward(dout, gate, up, dgate, dup);
  }
  dropout(x: Tensor, p: number, seed: number, out: Tensor): void {
    elementwise.dropout(x, p, seed, out);
  }
  matmul(a: Tensor, b: Tensor, out: Tensor, options?: MatmulOptions): void {
    matmul.matmul(a, b, out, options);
  }
  matmul4bit(x: Tensor, w: Packed4bitWeight, out: Tensor, beta?: number): void {
    quant4bit.matmul4bit(x, w, out, beta);
  }
  matmul4bitInputGrad(dy: Tensor, w: Packed4bitWeight, dx: Tensor, beta?: number): void {
    quant4bit.matmul4bitInputGrad(dy, w, dx, beta);
  }
  dequantize4bit(w: Packed4bitWeight, out: Tensor): void {
    quant4bit.dequantize4bit(w, out);
  }
  embedding(ids: Tensor, table: Tensor, out: Tensor): void {
    embedding.embedding(ids, table, out);
  }
  embeddingBackward(ids: Tensor, dout: Tensor, dtable: Tensor): void {
    embedding.embeddingBackward(ids, dout, dtable);
  }
  rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor, rstd: Tensor): void {
    norm.rmsnorm(x, weight, eps, out, rstd);
  }
  rmsnormBackward(dout: Tensor, x: Tensor, weight: Tensor, rstd: Tensor, dx: Tensor, dweight: Tensor | null): void {
    norm.rmsnormBackward(dout, x, weight, rstd, dx, dweight);
  }
  rope(x: Tensor, positions: Tensor, cos: Tensor, sin: Tensor, layout: RopeLayout, inverse: boolean, out: Tensor): void {
    rope.rope(x, positions, cos, sin, layout, inverse, out);
  }
  attention(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, options: AttentionOptions): void {
    attention.attention(q, k, v, out, lse, options);
  }
  attentionBackward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, options: AttentionOptions): void {
    attention.attentionBackward(dout, q, k, v, out, lse, dq, dk, dv, options);
  }
  crossEntropy(logits: Tensor, labels: Tensor, ignoreIndex: number, losses: Tensor, dlogits: Tensor | null, gradScale: number): void {
    loss.crossEntropy(logits, labels, ignoreIndex, losses, dlogits, gradScale);
  }
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamWOptions): void {
    optim.adamw(param, grad, m, v, options);
  }
}
