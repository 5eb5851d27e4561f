// cpu.matmul against the float64 reference backend: all transposes, batching and broadcast b,
// alpha/beta, shapes around the kernel's register/cache blocking, thread counts, determinism.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import type { Backend, MatmulOptions } from '../src/tensor/backend.js';
import { assertClose, randn } from './util.js';

const cpu = (await getBackend('cpu')) as CpuBackend;
const ref = await getBackend('ref');

interface Case {
  batch: number[];
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  bBatched?: boolean;
  alpha?: number;
  beta?: number;
}

/** Runs one case on a backend: returns out after the matmul (out starts as `init`). */
function run(
  be: Backend,
  c: Case,
  a: Float64Array,
  b: Float64Array,
  init: Float64Array,
): Float32Array {
  const aShape = [...c.batch, ...(c.transA ? [c.K, c.M] : [c.M, c.K])];
  const bCore = c.transB ? [c.N, c.K] : [c.K, c.N];
  const bShape = c.bBatched ? [...c.batch, ...bCore] : bCore;
  const ta = be.fromArray(a, aShape);
  const tb = be.fromArray(b, bShape);
  const to = be.fromArray(init, [...c.batch, c.M, c.N]);
  const options: MatmulOptions = {
    transA: c.transA,
    transB: c.transB,
    alpha: c.alpha,
    beta: c.beta,
  };
  be.matmul(ta, tb, to, options);
  const result = Float32Array.from(to.data as Float32Array);
  ta.dispose();
  tb.dispose();
  to.dispose();
  return result;
}

let seed = 1000;
function check(c: Case, initValue: number | 'random' = 'random'): Float32Array {
  const batch = c.batch.reduce((s, d) => s * d, 1);
  const a = randn(batch * c.M * c.K, seed++);
  const b = randn((c.bBatched ? batch : 1) * c.K * c.N, seed++);
  const init =
    initValue === 'random'
      ? randn(batch * c.M * c.N, seed++)
      : new Float64Array(batch * c.M * c.N).fill(initValue);
  const got = run(cpu, c, a, b, init);
  const want = run(ref, c, a, b, init);
  // float32 accumulation over K terms of size ~1: error grows ~ eps·K in the worst case.
  const scale = Math.abs(c.alpha ?? 1);
  assertClose(got, want, {
    atol: 2e-6 * (c.K + 1) * scale + 1e-6,
    rtol: 1e-5,
    what: JSON.stringify(c),
  });
  return got;
}

const transposes = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

test('cpu.matmul matches ref for odd shapes and every transpose combination', () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [1, 7, 3],
    [3, 1, 5],
    [2, 3, 1],
    [4, 33, 17],
    [5, 16, 16],
    [13, 31, 15],
    [14, 32, 16],
    [15, 33, 47],
    [29, 65, 129],
    [31, 17, 300],
    [64, 64, 64],
    [100, 37, 513],
  ];
  for (const [M, N, K] of shapes) {
    for (const [transA, transB] of transposes) check({ batch: [], M, N, K, transA, transB });
  }
});

test('cpu.matmul crosses the cache blocks (several K blocks, M > row block, N > column block)', () => {
  for (const [transA, transB] of transposes)
    check({ batch: [], M: 171, N: 2083, K: 530, transA, transB });
});

test('cpu.matmul alpha/beta, and beta = 0 ignores NaN in out', () => {
  for (const [transA, transB] of transposes) {
    check({ batch: [], M: 23, N: 41, K: 19, transA, transB, alpha: -0.5, beta: 0.75 });
    check({ batch: [], M: 2, N: 41, K: 19, transA, transB, alpha: 2, beta: 1 });
    for (const M of [1, 3, 20]) {
      const got = check({ batch: [], M, N: 40, K: 50, transA, transB, alpha: 1.5, beta: 0 }, NaN);
      assert.ok(
        got.every((v) => Number.isFinite(v)),
        'NaN leaked from out with beta 0',
      );
    }
  }
  // K = 0: the product is empty, so out = beta·out.
  check({ batch: [], M: 3, N: 4, K: 0, beta: 0.5 });
  check({ batch: [], M: 30, N: 40, K: 0, beta: 0 }, NaN);
});

test('cpu.matmul batched b and broadcast 2-D b', () => {
  for (const [transA, transB] of transposes) {
    check({ batch: [2, 3], M: 9, N: 21, K: 35, transA, transB, bBatched: true });
    check({ batch: [4], M: 17, N: 20, K: 33, transA, transB, bBatched: false, beta: 0.5 });
    check({ batch: [3], M: 1, N: 20, K: 33, transA, transB, bBatched: true });
  }
});

test('cpu.matmul many small batched products (run one product per thread) match ref and are thread-independent', () => {
  const saved = cpu.threads;
  try {
    for (const c of [
      { batch: [64], M: 40, N: 40, K: 40, transA: true, transB: true, bBatched: true, beta: 0.5 },
      { batch: [8, 25], M: 3, N: 100, K: 100, transA: true, bBatched: false },
      { batch: [200], M: 3, N: 100, K: 100, transB: true, bBatched: true },
    ] satisfies Case[]) {
      cpu.threads = 2;
      const two = check(c);
      seed -= 3; // same inputs again
      cpu.threads = 1;
      assert.deepEqual(check(c), two, `1 vs 2 threads: ${JSON.stringify(c)}`);
    }
  } finally {
    cpu.threads = saved;
  }
});

test('cpu.matmul results are bit-identical across runs and thread counts 1 and 2', () => {
  const saved = cpu.threads;
  try {
    const c: Case = { batch: [], M: 300, N: 170, K: 400, transB: true };
    const a = randn(c.M * c.K, 7);
    const b = randn(c.K * c.N, 8);
    const init = new Float64Array(c.M * c.N);
    cpu.threads = 1;
    const one = run(cpu, c, a, b, init);
    assert.deepEqual(run(cpu, c, a, b, init), one, 'repeat with 1 thread');
    cpu.threads = 2;
    const two = run(cpu, c, a, b, init);
    assert.deepEqual(run(cpu, c, a, b, init), two, 'repeat with 2 threads');
    assert.deepEqual(two, one, '1 vs 2 threads');
    // Tall-skinny shape (split over rows instead of columns), also with 2 threads.
    const t: Case = { batch: [], M: 700, N: 40, K: 90 };
    const a2 = randn(t.M * t.K, 9);
    const b2 = randn(t.K * t.N, 10);
    const z = new Float64Array(t.M * t.N);
    const two2 = run(cpu, t, a2, b2, z);
    cpu.threads = 1;
    assert.deepEqual(run(cpu, t, a2, b2, z), two2, 'row split: 1 vs 2 threads');
    check({ ...t, batch: [] });
  } finally {
    cpu.threads = saved;
  }
});

test('cpu.matmul rejects bad shapes, dtypes and aliasing with clear errors', () => {
  const a = cpu.zeros([3, 4]);
  const b = cpu.zeros([5, 6]);
  const out = cpu.zeros([3, 6]);
  assert.throws(
    () => cpu.matmul(a, b, out),
    /cpu\.matmul: inner dimensions differ: a \[3, 4\], b \[5, 6\], out \[3, 6\]/,
  );
  const b2 = cpu.zeros([4, 6]);
  assert.throws(() => cpu.matmul(a, b2, cpu.zeros([3, 5])), /out must be \[3, 6\]/);
  assert.throws(
    () => cpu.matmul(cpu.zeros([2, 3, 4]), cpu.zeros([3, 4, 6]), cpu.zeros([2, 3, 6])),
    /batch dims/,
  );
  assert.throws(() => cpu.matmul(cpu.zeros([4]), b2, out), /rank ≥ 2/);
  assert.throws(() => cpu.matmul(cpu.zeros([3, 4], 'i32'), b2, out), /must be f32/);
  const square = cpu.zeros([4, 4]);
  assert.throws(() => cpu.matmul(square, square.view([4, 4]), square), /a and out must not alias/);
  cpu.matmul(a, b2, out); // valid call still works
});
