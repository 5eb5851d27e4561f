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
import { BYTES_PER_ELEMENT, type DType } from '../tensor/dtype.js';
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
 * only; calls still run). Returns what `fn` returned, the calls in order, and the seconds `fn` spent
 * outside them: the JavaScript between kernels (model and trainer code, arena bookkeeping), which
 * a real step spends as well. Run on the counting backend, whose kernels do nothing, that is the
 * step's host time less the kernels' own argument checks (those are in each kernel's timing).
 */
export async function recordKernels<T>(
  be: Backend,
  fn: () => Promise<T>,
): Promise<{ result: T; calls: KernelCall[]; hostSeconds: number }> {
  const calls: KernelCall[] = [];
  const target = be as unknown as Record<string, unknown>;
  const saved = new Map<string, unknown>();
  let inKernels = 0;
  for (const op of KERNEL_METHODS) {
    const original = target[op];
    if (typeof original !== 'function') continue;
    saved.set(op, Object.prototype.hasOwnProperty.call(target, op) ? original : undefined);
    target[op] = (...args: unknown[]) => {
      const start = performance.now();
      calls.push({ op, args: args.map((a) => describe(a)) });
      try {
        return (original as (...a: unknown[]) => unknown).apply(be, args);
      } finally {
        inKernels += performance.now() - start;
      }
    };
  }
  try {
    const start = performance.now();
    const result = await fn();
    const hostSeconds = Math.max(0, performance.now() - start - inKernels) / 1000;
    return { result, calls, hostSeconds };
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

/** What the timing of one call holds in argument copies at most, by default (see timeKernel). */
const ROTATION_BYTES = 64 * 2 ** 20;
/** Argument copies a timing cycles through (fewer where they would pass the bytes allowed). */
const ROTATION_COPIES = 8;

export interface TimeKernelOptions {
  /** Keep repeating a fast call until about this many seconds have passed (default 0.01). */
  readonly minSeconds?: number;
  /**
   * The argument copies may hold this many bytes together (64 MiB at most; one set is always
   * made). The planner passes half the run's own peak, so timing never raises the peak it predicts.
   */
  readonly maxBytes?: number;
}

/**
 * Seconds one `call` takes on `be`: run once on each argument copy (warming up), then repeated
 * until about `minSeconds` have passed, keeping the fastest per-call time; a call slower than that
 * is timed once. Backends that queue work (webgpu) are waited for with `sync`.
 *
 * The repetitions cycle through up to eight copies of the arguments (`maxBytes` of them): in a
 * real step a kernel's weights were last touched a whole step ago and its inputs a few kernels ago,
 * so timing one set of tensors over and over, all of it hot in the caches, measured the small
 * kernels (LoRA products, norms, rope) well below what a step spends in them.
 */
export async function timeKernel(
  be: Backend & { sync?(): Promise<void> },
  call: KernelCall,
  options: TimeKernelOptions = {},
): Promise<number> {
  const minSeconds = options.minSeconds ?? 0.01;
  const maxBytes = Math.min(ROTATION_BYTES, options.maxBytes ?? ROTATION_BYTES);
  const owned: Tensor[] = [];
  try {
    const method = (be as unknown as Record<string, (...a: unknown[]) => void>)[call.op];
    if (typeof method !== 'function')
      throw new Error(`plan: the backend has no kernel '${call.op}'`);
    const sets = [call.args.map((a) => materialize(be, a, owned))];
    const setBytes = owned.reduce((sum, t) => sum + t.size * BYTES_PER_ELEMENT[t.dtype], 0);
    const copies = Math.max(
      1,
      Math.min(ROTATION_COPIES, Math.floor(maxBytes / Math.max(1, setBytes))),
    );
    while (sets.length < copies) sets.push(call.args.map((a) => materialize(be, a, owned)));
    const settle = async () => {
      if (be.sync) await be.sync();
    };
    let next = 0;
    const run = async (times: number): Promise<number> => {
      const start = performance.now();
      for (let i = 0; i < times; i++) {
        method.apply(be, sets[next]!);
        next = (next + 1) % sets.length;
      }
      await settle();
      return (performance.now() - start) / 1000 / times;
    };
    // Every copy once first: pipelines, scratch, and the first touch of the copies' fresh pages
    // (zeros from the system cost a page fault each on first use), none of which a step pays.
    await run(sets.length);
    const first = await run(1);
    if (first >= minSeconds) return first;
    let best = Infinity;
    let spent = 0;
    const batch = Math.max(
      sets.length,
      Math.min(1000, Math.floor(minSeconds / 4 / Math.max(first, 1e-7))),
    );
    for (let i = 0; i < 4 && spent < minSeconds; i++) {
      const t = await run(batch);
      best = Math.min(best, t);
      spent += t * batch;
    }
    return best;
  } finally {
    for (const t of owned) t.dispose();
    // The copies go back to the system now: held over (the allocator keeps freed blocks of sizes
    // the next call does not ask for) they would add up to more than the run's own peak.
    be.trimMemory?.();
  }
}
