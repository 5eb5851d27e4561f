// Which backends the parameterized op suites run on, and a pairing helper that feeds the same
// float32 values to a backend under test and to ref (in f64) and compares after async reads (so
// device backends work). webgpu joins when an adapter exists; with QLORA_REQUIRE_WEBGPU=1 a missing
// adapter fails instead of skipping.
import assert from 'node:assert/strict';
import { getBackend } from '../src/backends/index.js';
import type { Backend } from '../src/tensor/backend.js';
import type { DType } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, randn } from './util.js';

export interface BackendUnderTest {
  readonly name: 'cpu' | 'webgpu';
  readonly be: Backend;
}

let webgpu: Promise<Backend | null> | null = null;

/** The webgpu backend, or null (with the reason printed once) when this machine has no adapter. */
export function webgpuBackend(): Promise<Backend | null> {
  webgpu ??= getBackend('webgpu').catch((err: unknown) => {
    const required = process.env.QLORA_REQUIRE_WEBGPU === '1';
    if (required) throw err;
    console.log(`# webgpu tests skipped: ${(err as Error).message}`);
    return null;
  });
  return webgpu;
}

export async function backendsUnderTest(
  names: readonly ('cpu' | 'webgpu')[] = ['cpu', 'webgpu'],
): Promise<BackendUnderTest[]> {
  const out: BackendUnderTest[] = [];
  // QLORA_TEST_BACKENDS=webgpu narrows the suites (bench/gpu.sh on a GPU machine, where the cpu
  // addon built for another CPU may not load).
  const only = process.env.QLORA_TEST_BACKENDS?.split(',');
  for (const name of names.filter((n) => !only || only.includes(n))) {
    if (name === 'webgpu') {
      const be = await webgpuBackend();
      if (be) out.push({ name, be });
    } else out.push({ name, be: await getBackend(name) });
  }
  return out;
}

export interface Pair {
  /** On the backend under test (f32). */
  readonly t: Tensor;
  /** On ref (f64 for float data). */
  readonly r: Tensor;
}

export const TOL = { atol: 2e-6, rtol: 2e-5 };

/** Same inputs on a backend and ref; tracks tensors to free after each test. */
export class Pairs {
  private readonly live: Tensor[] = [];
  private seed: number;
  constructor(
    readonly be: Backend,
    readonly ref: Backend,
    seed = 1,
  ) {
    this.seed = seed;
  }

  /** Float32-representable normal values. */
  data(n: number, scale = 1): Float32Array {
    return Float32Array.from(randn(n, this.seed++, scale));
  }

  pair(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Pair {
    const t = this.be.fromArray(values, shape, dtype);
    const r = this.ref.fromArray(values, shape, dtype === 'f32' ? 'f64' : dtype);
    this.live.push(t, r);
    return { t, r };
  }

  random(shape: readonly number[], scale = 1): Pair {
    return this.pair(
      this.data(
        shape.reduce((a, b) => a * b, 1),
        scale,
      ),
      shape,
    );
  }

  zeros(shape: readonly number[], dtype: DType = 'f32'): Pair {
    return this.pair(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, dtype);
  }

  /** A tensor on the backend under test only. */
  keep<T extends Tensor>(t: T): T {
    this.live.push(t);
    return t;
  }

  async close(p: Pair, what: string, tol: { atol?: number; rtol?: number } = TOL): Promise<void> {
    assertClose(await p.t.read(), await p.r.read(), { ...tol, what });
  }

  async equal(p: Pair, what: string): Promise<void> {
    assert.deepEqual(Array.from(await p.t.read()), Array.from(await p.r.read()), what);
  }

  free(): void {
    for (const t of this.live.splice(0)) t.dispose();
  }
}
