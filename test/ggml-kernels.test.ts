// Frozen weights in a GGUF's own blocks (issue 17.3, --quant keep): the cpu addon's fused
// dequant-GEMM kernels (forward y = x·Wᵀ, input gradient dx = dy·W) against the reference backend
// on random blocks and odd shapes (K a whole number of 32- or 256-value blocks, odd M and N), in
// f32 and, where the CPU has AVX512_BF16, in bf16 within the bound derived in cpu-bf16.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import { bf16Available } from '../src/backends/cpu/native.js';
import { ggmlKernelsOf } from '../src/backends/capabilities.js';
import { type GgmlQuantType, uploadGgml } from '../src/quant/ggml-blocks.js';
import { randomGgmlWeight } from './ggml-support.js';
import { randn } from './util.js';

const cpu = (await getBackend('cpu')) as CpuBackend;
const ref = ggmlKernelsOf(await getBackend('ref'));

const cases: { type: GgmlQuantType; rows: number; cols: number }[] = [
  { type: 'q4_0', rows: 37, cols: 96 },
  { type: 'q8_0', rows: 3, cols: 32 },
  { type: 'q8_0', rows: 45, cols: 800 }, // forward K over two K blocks
  { type: 'q4_k', rows: 19, cols: 256 },
  { type: 'q4_k', rows: 401, cols: 512 }, // input-grad K odd, over one K block
  { type: 'q5_k', rows: 33, cols: 768 },
  { type: 'q6_k', rows: 21, cols: 512 },
];

const U = 2 ** -8;
const gamma = (n: number) => (n * 2 ** -24) / (1 - n * 2 ** -24);

test('cpu GGUF-block dequantize equals the reference bit for bit; matmuls match ref in f32 and within the bf16 bound', async () => {
  let seed = 11;
  for (const c of cases) {
    const host = randomGgmlWeight(c.type, c.rows, c.cols, seed++);
    const w = uploadGgml(cpu, host);
    const wRef = uploadGgml(ref, host);
    const dense = cpu.zeros([c.rows, c.cols]);
    cpu.dequantizeGgml(w, dense);
    const denseRef = ref.zeros([c.rows, c.cols], 'f64');
    ref.dequantizeGgml(wRef, denseRef);
    const W = Float64Array.from(await dense.read());
    assert.deepEqual(W, await denseRef.read(), `${c.type} dequantize`);
    dense.dispose();
    const twins = bf16Available() ? [cpu, cpu.withComputeDtype('bf16')] : [cpu];
    for (const be of twins) {
      for (const inputGrad of [false, true]) {
        const K = inputGrad ? c.rows : c.cols;
        const N = inputGrad ? c.cols : c.rows;
        const wAt = inputGrad
          ? (k: number, j: number) => W[k * c.cols + j]!
          : (k: number, j: number) => W[j * c.cols + k]!;
        for (const n of [1, 7]) {
          for (const beta of [0, 0.5]) {
            const x = randn(n * K, seed++);
            const init = beta === 0 ? new Float64Array(n * N).fill(NaN) : randn(n * N, seed++);
            const xt = be.fromArray(x, [n, K]);
            const out = be.fromArray(init, [n, N]);
            const xr = ref.fromArray(x, [n, K], 'f64');
            const outR = ref.fromArray(init, [n, N], 'f64');
            if (inputGrad) {
              be.matmulGgmlInputGrad(xt, w, out, beta);
              ref.matmulGgmlInputGrad(xr, wRef, outR, beta);
            } else {
              be.matmulGgml(xt, w, out, beta);
              ref.matmulGgml(xr, wRef, outR, beta);
            }
            const got = await out.read();
            const want = await outR.read();
            const xs = Float32Array.from(x);
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < N; j++) {
                let S = 0;
                for (let k = 0; k < K; k++) S += Math.abs(xs[i * K + k]! * wAt(k, j));
                const bc = beta === 0 ? 0 : Math.abs(beta * Math.fround(init[i * N + j]!));
                const bound =
                  be.computeDtype === 'bf16'
                    ? (2 * U + U * U) * S + gamma(K + 1) * (S + bc)
                    : gamma(K + 1) * (S + bc) + 1e-30;
                const err = Math.abs(got[i * N + j]! - want[i * N + j]!);
                if (!(err <= bound))
                  assert.fail(
                    `${c.type} [${c.rows}, ${c.cols}] ${be.computeDtype} ${inputGrad ? 'inputGrad' : 'forward'} n=${n} beta=${beta} (${i}, ${j}): |${got[i * N + j]} − ${want[i * N + j]}| = ${err} > ${bound}`,
                  );
              }
            }
            for (const t of [xt, out, xr, outR]) t.dispose();
          }
        }
      }
    }
    w.blocks.dispose();
    wRef.blocks.dispose();
    denseRef.dispose();
  }
});

test('bad GGUF-block weights are refused by name before any kernel runs', () => {
  const host = randomGgmlWeight('q4_k', 2, 256, 1);
  const w = uploadGgml(cpu, host);
  const x = cpu.zeros([3, 256]);
  const y = cpu.zeros([3, 2]);
  assert.throws(
    () => cpu.matmulGgml(x, { ...w, cols: 128 }, y),
    /cpu\.matmulGgml: Q4_K rows of 128 values are not whole 256-value blocks/,
  );
  assert.throws(
    () => cpu.matmulGgml(x, { ...w, rows: 3 }, y),
    /cpu\.matmulGgml: w\.blocks has 288 elements, expected 432/,
  );
  assert.throws(
    () => cpu.matmulGgml(x, { ...w, type: 'q3_k' as GgmlQuantType }, y),
    /unknown GGUF block type 'q3_k'/,
  );
  assert.throws(
    () => cpu.matmulGgmlInputGrad(y, w, cpu.zeros([3, 255])),
    /cpu\.matmulGgmlInputGrad: dx has shape \[3, 255\], expected \[3, 256\]/,
  );
  assert.throws(
    () => uploadGgml(cpu, { ...host, blocks: host.blocks.subarray(1) }),
    /Q4_K \[2, 256\] needs 288 bytes, got 287/,
  );
  for (const t of [w.blocks, x, y]) t.dispose();
});
