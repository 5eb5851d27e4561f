// Frozen weights in a GGUF's own blocks on webgpu (issue 17.3, --quant keep): the fused
// dequant-GEMM kernels (forward y = x·Wᵀ, input gradient dx = dy·W; blocks decoded while the B
// tiles are staged) against the reference backend on random blocks of every format, odd M and N, K
// a whole number of 32- or 256-value blocks, n = 1 (decode) and more than one tile; dequantizeGgml
// bit for bit; weights split into binding windows (rows, and K windows that accumulate); both tile
// shapes; f16 tiles within the f16 bound; bad weights refused by name. Skips without an adapter (as
// every webgpu suite).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { type GgmlBackend, ggmlKernelsOf, hasGgmlKernels } from '../src/backends/capabilities.js';
import { gemmTuning } from '../src/backends/webgpu/kernels/matmul.js';
import { type GgmlQuantType, uploadGgml } from '../src/quant/ggml-blocks.js';
import { randomGgmlWeight } from './ggml-support.js';
import { webgpuBackend } from './backends-under-test.js';
import { randn } from './util.js';

const gpu = await webgpuBackend();
const ref = ggmlKernelsOf(await getBackend('ref'));

const cases: { type: GgmlQuantType; rows: number; cols: number; ns: number[] }[] = [
  { type: 'q4_0', rows: 37, cols: 96, ns: [1, 7] },
  { type: 'q8_0', rows: 45, cols: 160, ns: [1, 67] }, // M over one 64-row tile
  { type: 'q4_k', rows: 19, cols: 256, ns: [1, 7] },
  { type: 'q4_k', rows: 71, cols: 512, ns: [5] }, // N over one tile (forward), K odd (input grad)
  { type: 'q5_k', rows: 33, cols: 768, ns: [3] },
  { type: 'q6_k', rows: 21, cols: 512, ns: [1, 9] },
];

const gamma = (n: number, u = 2 ** -24) => (n * u) / (1 - n * u);

/**
 * Runs both products of `c` on `be` and ref and checks every output against the error bound of a
 * K-term f32 dot product in any order: γ(K+1)·(Σ|x·w| + |β·c|). With f16 tiles each product also
 * carries the rounding of both operands and of itself to f16 (3u + 3u², u = 2^-11) and an absolute
 * 2^-24 per term for f16 subnormals.
 */
async function checkProducts(
  be: GgmlBackend,
  c: { type: GgmlQuantType; rows: number; cols: number; ns: number[] },
  seed: number,
  f16 = false,
): Promise<void> {
  const host = randomGgmlWeight(c.type, c.rows, c.cols, seed++);
  const w = uploadGgml(be, host);
  const wRef = uploadGgml(ref, host);
  const denseRef = ref.zeros([c.rows, c.cols], 'f64');
  ref.dequantizeGgml(wRef, denseRef);
  const W = await denseRef.read();
  try {
    for (const inputGrad of [false, true]) {
      const K = inputGrad ? c.rows : c.cols;
      const N = inputGrad ? c.cols : c.rows;
      const wAt = inputGrad
        ? (k: number, j: number) => W[k * c.cols + j]!
        : (k: number, j: number) => W[j * c.cols + k]!;
      for (const n of c.ns) {
        for (const beta of [0, 0.5]) {
          const x = Float32Array.from(randn(n * K, seed++));
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
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < N; j++) {
              let S = 0;
              for (let k = 0; k < K; k++) S += Math.abs(x[i * K + k]! * wAt(k, j));
              const bc = beta === 0 ? 0 : Math.abs(beta * Math.fround(init[i * N + j]!));
              const u = 2 ** -11;
              const bound =
                gamma(K + 1) * (S + bc) + (f16 ? (3 * u + 3 * u * u) * S + K * 2 ** -24 : 1e-30);
              const err = Math.abs(got[i * N + j]! - want[i * N + j]!);
              if (!(err <= bound))
                assert.fail(
                  `${c.type} [${c.rows}, ${c.cols}] ${f16 ? 'f16' : 'f32'} ${inputGrad ? 'inputGrad' : 'forward'} n=${n} beta=${beta} (${i}, ${j}): |${got[i * N + j]} − ${want[i * N + j]}| = ${err} > ${bound}`,
                );
            }
          }
          for (const t of [xt, out, xr, outR]) t.dispose();
        }
      }
    }
  } finally {
    w.blocks.dispose();
    wRef.blocks.dispose();
    denseRef.dispose();
  }
}

test(
  'webgpu has the GGUF-block kernels (the capability --quant keep asks for)',
  { skip: !gpu },
  () => {
    assert.ok(hasGgmlKernels(gpu!));
  },
);

test(
  'webgpu GGUF-block dequantize equals the reference bit for bit; both fused products match ref within the f32 dot-product bound',
  { skip: !gpu },
  async () => {
    const be = ggmlKernelsOf(gpu!);
    let seed = 11;
    for (const c of cases) {
      const host = randomGgmlWeight(c.type, c.rows, c.cols, 1000 + seed);
      const w = uploadGgml(be, host);
      const wRef = uploadGgml(ref, host);
      const dense = be.zeros([c.rows, c.cols]);
      be.dequantizeGgml(w, dense);
      const denseRef = ref.zeros([c.rows, c.cols], 'f64');
      ref.dequantizeGgml(wRef, denseRef);
      assert.deepEqual(
        Float64Array.from(await dense.read()),
        await denseRef.read(),
        `${c.type} dequantize`,
      );
      for (const t of [dense, denseRef, w.blocks, wRef.blocks]) t.dispose();
      await checkProducts(be, c, seed);
      seed += 100;
    }
  },
);

test(
  'webgpu GGUF-block kernels split weights larger than one binding into windows (whole rows; K windows accumulate)',
  { skip: !gpu },
  async () => {
    const be = ggmlKernelsOf(gpu!);
    const saved = { ...gemmTuning };
    // 2 KiB bindings: a Q4_K row is 288 bytes, so a few rows per window; A and C split too.
    gemmTuning.maxBindingBytes = 2048;
    try {
      for (const c of [
        { type: 'q4_k' as const, rows: 23, cols: 512, ns: [5] },
        { type: 'q4_0' as const, rows: 29, cols: 64, ns: [3] },
      ]) {
        await checkProducts(be, c, 77);
        const host = randomGgmlWeight(c.type, c.rows, c.cols, 78);
        const w = uploadGgml(be, host);
        const wRef = uploadGgml(ref, host);
        const dense = be.zeros([c.rows, c.cols]);
        be.dequantizeGgml(w, dense);
        const denseRef = ref.zeros([c.rows, c.cols], 'f64');
        ref.dequantizeGgml(wRef, denseRef);
        assert.deepEqual(Float64Array.from(await dense.read()), await denseRef.read());
        for (const t of [dense, denseRef, w.blocks, wRef.blocks]) t.dispose();
      }
    } finally {
      Object.assign(gemmTuning, saved);
    }
  },
);

test(
  'webgpu GGUF-block products on the 128×128 tile (big products) match ref too',
  { skip: !gpu },
  async () => {
    const be = ggmlKernelsOf(gpu!);
    const saved = { ...gemmTuning };
    gemmTuning.tile = 'large';
    try {
      await checkProducts(be, { type: 'q5_k', rows: 131, cols: 256, ns: [9] }, 91);
      await checkProducts(be, { type: 'q4_0', rows: 29, cols: 160, ns: [130] }, 92);
    } finally {
      Object.assign(gemmTuning, saved);
    }
  },
);

test(
  'webgpu computeDtype f16: the GGUF-block products on f16 tiles stay within the f16 bound of ref',
  { skip: !gpu },
  async (t) => {
    if (!(gpu as unknown as { hasF16: boolean }).hasF16) {
      t.skip('this adapter has no shader-f16');
      return;
    }
    const { createWebGpuBackend } = await import('../src/backends/webgpu/index.js');
    const half = await createWebGpuBackend({ computeDtype: 'f16' });
    try {
      await checkProducts(half, { type: 'q4_k', rows: 19, cols: 256, ns: [7] }, 5, true);
      await checkProducts(half, { type: 'q8_0', rows: 13, cols: 64, ns: [3] }, 6, true);
    } finally {
      half.ctx.device.destroy();
    }
  },
);

test('webgpu refuses bad GGUF-block weights by name before any kernel runs', { skip: !gpu }, () => {
  const be = ggmlKernelsOf(gpu!);
  const host = randomGgmlWeight('q4_k', 2, 256, 1);
  const w = uploadGgml(be, host);
  const x = be.zeros([3, 256]);
  const y = be.zeros([3, 2]);
  try {
    assert.throws(
      () => be.matmulGgml(x, { ...w, cols: 128 }, y),
      /webgpu\.matmulGgml: Q4_K rows of 128 values are not whole 256-value blocks/,
    );
    assert.throws(
      () => be.matmulGgml(x, { ...w, rows: 3 }, y),
      /webgpu\.matmulGgml: w\.blocks has 288 elements, expected 432/,
    );
    assert.throws(
      () => be.matmulGgmlInputGrad(y, w, be.zeros([3, 255])),
      /webgpu\.matmulGgmlInputGrad: dx has shape \[3, 255\], expected \[3, 256\]/,
    );
    assert.throws(
      () => be.dequantizeGgml(w, be.zeros([2, 255])),
      /webgpu\.dequantizeGgml: out has shape \[2, 255\], expected \[2, 256\]/,
    );
  } finally {
    for (const t of [w.blocks, x, y]) t.dispose();
  }
});
