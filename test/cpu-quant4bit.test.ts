// cpu 4-bit ops (dequantize4bit, matmul4bit, matmul4bitInputGrad) against the reference backend and
// the host dequantizer in src/quant, on weights quantized with the bitsandbytes-exact quantizer.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import {
  dequantize4bit as hostDequantize,
  disposePacked4bit,
  quantize4bit,
  uploadPacked4bit,
} from '../src/quant/index.js';
import type { QuantType4bit } from '../src/quant/index.js';
import type { Backend, Packed4bitWeight } from '../src/tensor/backend.js';
import { assertClose, randn } from './util.js';

const cpu = (await getBackend('cpu')) as CpuBackend;
const ref = await getBackend('ref');

interface WeightCase {
  rows: number;
  cols: number;
  quantType: QuantType4bit;
  blocksize: number;
  doubleQuant: boolean;
}

const cases: WeightCase[] = [
  // Vector fast path: cols % 16 == 0.
  { rows: 48, cols: 64, quantType: 'nf4', blocksize: 64, doubleQuant: true },
  { rows: 70, cols: 96, quantType: 'fp4', blocksize: 32, doubleQuant: false },
  { rows: 33, cols: 160, quantType: 'nf4', blocksize: 128, doubleQuant: false },
  { rows: 40, cols: 528, quantType: 'fp4', blocksize: 256, doubleQuant: true }, // K over one K-block
  { rows: 37, cols: 80, quantType: 'nf4', blocksize: 4096, doubleQuant: true }, // one partial block
  // Scalar path: odd columns, odd element count (last byte half used), blocks straddling rows.
  { rows: 7, cols: 9, quantType: 'nf4', blocksize: 32, doubleQuant: true },
  { rows: 19, cols: 45, quantType: 'fp4', blocksize: 64, doubleQuant: false },
  { rows: 1, cols: 1, quantType: 'nf4', blocksize: 64, doubleQuant: false },
  { rows: 600, cols: 20, quantType: 'nf4', blocksize: 512, doubleQuant: true }, // many nested blocks
];

let seed = 77;

function makeWeight(be: Backend, c: WeightCase, values: Float64Array): Packed4bitWeight {
  const q = quantize4bit(values, {
    quantType: c.quantType,
    blocksize: c.blocksize,
    doubleQuant: c.doubleQuant,
  });
  return uploadPacked4bit(be, q, c.rows, c.cols);
}

test('cpu.dequantize4bit matches the host dequantizer and ref (NF4/FP4, plain and double-quant absmax)', () => {
  for (const c of cases) {
    const values = randn(c.rows * c.cols, seed++, 0.3);
    const q = quantize4bit(values, {
      quantType: c.quantType,
      blocksize: c.blocksize,
      doubleQuant: c.doubleQuant,
    });
    const expected = hostDequantize(q);
    const w = uploadPacked4bit(cpu, q, c.rows, c.cols);
    const out = cpu.zeros([c.rows, c.cols]);
    out.data.fill(NaN);
    cpu.dequantize4bit(w, out);
    // Same f32 products code·absmax; the double-quant absmax may round differently by one ulp.
    assertClose(out.data, expected, {
      atol: 0,
      rtol: 3e-7,
      what: `dequantize ${JSON.stringify(c)}`,
    });
    const wr = uploadPacked4bit(ref, q, c.rows, c.cols);
    const outRef = ref.zeros([c.rows, c.cols]);
    ref.dequantize4bit(wr, outRef);
    assertClose(out.data, outRef.data, {
      atol: 0,
      rtol: 3e-7,
      what: `dequantize vs ref ${JSON.stringify(c)}`,
    });
    disposePacked4bit(w);
    out.dispose();
  }
});

test('cpu.dequantize4bit on a large weight (threaded) matches the host dequantizer', () => {
  const c: WeightCase = {
    rows: 256,
    cols: 1024,
    quantType: 'nf4',
    blocksize: 64,
    doubleQuant: true,
  };
  const q = quantize4bit(randn(c.rows * c.cols, 5, 0.02), {
    quantType: 'nf4',
    blocksize: 64,
    doubleQuant: true,
  });
  const w = uploadPacked4bit(cpu, q, c.rows, c.cols);
  const out = cpu.zeros([c.rows, c.cols]);
  cpu.dequantize4bit(w, out);
  assertClose(out.data, hostDequantize(q), { atol: 0, rtol: 3e-7, what: 'large dequantize' });
  disposePacked4bit(w);
  out.dispose();
});

/** Runs matmul4bit or its input gradient on a backend and returns out. */
function runMatmul(
  be: Backend,
  c: WeightCase,
  values: Float64Array,
  input: Float64Array,
  init: Float64Array,
  n: number,
  inputGrad: boolean,
  beta: number,
): Float32Array {
  const w = makeWeight(be, c, values);
  const x = be.fromArray(input, [n, inputGrad ? c.rows : c.cols]);
  const out = be.fromArray(init, [n, inputGrad ? c.cols : c.rows]);
  if (inputGrad) be.matmul4bitInputGrad(x, w, out, beta);
  else be.matmul4bit(x, w, out, beta);
  const result = Float32Array.from(out.data as Float32Array);
  disposePacked4bit(w);
  x.dispose();
  out.dispose();
  return result;
}

test('cpu.matmul4bit and matmul4bitInputGrad match ref (n = 1 and larger, beta 0 with NaN, beta ≠ 0)', () => {
  for (const c of cases) {
    const values = randn(c.rows * c.cols, seed++, 0.3);
    for (const inputGrad of [false, true]) {
      const K = inputGrad ? c.rows : c.cols;
      const N = inputGrad ? c.cols : c.rows;
      for (const n of [1, 5, 37]) {
        for (const beta of [0, 0.5]) {
          const input = randn(n * K, seed++);
          const init = beta === 0 ? new Float64Array(n * N).fill(NaN) : randn(n * N, seed++);
          const got = runMatmul(cpu, c, values, input, init, n, inputGrad, beta);
          const want = runMatmul(ref, c, values, input, init, n, inputGrad, beta);
          assertClose(got, want, {
            atol: 2e-6 * (K + 1),
            rtol: 1e-5,
            what: `${inputGrad ? 'inputGrad' : 'matmul4bit'} n=${n} beta=${beta} ${JSON.stringify(c)}`,
          });
        }
      }
    }
  }
});

test('cpu.matmul4bit at a training-like shape equals a dense matmul of the dequantized weight bit for bit, 1 and 2 threads', () => {
  const saved = cpu.threads;
  try {
    const rows = 288;
    const cols = 768;
    const n = 200;
    const q = quantize4bit(randn(rows * cols, 11, 0.05), {
      quantType: 'nf4',
      blocksize: 64,
      doubleQuant: true,
    });
    const w = uploadPacked4bit(cpu, q, rows, cols);
    // The dense weight from cpu.dequantize4bit (same f32 arithmetic as the in-panel dequantization).
    const dense = cpu.zeros([rows, cols]);
    cpu.dequantize4bit(w, dense);
    const x = cpu.fromArray(randn(n * cols, 12), [n, cols]);
    const dy = cpu.fromArray(randn(n * rows, 13), [n, rows]);
    const y = cpu.zeros([n, rows]);
    const yDense = cpu.zeros([n, rows]);
    const dx = cpu.zeros([n, cols]);
    const dxDense = cpu.zeros([n, cols]);
    const results: Float32Array[] = [];
    for (const threads of [1, 2]) {
      cpu.threads = threads;
      cpu.matmul4bit(x, w, y);
      cpu.matmul(x, dense, yDense, { transB: true });
      // Dequantizing into the panel is exact, so the same kernel gives the same bits.
      assert.deepEqual(y.data, yDense.data, `forward vs dense, ${threads} thread(s)`);
      cpu.matmul4bitInputGrad(dy, w, dx);
      cpu.matmul(dy, dense, dxDense);
      assert.deepEqual(dx.data, dxDense.data, `input grad vs dense, ${threads} thread(s)`);
      results.push(
        Float32Array.from(y.data as Float32Array),
        Float32Array.from(dx.data as Float32Array),
      );
    }
    assert.deepEqual(results[2], results[0], 'forward: 1 vs 2 threads');
    assert.deepEqual(results[3], results[1], 'input grad: 1 vs 2 threads');
    for (const t of [dense, x, dy, y, yDense, dx, dxDense]) t.dispose();
    disposePacked4bit(w);
  } finally {
    cpu.threads = saved;
  }
});

test('cpu 4-bit ops reject mismatched shapes and arrays', () => {
  const q = quantize4bit(randn(64, 3), { blocksize: 32, doubleQuant: false });
  const w = uploadPacked4bit(cpu, q, 4, 16);
  assert.throws(
    () => cpu.matmul4bit(cpu.zeros([2, 15]), w, cpu.zeros([2, 4])),
    /must be \[n, 16\]/,
  );
  assert.throws(
    () => cpu.matmul4bit(cpu.zeros([2, 16]), w, cpu.zeros([2, 5])),
    /cpu\.matmul4bit: out has shape \[2, 5\], expected \[2, 4\]/,
  );
  assert.throws(
    () => cpu.matmul4bitInputGrad(cpu.zeros([2, 4]), w, cpu.zeros([3, 16])),
    /dx has shape \[3, 16\], expected \[2, 16\]/,
  );
  assert.throws(
    () => cpu.dequantize4bit(w, cpu.zeros([16, 4])),
    /out has shape \[16, 4\], expected \[4, 16\]/,
  );
  const bad: Packed4bitWeight = { ...w, absmax: cpu.zeros([1]) };
  assert.throws(
    () => cpu.dequantize4bit(bad, cpu.zeros([4, 16])),
    /cpu\.dequantize4bit: w\.absmax has 1 elements, expected 2/,
  );
  disposePacked4bit(w);
});
