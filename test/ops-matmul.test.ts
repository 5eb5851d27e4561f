// matmul on every backend under test against ref (float64): all transposes, odd shapes around the
// GPU tile sizes (64, 128) with both tile shapes, alpha/beta (beta 0 ignores NaN), batched and
// broadcast b, views at unaligned offsets, and — on webgpu — operands split into binding windows
// (a forced small binding limit stands in for a 500 MiB lm_head).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { TILES, type TileName } from '../src/backends/webgpu/kernels/gemm.js';
import { planWindows } from '../src/backends/webgpu/kernels/gemm-plan.js';
import { gemmTuning } from '../src/backends/webgpu/kernels/matmul.js';
import type { Backend, MatmulOptions } from '../src/tensor/backend.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';

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

const TRANSPOSES = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

/** Runs a case on the backend and on ref from the same inputs; returns the backend's result. */
async function check(
  P: Pairs,
  be: Backend,
  c: Case,
  init: 'random' | number = 'random',
): Promise<Float32Array> {
  const batch = c.batch.reduce((s, d) => s * d, 1);
  const a = P.random([...c.batch, ...(c.transA ? [c.K, c.M] : [c.M, c.K])]);
  const bCore = c.transB ? [c.N, c.K] : [c.K, c.N];
  const b = P.random(c.bBatched ? [...c.batch, ...bCore] : bCore);
  const outShape = [...c.batch, c.M, c.N];
  const out =
    init === 'random'
      ? P.random(outShape)
      : P.pair(new Float32Array(batch * c.M * c.N).fill(init), outShape);
  const options: MatmulOptions = {
    transA: c.transA,
    transB: c.transB,
    alpha: c.alpha,
    beta: c.beta,
  };
  be.matmul(a.t, b.t, out.t, options);
  ref.matmul(a.r, b.r, out.r, options);
  // f32 accumulation over K terms of size ~1: the error grows ~eps·K in the worst case.
  const scale = Math.abs(c.alpha ?? 1);
  await P.close(out, JSON.stringify(c), { atol: 2e-6 * (c.K + 1) * scale + 1e-6, rtol: 1e-5 });
  return (await out.t.read()) as Float32Array;
}

async function withTile<T>(name: string, tile: TileName | null, f: () => Promise<T>): Promise<T> {
  if (name !== 'webgpu') return f();
  const saved = gemmTuning.tile;
  gemmTuning.tile = tile;
  try {
    return await f();
  } finally {
    gemmTuning.tile = saved;
  }
}

for (const { name, be } of await backendsUnderTest()) {
  const tiles: (TileName | null)[] = name === 'webgpu' ? ['small', 'large'] : [null];

  test(`${name}: matmul matches ref for odd shapes and every transpose combination (each tile shape)`, async () => {
    const P = new Pairs(be, ref, 100);
    try {
      const shapes: [number, number, number][] = [
        [1, 1, 1],
        [1, 7, 3],
        [3, 1, 5],
        [2, 3, 1],
        [5, 16, 16],
        [13, 31, 17],
        [63, 65, 8],
        [65, 129, 9],
        [129, 63, 33],
      ];
      for (const tile of tiles) {
        // A software adapter compiles each GEMM pipeline in ~10 s of CPU: the 128×128 tile (same
        // generator, other constants) runs one transpose pair, both operands transposed.
        const pairs = tile === 'large' ? [TRANSPOSES[3]] : TRANSPOSES;
        await withTile(name, tile, async () => {
          for (const [M, N, K] of shapes) {
            for (const [transA, transB] of pairs)
              await check(P, be, { batch: [], M, N, K, transA, transB });
          }
        });
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: matmul alpha/beta, beta = 0 ignores NaN in out, K = 0`, async () => {
    const P = new Pairs(be, ref, 200);
    try {
      for (const [transA, transB] of TRANSPOSES) {
        await check(P, be, {
          batch: [],
          M: 23,
          N: 41,
          K: 19,
          transA,
          transB,
          alpha: -0.5,
          beta: 0.75,
        });
        for (const M of [1, 20]) {
          const got = await check(
            P,
            be,
            { batch: [], M, N: 40, K: 50, transA, transB, alpha: 1.5, beta: 0 },
            NaN,
          );
          assert.ok(
            got.every((v) => Number.isFinite(v)),
            'NaN leaked from out with beta 0',
          );
        }
      }
      await check(P, be, { batch: [], M: 3, N: 4, K: 0, beta: 0.5 });
      const empty = await check(P, be, { batch: [], M: 30, N: 40, K: 0, beta: 0 }, NaN);
      assert.ok(
        empty.every((v) => v === 0),
        'K = 0 with beta 0 gives zeros',
      );
    } finally {
      P.free();
    }
  });

  test(`${name}: matmul with batched b and broadcast 2-D b`, async () => {
    const P = new Pairs(be, ref, 300);
    try {
      for (const [transA, transB] of TRANSPOSES) {
        await check(P, be, { batch: [2, 3], M: 9, N: 21, K: 35, transA, transB, bBatched: true });
        await check(P, be, {
          batch: [4],
          M: 17,
          N: 20,
          K: 33,
          transA,
          transB,
          bBatched: false,
          beta: 0.5,
        });
        await check(P, be, {
          batch: [3],
          M: 1,
          N: 70,
          K: 33,
          transA,
          transB,
          bBatched: true,
          alpha: 2,
        });
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: matmul on views at unaligned offsets, and a and b the same tensor`, async () => {
    const P = new Pairs(be, ref, 400);
    try {
      const big = P.random([7 * 13 + 3]);
      const a = {
        t: big.t.rows(3, 3 + 7 * 13).view([7, 13]),
        r: big.r.rows(3, 3 + 7 * 13).view([7, 13]),
      };
      const holder = P.random([5 + 7 * 7]);
      const out = {
        t: holder.t.rows(5, 5 + 49).view([7, 7]),
        r: holder.r.rows(5, 5 + 49).view([7, 7]),
      };
      be.matmul(a.t, a.t, out.t, { transB: true, beta: 1 });
      ref.matmul(a.r, a.r, out.r, { transB: true, beta: 1 });
      await P.close(holder, 'x·xᵀ at offsets 3 and 5 (neighbours untouched)', {
        atol: 3e-5,
        rtol: 1e-5,
      });
    } finally {
      P.free();
    }
  });

  test(`${name}: matmul rejects bad shapes, dtypes and aliasing with clear errors`, () => {
    const z = (shape: number[], dtype: 'f32' | 'i32' = 'f32') => be.zeros(shape, dtype);
    const a = z([3, 4]);
    const b2 = z([4, 6]);
    const out = z([3, 6]);
    // One set of rules and messages for every backend (shape-checks.ts), each with its prefix.
    assert.throws(
      () => be.matmul(a, z([5, 6]), out),
      new RegExp(
        `^Error: ${name}\\.matmul: inner dimensions differ: a \\[3, 4\\], b \\[5, 6\\], out \\[3, 6\\]$`,
      ),
    );
    assert.throws(() => be.matmul(a, b2, z([3, 5])), /out must be \[3, 6\]/);
    assert.throws(() => be.matmul(z([2, 3, 4]), z([3, 4, 6]), z([2, 3, 6])), /batch dims/);
    assert.throws(() => be.matmul(z([4]), b2, out), /rank ≥ 2/);
    assert.throws(() => be.matmul(z([3, 4], 'i32'), b2, out), /must be f32/);
    const square = z([4, 4]);
    assert.throws(
      () => be.matmul(square, square.view([4, 4]), square),
      /matmul: a and out must not alias/,
    );
    be.matmul(a, b2, out); // a valid call still works
  });

  if (name === 'webgpu') {
    test('webgpu: matmul with operands larger than one binding runs in windows (forced small binding limit)', async () => {
      const P = new Pairs(be, ref, 500);
      const saved = gemmTuning.maxBindingBytes;
      // 1 KiB of payload per binding (after the 256-byte alignment slack): every operand below is split.
      gemmTuning.maxBindingBytes = 1024 + 256;
      try {
        for (const [transA, transB] of TRANSPOSES) {
          await check(P, be, {
            batch: [],
            M: 37,
            N: 90,
            K: 70,
            transA,
            transB,
            alpha: 0.5,
            beta: 0.25,
          });
          await check(P, be, { batch: [3], M: 5, N: 40, K: 9, transA, transB, bBatched: true });
          await check(P, be, {
            batch: [2],
            M: 6,
            N: 33,
            K: 21,
            transA,
            transB,
            bBatched: false,
            beta: 1,
          });
        }
      } finally {
        gemmTuning.maxBindingBytes = saved;
        P.free();
      }
    });
  }
}

test('window planner: a 32000×4096 f32 lm_head (500 MiB) splits into binding-sized windows covering every output once', () => {
  const limits = { maxBinding: 128 * 2 ** 20, bindAlign: 256, maxWorkgroups: 65535 };
  const [M, N, K] = [2048, 32000, 4096];
  // logits = x · Wᵀ (transB), and the input gradient dx = dlogits · W (W as an untransposed [N, K] b).
  for (const [shape, bRows] of [
    [
      {
        batch: 1,
        M,
        N,
        K,
        transA: false,
        transB: true,
        lda: K,
        ldb: K,
        ldc: N,
        sA: 0,
        sB: 0,
        sC: 0,
      },
      'n',
    ],
    [
      {
        batch: 1,
        M,
        N: K,
        K: N,
        transA: false,
        transB: false,
        lda: N,
        ldb: K,
        ldc: K,
        sA: 0,
        sB: 0,
        sC: 0,
      },
      'k',
    ],
  ] as const) {
    const windows = planWindows(shape, 'large', limits);
    assert.ok(windows.length > 1, 'split');
    const covered = new Map<string, number>();
    for (const w of windows) {
      const rows = bRows === 'n' ? w.n1 - w.n0 : w.k1 - w.k0;
      const width = bRows === 'n' ? K : shape.ldb;
      assert.ok(
        rows * width * 4 <= limits.maxBinding - limits.bindAlign,
        `b window ${rows} rows fits`,
      );
      assert.ok((w.m1 - w.m0) * shape.ldc * 4 <= limits.maxBinding, 'out window fits');
      const key = `${w.m0},${w.n0}`;
      covered.set(key, (covered.get(key) ?? 0) + (w.k1 - w.k0));
      assert.equal(w.accumulate, w.k0 > 0);
    }
    // Every output tile gets the whole K exactly once.
    for (const k of covered.values()) assert.equal(k, shape.K);
    const area = windows
      .filter((w) => w.k0 === 0)
      .reduce((s, w) => s + (w.m1 - w.m0) * (w.n1 - w.n0), 0);
    assert.equal(area, shape.M * shape.N);
    assert.ok(
      windows.every((w) => (w.n1 - w.n0) % TILES.large.BN === 0 || w.n1 === shape.N),
      'whole tiles',
    );
  }
});
