/**
 * The WebGPU backend: tensors live in GPU buffers (storage kind 'device'), kernels are WGSL compute
 * shaders recorded into command buffers, and values reach JavaScript only through `read()`. The
 * same code runs in Node (Dawn, the optional `webgpu` package) and in browsers (navigator.gpu).
 */
import type { Arena } from '../../tensor/arena.js';
import type { Backend, MemoryStats } from '../../tensor/backend.js';
import {
  BYTES_PER_ELEMENT,
  type DType,
  type HostArray,
  hostArrayFor,
  shapeSize,
} from '../../tensor/dtype.js';
import { type Storage, Tensor } from '../../tensor/tensor.js';
import type { GgmlBackend, HostQuantize4bit } from '../capabilities.js';
import type { GgmlWeight } from '../../quant/ggml-blocks.js';
import { type Kernels, kernelTable } from '../host-backend.js';
import { GpuContext } from './context.js';
import {
  type AdapterSummary,
  type GpuDeviceHandle,
  type OpenDeviceOptions,
  openDevice,
} from './gpu.js';
import {
  DeviceBytes,
  createGpuArena,
  deviceStorage,
  sliceDeviceStorage,
  spanOf,
} from './memory.js';
import * as elementwise from './kernels/elementwise.js';
import * as gelu from './kernels/gelu.js';
import * as matmul from './kernels/matmul.js';
import * as quant4bit from './kernels/quant4bit.js';
import * as embedding from './kernels/embedding.js';
import * as norm from './kernels/norm.js';
import * as rope from './kernels/rope.js';
import * as attention from './kernels/attention.js';
import * as loss from './kernels/loss.js';
import * as optim from './kernels/optim.js';
import * as ggml from './kernels/ggml.js';

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

/** Precision of the frozen-base (4-bit) matmuls: f16 tiles with f32 accumulation, or f32 throughout. */
export type ComputeDtype = 'f32' | 'f16';

export interface WebGpuBackendOptions extends OpenDeviceOptions {
  /**
   * 'f16' (needs the adapter's `shader-f16`) runs matmul4bit and matmul4bitInputGrad on f16 tiles
   * with f32 accumulation; LoRA weights, optimizer and loss stay f32. Default 'f32'.
   */
  readonly computeDtype?: ComputeDtype;
}

// eslint-disable-next-line @typescript-eslint/no-empty-object-type, @typescript-eslint/no-unsafe-declaration-merging -- the constructor installs the kernel functions on the instance; this merge gives them their types
export interface WebGpuBackend extends Kernels {}
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- see the interface above
export class WebGpuBackend implements Backend, GgmlBackend {
  readonly name = 'webgpu';
  readonly floatTypes: readonly DType[] = ['f32'];
  readonly ctx: GpuContext;
  private readonly bytes = new DeviceBytes();

  readonly computeDtype: ComputeDtype;

  constructor(handle: GpuDeviceHandle, options: { computeDtype?: ComputeDtype } = {}) {
    this.ctx = new GpuContext(handle);
    this.computeDtype = options.computeDtype ?? 'f32';
    if (this.computeDtype !== 'f32' && this.computeDtype !== 'f16') {
      throw new Error(
        `webgpu: computeDtype must be 'f32' or 'f16', got '${String(this.computeDtype)}'`,
      );
    }
    if (this.computeDtype === 'f16' && !this.ctx.features.has('shader-f16')) {
      throw new Error(
        `webgpu: computeDtype 'f16' needs the shader-f16 feature, which ${handle.adapter.description || 'this adapter'} lacks`,
      );
    }
    Object.assign(this, KERNELS);
  }

  /** The adapter this backend runs on (vendor, description, features, limits). */
  get adapter(): AdapterSummary {
    return this.ctx.handle.adapter;
  }

  /**
   * Capability (capabilities.ts): quantizing a model happens on the host whatever the compute
   * backend, so in Node the native addon's threaded quantizer (same bits as the TypeScript one) is
   * used when it loads — at 7B shapes that is seconds instead of minutes. Absent in browsers.
   */
  quantize4bitHost?: HostQuantize4bit;

  /**
   * Capability (capabilities.ts): frozen weights in a GGUF's own blocks (`--quant keep`), decoded
   * inside the GEMM tiles (kernels/ggml.ts), in this backend's compute dtype.
   */
  matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor, beta = 0): void {
    ggml.matmulGgml(x, w, out, beta);
  }

  matmulGgmlInputGrad(dy: Tensor, w: GgmlWeight, dx: Tensor, beta = 0): void {
    ggml.matmulGgmlInputGrad(dy, w, dx, beta);
  }

  dequantizeGgml(w: GgmlWeight, out: Tensor): void {
    ggml.dequantizeGgml(w, out);
  }

  describe(): string {
    const a = this.adapter;
    return `${a.description || a.architecture || a.vendor} (${a.vendor}${a.isFallback ? ', software adapter' : ''}; compute ${this.computeDtype})`;
  }

  /** Whether WGSL f16 arithmetic is available (the adapter has `shader-f16`). */
  get hasF16(): boolean {
    return this.ctx.features.has('shader-f16');
  }

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    if (dtype === 'f64')
      throw new Error('webgpu: f64 tensors are not supported (GPUs compute in f32)');
    const bytes = shapeSize(shape) * BYTES_PER_ELEMENT[dtype];
    // WebGPU zero-initializes new buffers.
    const buffer = this.ctx.createBuffer(bytes, `tensor [${shape.join(', ')}] ${dtype}`);
    const size = buffer.size;
    this.bytes.add(size);
    return new Tensor(this, [...shape], dtype, deviceStorage(buffer, 0), {
      kind: 'owned',
      release: () => {
        this.bytes.remove(size);
        this.ctx.release(buffer);
      },
    });
  }

  fromArray(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Tensor {
    const t = this.zeros(shape, dtype);
    this.write(t, values);
    return t;
  }

  createArena(initialBytes = 0, name = 'arena'): Arena {
    return createGpuArena(this, this.ctx, this.bytes, initialBytes, name);
  }

  async read(t: Tensor): Promise<HostArray> {
    const span = spanOf(t);
    const bytes = await this.ctx.read(span);
    return hostArrayFor(t.dtype, bytes.buffer, bytes.byteOffset, t.size);
  }

  write(t: Tensor, values: ArrayLike<number>): void {
    if (values.length !== t.size)
      throw new Error(`write: ${values.length} values for a tensor of ${t.size}`);
    const host = hostArrayFor(
      t.dtype,
      new ArrayBuffer(t.size * BYTES_PER_ELEMENT[t.dtype]),
      0,
      t.size,
    );
    if (host.constructor === (values as object).constructor)
      host.set(values as unknown as ArrayLike<number> & HostArray);
    else for (let i = 0; i < values.length; i++) host[i] = values[i]!;
    const span = spanOf(t);
    const bytes = new Uint8Array(host.buffer, host.byteOffset, host.byteLength);
    if (span.byteOffset % 4 === 0 && bytes.byteLength % 4 === 0) {
      this.ctx.write(span, bytes);
      return;
    }
    // A u8 range that does not cover whole words: upload whole words to a temporary and let the
    // byte-exact copy kernel merge them, so neighbouring bytes are left as they were.
    const staging = this.zeros([t.size], 'u8');
    this.ctx.write(spanOf(staging), bytes);
    this.copy(staging, t);
    staging.dispose();
  }

  sliceStorage(storage: Storage, dtype: DType, offset: number, _length: number): Storage {
    return sliceDeviceStorage(storage, dtype, offset);
  }

  memoryStats(): MemoryStats {
    return { allocatedBytes: this.bytes.allocated, peakBytes: this.bytes.peak };
  }

  /** Waits for the GPU to finish everything recorded so far (and reports device errors). */
  sync(): Promise<void> {
    return this.ctx.sync();
  }
}

/** Opens the default GPU and returns a backend on it. */
export async function createWebGpuBackend(
  options: WebGpuBackendOptions = {},
): Promise<WebGpuBackend> {
  const handle = await openDevice({ ...options, f16: options.f16 ?? true });
  const backend = new WebGpuBackend(handle, { computeDtype: options.computeDtype });
  try {
    // A variable specifier keeps bundlers from pulling the Node addon into browser builds.
    const specifier = '../cpu/quantize4bit-native.js';
    backend.quantize4bitHost = (
      (await import(specifier)) as { quantize4bitNative: HostQuantize4bit }
    ).quantize4bitNative;
  } catch {
    // No addon (a browser, or not built): buildLlama falls back to the TypeScript quantizer.
  }
  return backend;
}
