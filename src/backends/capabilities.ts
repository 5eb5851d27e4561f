/**
 * Optional backend abilities whose types belong to layers above `tensor` (where the Backend
 * interface lives): callers ask for the ability, never for a backend's name.
 */
import {
  type Quantize4bitOptions,
  type Quantized4bit,
  quantize4bit,
} from '../quant/quantize4bit.js';
import type { Backend, ComputeDtype } from '../tensor/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { GGML_QUANT_TYPES, type GgmlWeight } from '../quant/ggml-blocks.js';

export type HostQuantize4bit = (
  values: ArrayLike<number>,
  options?: Quantize4bitOptions,
) => Quantized4bit;

/** A backend with a host quantizer faster than src/quant/quantize4bit.ts and bit-identical to it. */
export interface QuantizingBackend extends Backend {
  readonly quantize4bitHost: HostQuantize4bit;
}

export function hasHostQuantizer(be: Backend): be is QuantizingBackend {
  return typeof (be as Partial<QuantizingBackend>).quantize4bitHost === 'function';
}

/** The quantizer to build a model with on `be`: its own when it has one, else the TypeScript one (same bits). */
export function quantizerFor(be: Backend): HostQuantize4bit {
  return hasHostQuantizer(be) ? be.quantize4bitHost : quantize4bit;
}

/**
 * A backend whose tensors have shapes and byte counts but hold no values (the memory planner's
 * counting backend, counting.ts): a model is built on it by shape, with nothing loaded or quantized.
 */
export interface ShapesOnlyBackend extends Backend {
  readonly shapesOnly: true;
}

export function holdsShapesOnly(be: Backend): be is ShapesOnlyBackend {
  return (be as Partial<ShapesOnlyBackend>).shapesOnly === true;
}

/**
 * A backend that can run its frozen-base 4-bit matmuls in more than one precision on this machine
 * (cpu: bf16 where the CPU has AVX512_BF16). Its twins share memory and every other kernel.
 */
export interface ComputeDtypeBackend extends Backend {
  /** The precisions available here, the fastest first (the default of `--compute-dtype auto`). */
  readonly computeDtypes: readonly ComputeDtype[];
  /** This backend computing in `dtype` (itself when it already does); throws when unavailable. */
  withComputeDtype(dtype: ComputeDtype): Backend;
}

export function hasComputeDtypes(be: Backend): be is ComputeDtypeBackend {
  const c = be as Partial<ComputeDtypeBackend>;
  return Array.isArray(c.computeDtypes) && typeof c.withComputeDtype === 'function';
}

/** The precision `be` computes its 4-bit matmuls in. */
export function computeDtypeOf(be: Backend): ComputeDtype {
  return be.computeDtype ?? 'f32';
}

/**
 * A backend that can time its own arithmetic peak and name the build of its kernels (cpu: the
 * register-only FMA loop on every thread; the addon file). The speed plan reports model-FLOP
 * utilisation against the peak and keeps its kernel timings per build.
 */
export interface SelfMeasuringBackend extends Backend {
  /** FMA peak of all threads in FLOP/s (multiply-add = 2), measured now. */
  measureFmaPeak(dtype?: ComputeDtype): number;
  /** Which compiled kernels run (changes when the addon is rebuilt). */
  readonly buildId: string;
}

export function measuresItself(be: Backend): be is SelfMeasuringBackend {
  const c = be as Partial<SelfMeasuringBackend>;
  return typeof c.measureFmaPeak === 'function' && typeof c.buildId === 'string';
}

/**
 * A backend that holds frozen weights in a GGUF's own quantized blocks (Q4_0, Q8_0, Q4_K, Q5_K,
 * Q6_K; `--quant keep`) and multiplies by them, decoding tile by tile (the blocks stay as stored).
 * The same products the 4-bit base has, in the backend's compute dtype.
 */
export interface GgmlBackend extends Backend {
  /** out[n, rows] = x[n, cols] · dequant(w)ᵀ + beta·out. */
  matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor, beta?: number): void;
  /** dx[n, cols] = dy[n, rows] · dequant(w) + beta·dx (w is frozen: no weight gradient). */
  matmulGgmlInputGrad(dy: Tensor, w: GgmlWeight, dx: Tensor, beta?: number): void;
  /** out[rows, cols] = dequant(w), ggml's values. */
  dequantizeGgml(w: GgmlWeight, out: Tensor): void;
}

export function hasGgmlKernels(be: Backend): be is GgmlBackend {
  const g = be as Partial<GgmlBackend>;
  return (
    typeof g.matmulGgml === 'function' &&
    typeof g.matmulGgmlInputGrad === 'function' &&
    typeof g.dequantizeGgml === 'function'
  );
}

/** `be` with its GGUF-block kernels, or an error saying which backends have them. */
export function ggmlKernelsOf(be: Backend, what = 'GGUF-quantized weights'): GgmlBackend {
  if (hasGgmlKernels(be)) return be;
  const types = Object.values(GGML_QUANT_TYPES)
    .map((g) => g.name)
    .join(', ');
  throw new Error(
    `backend '${be.name}' cannot hold ${what} (${types}) as stored (--quant keep); the cpu, webgpu and ref backends can, or load with --quant nf4|none`,
  );
}
