// The native 4-bit quantizer must reproduce the TypeScript reference quantizer bit for bit: every
// field of the result (packed nibbles, absmax or nested codes, nested absmax, map and offset).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { NF4_THRESHOLDS, FP4_PIVOTS, type QuantType4bit } from '../src/quant/codes4bit.js';
import {
  quantize4bit,
  VALID_4BIT_BLOCKSIZES,
  type Quantize4bitOptions,
} from '../src/quant/quantize4bit.js';
import { quantize4bitNative } from '../src/backends/cpu/quantize4bit-native.js';
import { nextFloat32, randn, randu, rng } from './util.js';

const QUANT_TYPES: readonly QuantType4bit[] = ['nf4', 'fp4'];

function assertSameAsReference(
  values: ArrayLike<number>,
  options: Quantize4bitOptions,
  what: string,
): void {
  const expected = quantize4bit(values, options);
  const actual = quantize4bitNative(values, options);
  assert.deepStrictEqual(actual, expected, `${what} ${JSON.stringify(options)}`);
}

function forAllFormats(
  values: ArrayLike<number>,
  what: string,
  blocksizes: readonly number[] = [64],
): void {
  for (const quantType of QUANT_TYPES) {
    for (const doubleQuant of [false, true]) {
      for (const blocksize of blocksizes)
        assertSameAsReference(values, { quantType, doubleQuant, blocksize }, what);
    }
  }
}

/** The next float32 after t in direction dir (±1). */
async function withThreads(n: number, body: () => void): Promise<void> {
  const cpu = (await getBackend('cpu')) as unknown as { threads: number };
  const saved = cpu.threads;
  cpu.threads = n;
  try {
    body();
  } finally {
    cpu.threads = saved;
  }
}

test('Gaussian and uniform data, every blocksize, partial last blocks and odd counts', () => {
  const sizes = [1, 2, 3, 31, 63, 65, 4096 * 3 + 17, 70001];
  for (const n of sizes) {
    forAllFormats(randn(n, 11 + n, 0.02), `gaussian n=${n}`, VALID_4BIT_BLOCKSIZES);
    forAllFormats(randu(n, 29 + n, -3, 3), `uniform n=${n}`, [32, 4096]);
  }
});

test('enough blocks for several nested (double-quant) blocks of 256', () => {
  // 64 · 256 · 5 + 40 values: 1281 absmax values, a partial nested block at the end.
  forAllFormats(randn(64 * 256 * 5 + 40, 5, 1.5), 'many blocks');
});

test('empty input, zero blocks, a single non-zero per block, subnormals and signed zeros', () => {
  forAllFormats(new Float32Array(0), 'empty');
  forAllFormats(new Float32Array(200), 'all zeros', [32, 64]);
  const sparse = new Float32Array(64 * 9 + 3);
  const r = rng(3);
  for (let b = 0; b < 9; b++) sparse[b * 64 + Math.floor(r() * 64)] = (r() - 0.5) * 10;
  sparse[sparse.length - 1] = -0;
  forAllFormats(sparse, 'single non-zero per block');
  const tiny = Float32Array.from(randn(300, 8), (v) => v * 1e-40); // subnormal float32 values
  tiny[5] = 1.4e-45; // the smallest subnormal
  forAllFormats(tiny, 'subnormals', [32, 64]);
  forAllFormats([0, -0, -0, 0, 3], 'signed zeros', [32]);
});

test('values exactly at, just below and just above every NF4 threshold and FP4 pivot', () => {
  // A 1.0 at the start of every block pins absmax to 1, so s = x exactly and the decision rule is
  // what is tested.
  const pinned = (points: readonly number[], blocksize: number): number[] => {
    const out: number[] = [];
    for (const p of points) out.push(nextFloat32(p, -1), p, nextFloat32(p, 1), -p);
    for (let i = 0; i < out.length; i += blocksize) out.splice(i, 0, 1);
    return out;
  };
  const thresholds = Array.from(NF4_THRESHOLDS);
  const pivots = Object.values(FP4_PIVOTS);
  for (const blocksize of [32, 64, 128]) {
    const pinnedAbsmax = quantize4bitNative(pinned(thresholds, blocksize), {
      blocksize,
      doubleQuant: false,
    }).absmax;
    assert.ok(
      Array.from(pinnedAbsmax).every((a) => a === 1),
      'every block is pinned to absmax 1',
    );
    for (const quantType of QUANT_TYPES) {
      assertSameAsReference(
        pinned(thresholds, blocksize),
        { quantType, blocksize, doubleQuant: false },
        'NF4 thresholds',
      );
      assertSameAsReference(
        pinned(pivots, blocksize),
        { quantType, blocksize, doubleQuant: true },
        'FP4 pivots',
      );
    }
  }
  // The reference rule itself: at a threshold the code stays low, one ulp above it goes up.
  const q = quantize4bitNative([1, NF4_THRESHOLDS[7]!, nextFloat32(NF4_THRESHOLDS[7]!, 1)], {
    doubleQuant: false,
  });
  assert.deepEqual([q.packed[0]! & 0x0f, q.packed[1]! >> 4], [7, 8]);
});

test('number arrays and Float64Arrays are rounded to float32 first, like the reference', () => {
  const wide = randn(333, 21, 0.7);
  forAllFormats(wide, 'Float64Array');
  forAllFormats(Array.from(wide), 'number[]');
});

test('1 and 2 threads give the identical result', async () => {
  const values = Float32Array.from(randn(64 * 1000 + 7, 99, 0.05));
  const results: unknown[] = [];
  for (const threads of [1, 2]) {
    await withThreads(threads, () => {
      results.push(
        quantize4bitNative(values, { quantType: 'nf4', blocksize: 64, doubleQuant: true }),
      );
      assertSameAsReference(
        values,
        { quantType: 'fp4', blocksize: 128, doubleQuant: true },
        `threads=${threads}`,
      );
    });
  }
  assert.deepStrictEqual(results[0], results[1]);
  assert.deepStrictEqual(
    results[0],
    quantize4bit(values, { quantType: 'nf4', blocksize: 64, doubleQuant: true }),
  );
});

test('invalid options and non-finite values are rejected with the reference errors', () => {
  const cases: Array<[ArrayLike<number>, Quantize4bitOptions]> = [
    [[1, 2], { blocksize: 48 }],
    [[1, 2], { quantType: 'int4' as QuantType4bit }],
    [[1, 2, Number.NaN, Number.POSITIVE_INFINITY], { blocksize: 32 }],
    [
      Float32Array.from({ length: 200 }, (_, i) =>
        i === 150 ? Number.NEGATIVE_INFINITY : i === 190 ? Number.NaN : 1,
      ),
      { blocksize: 32 },
    ],
    [[1e39, 0], {}], // finite in float64, infinite once rounded to float32
  ];
  for (const [values, options] of cases) {
    let expected = '';
    assert.throws(
      () => quantize4bit(values, options),
      (e: Error) => ((expected = e.message), true),
    );
    assert.throws(
      () => quantize4bitNative(values, options),
      (e: Error) => e.message === expected,
      expected,
    );
  }
});
