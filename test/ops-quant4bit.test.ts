// The 4-bit ops (matmul4bit, matmul4bitInputGrad, dequantize4bit, embedding4bit) on every backend
// under test against ref: NF4 and FP4, plain and double-quantized absmax, odd shapes (rows that
// start mid-byte and mid-block, the code-by-code path) and word-aligned ones (8 codes per u32),
// n = 1 (decode) and larger, beta 0 (NaN ignored) and beta ≠ 0; on webgpu also both tile shapes,
// weights split into binding windows, and ids out of range raising a fault at the next read.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { gemmTuning } from '../src/backends/webgpu/kernels/matmul.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';
import { disposePacked4bit, uploadPacked4bit } from '../src/quant/upload.js';
import type { Backend, Packed4bitWeight } from '../src/tensor/backend.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';
import { randn, rng } from './util.js';

const ref = await getBackend('ref');

type Spec = readonly [
  quantType: 'nf4' | 'fp4',
  doubleQuant: boolean,
  rows: number,
  cols: number,
  blocksize: number,
];
const WEIGHTS: Spec[] = [
  ['nf4', true, 33, 64, 64], // word path: 8 codes per u32, blocks of 64
  ['nf4', false, 17, 37, 32], // odd cols: rows start mid-byte, code-by-code path
  ['fp4', true, 9, 100, 128], // blocks straddle rows
  ['fp4', false, 70, 24, 64],
  ['nf4', true, 5, 7, 64], // whole weight in one block
];

interface WeightPair {
  readonly t: Packed4bitWeight;
  readonly r: Packed4bitWeight;
}

function quantized(
  be: Backend,
  [quantType, doubleQuant, rows, cols, blocksize]: Spec,
  seed: number,
): WeightPair {
  const q = quantize4bit(Float32Array.from(randn(rows * cols, seed)), {
    quantType,
    doubleQuant,
    blocksize,
  });
  return { t: uploadPacked4bit(be, q, rows, cols), r: uploadPacked4bit(ref, q, rows, cols) };
}

/**
 * A weight laid out by hand (random codes and absmax, blocksize 7, nested blocksize 3): checks the
 * layout rules themselves rather than what the quantizer happens to produce.
 */
function handMade(
  be: Backend,
  rows: number,
  cols: number,
  nested: boolean,
  seed: number,
): WeightPair {
  const r = rng(seed);
  const n = rows * cols;
  const blocksize = 7;
  const nblocks = Math.ceil(n / blocksize);
  const packed = Uint8Array.from({ length: Math.ceil(n / 2) }, () => Math.floor(r() * 256));
  const code = Float32Array.from({ length: 16 }, (_, i) => (i - 7.5) / 7.5);
  const make = (b: Backend): Packed4bitWeight => {
    const nestedState = nested
      ? {
          absmax: b.fromArray(
            Float32Array.from(
              { length: Math.ceil(nblocks / 3) },
              (_, i) => 0.5 + ((i * 37) % 11) / 7,
            ),
            [Math.ceil(nblocks / 3)],
          ),
          code: b.fromArray(
            Float32Array.from({ length: 256 }, (_, i) => (i - 127.5) / 128),
            [256],
          ),
          blocksize: 3,
          offset: 0.125,
        }
      : null;
    const absmax = nested
      ? b.fromArray(
          Uint8Array.from({ length: nblocks }, (_, i) => (i * 101 + 7) & 0xff),
          [nblocks],
          'u8',
        )
      : b.fromArray(
          Float32Array.from({ length: nblocks }, (_, i) => 0.25 + (i % 5)),
          [nblocks],
        );
    return {
      rows,
      cols,
      quantType: 'nf4',
      blocksize,
      packed: b.fromArray(packed, [packed.length], 'u8'),
      code: b.fromArray(code, [16]),
      absmax,
      nested: nestedState,
    };
  };
  return { t: make(be), r: make(ref) };
}

const tol = (K: number) => ({ atol: 2e-6 * (K + 1) + 1e-6, rtol: 1e-5 });

/** matmul4bit and its input gradient for n tokens, beta 0 over NaN and beta ≠ 0 over random values. */
async function checkMatmuls(
  P: Pairs,
  be: Backend,
  w: WeightPair,
  n: number,
  what: string,
): Promise<void> {
  await checkForward(P, be, w, n, what);
  await checkInputGrad(P, be, w, n, what);
}

async function checkForward(
  P: Pairs,
  be: Backend,
  w: WeightPair,
  n: number,
  what: string,
): Promise<void> {
  const { rows, cols } = w.t;
  const x = P.random([n, cols]);
  const out = P.pair(new Float32Array(n * rows).fill(NaN), [n, rows]);
  be.matmul4bit(x.t, w.t, out.t);
  ref.matmul4bit(x.r, w.r, out.r);
  await P.close(out, `matmul4bit ${what} n=${n}`, tol(cols));
  const acc = P.random([n, rows]);
  be.matmul4bit(x.t, w.t, acc.t, 0.5);
  ref.matmul4bit(x.r, w.r, acc.r, 0.5);
  await P.close(acc, `matmul4bit beta 0.5 ${what} n=${n}`, tol(cols));
}

async function checkInputGrad(
  P: Pairs,
  be: Backend,
  w: WeightPair,
  n: number,
  what: string,
): Promise<void> {
  const { rows, cols } = w.t;
  const dy = P.random([n, rows]);
  const dx = P.pair(new Float32Array(n * cols).fill(NaN), [n, cols]);
  be.matmul4bitInputGrad(dy.t, w.t, dx.t);
  ref.matmul4bitInputGrad(dy.r, w.r, dx.r);
  await P.close(dx, `matmul4bitInputGrad ${what} n=${n}`, tol(rows));
  const dx2 = P.random([n, cols]);
  be.matmul4bitInputGrad(dy.t, w.t, dx2.t, -1);
  ref.matmul4bitInputGrad(dy.r, w.r, dx2.r, -1);
  await P.close(dx2, `matmul4bitInputGrad beta -1 ${what} n=${n}`, tol(rows));
}

async function checkDequantAndEmbedding(
  P: Pairs,
  be: Backend,
  w: WeightPair,
  what: string,
): Promise<void> {
  const { rows, cols } = w.t;
  const full = P.zeros([rows, cols]);
  be.dequantize4bit(w.t, full.t);
  ref.dequantize4bit(w.r, full.r);
  // A few f32 roundings apart at most: the cpu kernel may fuse the absmax arithmetic (code·nested + offset) where ref rounds twice.
  await P.close(full, `dequantize4bit ${what}`, { atol: 0, rtol: 4e-7 });
  const ids = Int32Array.from([0, rows - 1, 3 % rows, Math.floor(rows / 2), 0]);
  const idPair = P.pair(ids, [ids.length], 'i32');
  const out = P.zeros([ids.length, cols]);
  be.embedding4bit(idPair.t, w.t, out.t);
  ref.embedding4bit(idPair.r, w.r, out.r);
  await P.close(out, `embedding4bit ${what}`, { atol: 0, rtol: 4e-7 });
}

function dispose(w: WeightPair): void {
  disposePacked4bit(w.t);
  disposePacked4bit(w.r);
}

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: matmul4bit and matmul4bitInputGrad match ref (NF4/FP4, plain and double-quant absmax, n = 1 and larger)`, async () => {
    const P = new Pairs(be, ref, 10);
    try {
      for (const [i, spec] of WEIGHTS.entries()) {
        const w = quantized(be, spec, 50 + i);
        try {
          for (const n of [1, 3, 70]) await checkMatmuls(P, be, w, n, JSON.stringify(spec));
        } finally {
          dispose(w);
        }
      }
      for (const nested of [false, true]) {
        const w = handMade(be, 13, 11, nested, 7);
        try {
          await checkMatmuls(P, be, w, 9, `hand-made blocksize 7 nested ${nested}`);
        } finally {
          dispose(w);
        }
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: dequantize4bit and embedding4bit match ref (to a few f32 roundings)`, async () => {
    const P = new Pairs(be, ref, 20);
    try {
      for (const [i, spec] of WEIGHTS.entries()) {
        const w = quantized(be, spec, 60 + i);
        try {
          await checkDequantAndEmbedding(P, be, w, JSON.stringify(spec));
        } finally {
          dispose(w);
        }
      }
      for (const nested of [false, true]) {
        const w = handMade(be, 13, 11, nested, 8);
        try {
          await checkDequantAndEmbedding(P, be, w, `hand-made nested ${nested}`);
        } finally {
          dispose(w);
        }
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: 4-bit ops reject mismatched shapes and arrays with the op name`, () => {
    const q = quantize4bit(Float32Array.from(randn(6 * 8, 3)), { blocksize: 64 });
    const w = uploadPacked4bit(be, q, 6, 8);
    const z = (shape: number[]) => be.zeros(shape);
    try {
      assert.throws(() => be.matmul4bit(z([2, 7]), w, z([2, 6])), /matmul4bit.*x/);
      assert.throws(() => be.matmul4bit(z([2, 8]), w, z([2, 5])), /matmul4bit.*out/);
      assert.throws(
        () => be.matmul4bitInputGrad(z([2, 6]), w, z([3, 8])),
        /matmul4bitInputGrad.*dx/,
      );
      assert.throws(() => be.dequantize4bit(w, z([6, 7])), /dequantize4bit.*out/);
      assert.throws(
        () => be.matmul4bit(z([2, 8]), { ...w, rows: 7 }, z([2, 7])),
        /matmul4bit.*packed/,
      );
      assert.throws(
        () => be.embedding4bit(be.zeros([2], 'f32'), w, z([2, 8])),
        /embedding4bit.*ids must be i32/,
      );
      // One set of size rules and messages for every backend (shape-checks.ts).
      const short: Packed4bitWeight = { ...w, absmax: z([0]) };
      assert.throws(
        () => be.dequantize4bit(short, z([6, 8])),
        new RegExp(`^Error: ${name}\\.dequantize4bit: w\\.absmax has 0 elements, expected 1$`),
      );
      assert.throws(
        () => be.matmul4bit(z([2, 7]), w, z([2, 6])),
        new RegExp(`^Error: ${name}\\.matmul4bit: x \\[2, 7\\] must be \\[n, 8\\]$`),
      );
      assert.throws(
        () => be.matmul4bit(z([2, 8]), { ...w, blocksize: 0 }, z([2, 6])),
        new RegExp(`^Error: ${name}\\.matmul4bit: invalid blocksize 0$`),
      );
      be.matmul4bit(z([2, 8]), w, z([2, 6])); // a valid call still works
    } finally {
      disposePacked4bit(w);
    }
  });

  if (name === 'webgpu') {
    test('webgpu: 4-bit ops on weights larger than one binding (forced small limit) and both tile shapes', async () => {
      const P = new Pairs(be, ref, 30);
      const saved = { ...gemmTuning };
      try {
        for (const [i, spec] of (
          [
            ['nf4', true, 70, 64, 64],
            ['fp4', false, 45, 37, 32],
          ] as Spec[]
        ).entries()) {
          const w = quantized(be, spec, 80 + i);
          try {
            // 256 bytes of payload: 8 rows of 64 codes per window; x, out and dx split too.
            gemmTuning.maxBindingBytes = 512 + 1;
            await checkMatmuls(P, be, w, 5, `windows ${JSON.stringify(spec)}`);
            await checkDequantAndEmbedding(P, be, w, `windows ${JSON.stringify(spec)}`);
            gemmTuning.maxBindingBytes = saved.maxBindingBytes;
            // The 128×128 tile on the training hot path (x·Wᵀ from whole words); a software
            // adapter compiles each pipeline for seconds, so the other variants run 64×64 only.
            if (i === 0) {
              gemmTuning.tile = 'large';
              await checkForward(P, be, w, 130, `large tile ${JSON.stringify(spec)}`);
              gemmTuning.tile = saved.tile;
            }
          } finally {
            dispose(w);
          }
        }
      } finally {
        Object.assign(gemmTuning, saved);
        P.free();
      }
    });

    test('webgpu: computeDtype f16 runs the 4-bit matmuls on f16 tiles with f32 accumulation (within f16 tolerance of ref)', async (t) => {
      if (!(be as unknown as { hasF16: boolean }).hasF16) {
        t.skip('this adapter has no shader-f16');
        return;
      }
      // Imported here: the module refuses to load while kernels are missing (outside this test's reach).
      const { createWebGpuBackend } = await import('../src/backends/webgpu/index.js');
      const half = await createWebGpuBackend({ computeDtype: 'f16' });
      const [rows, cols, n] = [40, 96, 7];
      const q = quantize4bit(Float32Array.from(randn(rows * cols, 11)), {
        quantType: 'nf4',
        doubleQuant: true,
        blocksize: 64,
      });
      const x = Float32Array.from(randn(n * cols, 12));
      const dy = Float32Array.from(randn(n * rows, 13));
      const run = async (b: Backend, op: 'forward' | 'inputGrad'): Promise<Float64Array> => {
        const w = uploadPacked4bit(b, q, rows, cols);
        const input = op === 'forward' ? b.fromArray(x, [n, cols]) : b.fromArray(dy, [n, rows]);
        const out = b.zeros(op === 'forward' ? [n, rows] : [n, cols]);
        if (op === 'forward') b.matmul4bit(input, w, out);
        else b.matmul4bitInputGrad(input, w, out);
        const values = Float64Array.from(await out.read());
        input.dispose();
        out.dispose();
        disposePacked4bit(w);
        return values;
      };
      try {
        for (const op of ['forward', 'inputGrad'] as const) {
          const K = op === 'forward' ? cols : rows;
          const want = await run(ref, op);
          const got16 = await run(half, op);
          const got32 = await run(be, op);
          // Operands rounded to f16 (relative 2^-11 each) and f16 products: per-term error ~1e-3,
          // summed over K terms of random sign; values are O(sqrt(K)).
          const bound = 4e-3 * Math.sqrt(K);
          let diff16 = 0;
          let diff32 = 0;
          for (let i = 0; i < want.length; i++) {
            diff16 = Math.max(diff16, Math.abs(got16[i]! - want[i]!));
            diff32 = Math.max(diff32, Math.abs(got32[i]! - want[i]!));
          }
          assert.ok(diff16 <= bound, `f16 ${op}: max |diff| ${diff16} > ${bound}`);
          // The f16 path really ran: it is further from ref than f32 accumulation alone would be.
          assert.ok(
            diff16 > diff32 * 4,
            `f16 ${op} differs from ref by ${diff16}, f32 by ${diff32}`,
          );
        }
      } finally {
        half.ctx.device.destroy();
      }
    });

    test('webgpu: embedding4bit ids out of range raise a fault thrown at the next read, naming the op and the id', async () => {
      const q = quantize4bit(Float32Array.from(randn(10 * 16, 4)), { blocksize: 64 });
      const w = uploadPacked4bit(be, q, 10, 16);
      const ids = be.fromArray([1, 10, 2], [3], 'i32');
      const out = be.zeros([3, 16]);
      try {
        be.embedding4bit(ids, w, out);
        await assert.rejects(out.read(), /embedding4bit: id 10 at position 1 is outside \[0, 10\)/);
        ids.write([1, -3, 2]);
        be.embedding4bit(ids, w, out);
        await assert.rejects(out.read(), /embedding4bit: id -3 at position 1/);
        ids.write([9, 0, 2]);
        be.embedding4bit(ids, w, out);
        await out.read(); // the fault was consumed: valid ids read fine
      } finally {
        for (const t of [ids, out]) t.dispose();
        disposePacked4bit(w);
      }
    });
  }
}
