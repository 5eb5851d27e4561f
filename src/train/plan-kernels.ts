/**
 * The speed plan's inventory: the kernel calls of one real training step, recorded while the memory
 * planner runs that step on the counting backend (plan-memory.ts), and timed by running each
 * distinct call on the backend the run will use (plan-speed.ts). A change to the model or the
 * trainer changes the inventory with nothing to keep in step, as for memory.
 *
 * A recorded call keeps every argument's shape, dtype and plain value, but no data: replayed, its
 * tensors are zeros of the same shapes (integer ids, positions and segment ids of 0 are valid, and
 * the kernels' cost does not depend on the values: no data-dependent branches, denormals flushed).
 */
import type { Backend } from '../tensor/backend.js';
import type { DType } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';

/** A tensor argument, by shape. */
export interface TensorArg {
  readonly tensor: readonly number[];
  readonly dtype: DType;
}

/** An argument as recorded: a tensor by shape, a plain value, or an object/array of those. */
export type KernelArg =
  | TensorArg
  | number
  | string
  | boolean
  | null
  | undefined
  | readonly KernelArg[]
  | { readonly [key: string]: KernelArg };

export interface KernelCall {
  /** The Backend method, e.g. 'matmul4bit'. */
  readonly op: string;
  readonly args: readonly KernelArg[];
}

/** The Backend methods that do a kernel's work (what a training step spends its time in). */
export const KERNEL_METHODS = [
  'fill',
  'copy',
  'add',
  'scale',
  'axpy',
  'sumOfSquares',
  'sum',
  'matmul',
  'matmul4bit',
  'matmul4bitInputGrad',
  // GGUF blocks kept as stored (--quant keep; capabilities.ts GgmlBackend, absent on some backends).
  'matmulGgml',
  'matmulGgmlInputGrad',
  'dequantizeGgml',
  'dequantize4bit',
  'embedding4bit',
  'embedding',
  'embeddingBackward',
  'rmsnorm',
  'rmsnormBackward',
  'rope',
  'attention',
  'attentionBackward',
  'swiglu',
  'swigluBackward',
  'crossEntropy',
  'dropout',
  'adamw',
  'adamw8bit',
] as const;

/**
 * Values that differ from step to step without changing a kernel's cost (the optimizer's step and
 * learning rate, dropout's seed): left out of a call's signature so one step's calls stand for all.
 */
const STEP_VARYING_KEYS = new Set(['step', 'lr']);
const STEP_VARYING_POSITIONS: Readonly<Record<string, number>> = { dropout: 2 };

function describe(value: unknown, depth = 0): KernelArg {
  if (value instanceof Tensor) return { tensor: [...value.shape], dtype: value.dtype };
  if (value === null || value === undefined) return value;
  if (typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean')
    return value;
  if (depth > 4) throw new Error('plan: a kernel argument nests too deeply to record');
  if (Array.isArray(value)) return value.map((v) => describe(v, depth + 1));
  if (typeof value === 'object') {
    const out: Record<string, KernelArg> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (typeof v !== 'function') out[k] = describe(v, depth + 1);
    }
    return out;
  }
  throw new Error(`plan: cannot record a kernel argument of type ${typeof value}`);
}

/**
 * Records the kernel calls `be` receives while `fn` runs (the methods are wrapped for that time
 * only; calls still run). Returns what `fn` returned and the calls, in order.
 */
export async function recordKernels<T>(
  be: Backend,
  fn: () => Promise<T>,
): Promise<{ result: T; calls: KernelCall[] }> {
  const calls: KernelCall[] = [];
  const target = be as unknown as Record<string, unknown>;
  const saved = new Map<string, unknown>();
  for (const op of KERNEL_METHODS) {
    const original = target[op];
    if (typeof original !== 'function') continue;
    saved.set(op, Object.prototype.hasOwnProperty.call(target, op) ? original : undefined);
    target[op] = (...args: unknown[]) => {
      calls.push({ op, args: args.map((a) => describe(a)) });
      return (original as (...a: unknown[]) => unknown).apply(be, args);
    };
  }
  try {
    return { result: await fn(), calls };
  } finally {
    for (const [op, own] of saved) {
      if (own === undefined) delete target[op];
      else target[op] = own;
    }
  }
}

/** A call's identity for timing: the op and its arguments, without the step-varying values. */
export function kernelSignature(call: KernelCall): string {
  const skip = STEP_VARYING_POSITIONS[call.op];
  const args = call.args.map((a, i) => (i === skip ? 0 : a));
  return `${call.op}${JSON.stringify(args, (k, v: unknown) => (STEP_VARYING_KEYS.has(k) ? 0 : v))}`;
}

function isTensorArg(a: KernelArg): a is TensorArg {
  return typeof a === 'object' && a !== null && !Array.isArray(a) && 'tensor' in a;
}

/** The argument on `be`: tensors become zeros of their shape (collected in `owned` to free). */
function materialize(be: Backend, a: KernelArg, owned: Tensor[]): unknown {
  if (isTensorArg(a)) {
    const t = be.zeros(a.tensor, a.dtype);
    owned.push(t);
    return t;
  }
  if (Array.isArray(a)) return a.map((v: KernelArg) => materialize(be, v, owned));
  if (typeof a === 'object' && a !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(a)) out[k] = materialize(be, v as KernelArg, owned);
    return out;
  }
  return a;
}

/**
 * Seconds one `call` takes on `be`: run once (first use: pipelines, scratch), then repeated until
 * about `minSeconds` have passed, keeping the fastest per-call time; a call slower than that runs
 * once more at most. Backends that queue work (webgpu) are waited for with `sync`.
 */
export async function timeKernel(
  be: Backend & { sync?(): Promise<void> },
  call: KernelCall,
  minSeconds = 0.01,
): Promise<number> {
  const owned: Tensor[] = [];
  try {
    const args = call.args.map((a) => materialize(be, a, owned));
    const method = (be as unknown as Record<string, (...a: unknown[]) => void>)[call.op];
    if (typeof method !== 'function')
      throw new Error(`plan: the backend has no kernel '${call.op}'`);
    const settle = async () => {
      if (be.sync) await be.sync();
    };
    const run = async (times: number): Promise<number> => {
      const start = performance.now();
      for (let i = 0; i < times; i++) method.apply(be, args);
      await settle();
      return (performance.now() - start) / 1000 / times;
    };
    const first = await run(1);
    if (first >= minSeconds) return Math.min(first, await run(1));
    let best = Infinity;
    let spent = 0;
    const batch = Math.max(1, Math.min(1000, Math.floor(minSeconds / 4 / Math.max(first, 1e-7))));
    for (let i = 0; i < 4 && spent < minSeconds; i++) {
      const t = await run(batch);
      best = Math.min(best, t);
      spent += t * batch;
    }
    return best;
  } finally {
    for (const t of owned) t.dispose();
  }
}
