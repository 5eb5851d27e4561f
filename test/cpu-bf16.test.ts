// cpu bf16 compute (issue 17.1): the frozen-base 4-bit matmuls with activations and dequantized
// weights rounded to bf16 and fp32 accumulation (vdpbf16ps), against the float64 reference.
//
// Tolerance, from the arithmetic. Let u = 2⁻⁸ (bf16's unit roundoff: 8 significant bits, round to
// nearest even) and S = Σ_k |x_k|·|w_k| (w the fp32 dequantized weight). Each product x̂·ŵ of the
// rounded operands is x·w·(1+δ₁)(1+δ₂) with |δᵢ| ≤ u, and a bf16×bf16 product is exact in fp32; the
// K products and beta·c are then summed in fp32, each addition rounding with relative error ≤ 2⁻²⁴.
// So  |y − y_ref| ≤ (2u + u²)·S + γ_{K+1}·(S + |beta·c|),  γ_n = n·2⁻²⁴ / (1 − n·2⁻²⁴).
// A second, tighter check isolates the accumulation: against the ref backend's bf16 reference (the
// float64 product of the operands rounded to bf16: round to nearest even, denormals to zero, as
// vcvtne2ps2bf16 does; src/backends/ref/bf16.ts), only the γ term remains.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend, resolveBackend, withComputeDtype } from '../src/backends/index.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import { bf16Available } from '../src/backends/cpu/native.js';
import { roundBf16 } from '../src/backends/ref/bf16.js';
import { matmul as refMatmul } from '../src/backends/ref/matmul.js';
import {
  matmul4bit as refMatmul4bit,
  matmul4bitInputGrad as refMatmul4bitInputGrad,
} from '../src/backends/ref/quant4bit.js';
import { f32ToBF16 } from '../src/io/half.js';
import { buildLlama, type BuildConfig } from '../src/models/build.js';
import { syntheticSource } from '../src/models/synthetic.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { disposePacked4bit, quantize4bit, uploadPacked4bit } from '../src/quant/index.js';
import type { QuantType4bit } from '../src/quant/index.js';
import { randn } from './util.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cpu = (await getBackend('cpu')) as CpuBackend;
const ref = await getBackend('ref');
const hasBf16 = bf16Available();
const skip = hasBf16
  ? false
  : `this CPU or addon build has no AVX512_BF16 (addon ${cpu.simd}): bf16 compute is unavailable here`;

const U = 2 ** -8;
const gamma = (n: number) => (n * 2 ** -24) / (1 - n * 2 ** -24);

interface Case {
  rows: number;
  cols: number;
  quantType: QuantType4bit;
  blocksize: number;
  doubleQuant: boolean;
}

const cases: Case[] = [
  // Vector packers (cols % 16 == 0, power-of-two blocks ≥ 16).
  { rows: 48, cols: 64, quantType: 'nf4', blocksize: 64, doubleQuant: true },
  { rows: 70, cols: 96, quantType: 'fp4', blocksize: 32, doubleQuant: false },
  { rows: 33, cols: 176, quantType: 'nf4', blocksize: 32, doubleQuant: true }, // K % 32 == 16
  { rows: 41, cols: 800, quantType: 'fp4', blocksize: 256, doubleQuant: true }, // forward K over one K block
  { rows: 787, cols: 48, quantType: 'nf4', blocksize: 64, doubleQuant: true }, // input-grad K odd, over one block
  // Scalar packers: odd columns, blocks straddling rows.
  { rows: 7, cols: 9, quantType: 'nf4', blocksize: 32, doubleQuant: true },
  { rows: 19, cols: 45, quantType: 'fp4', blocksize: 64, doubleQuant: false },
  { rows: 1, cols: 1, quantType: 'nf4', blocksize: 64, doubleQuant: false },
  { rows: 29, cols: 50, quantType: 'nf4', blocksize: 128, doubleQuant: true },
];

test(
  'bf16 4-bit matmul and input gradient match ref within the bf16 bound, and the bf16-rounded product within fp32 accumulation (NF4/FP4, double quant, odd shapes)',
  { skip },
  () => {
    const be = cpu.withComputeDtype('bf16');
    assert.equal(be.computeDtype, 'bf16');
    let seed = 5;
    let worstBound = 0; // largest |err| / bound over everything (must stay ≤ 1)
    let worstRel = 0; // largest |err| / S: shows bf16 rounding really happened (≫ fp32's 2⁻²⁴)
    for (const c of cases) {
      const q = quantize4bit(randn(c.rows * c.cols, seed++, 0.3), c);
      const w = uploadPacked4bit(be, q, c.rows, c.cols);
      const wRef = uploadPacked4bit(ref, q, c.rows, c.cols);
      // The fp32 dequantized weight exactly as the panels compute it (code · block scale in f32).
      const dense = cpu.zeros([c.rows, c.cols]);
      cpu.dequantize4bit(w, dense);
      const W = Float64Array.from(dense.data);
      dense.dispose();
      for (const inputGrad of [false, true]) {
        const K = inputGrad ? c.rows : c.cols;
        const N = inputGrad ? c.cols : c.rows;
        // W element for output column j and reduction index k.
        const wAt = inputGrad
          ? (k: number, j: number) => W[k * c.cols + j]!
          : (k: number, j: number) => W[j * c.cols + k]!;
        for (const n of [1, 15, 45]) {
          for (const beta of [0, 0.5]) {
            const x = randn(n * K, seed++);
            const init = beta === 0 ? new Float64Array(n * N).fill(NaN) : randn(n * N, seed++);
            const xt = be.fromArray(x, [n, K]);
            const out = be.fromArray(init, [n, N]);
            const xr = ref.fromArray(x, [n, K]);
            const outR = ref.fromArray(init, [n, N]);
            const outRB = ref.fromArray(init, [n, N]); // ref's bf16 reference
            if (inputGrad) {
              be.matmul4bitInputGrad(xt, w, out, beta);
              ref.matmul4bitInputGrad(xr, wRef, outR, beta);
              refMatmul4bitInputGrad(xr, wRef, outRB, beta, true);
            } else {
              be.matmul4bit(xt, w, out, beta);
              ref.matmul4bit(xr, wRef, outR, beta);
              refMatmul4bit(xr, wRef, outRB, beta, true);
            }
            const got = out.data;
            const want = outR.data;
            const xf = Float32Array.from(x);
            for (let i = 0; i < n; i++) {
              for (let j = 0; j < N; j++) {
                let s = 0;
                for (let k = 0; k < K; k++) s += Math.abs(xf[i * K + k]! * wAt(k, j));
                const cTerm = beta === 0 ? 0 : Math.abs(beta * Math.fround(init[i * N + j]!));
                const rounded = outRB.data[i * N + j]!;
                const g = got[i * N + j]!;
                const where = `${inputGrad ? 'inputGrad' : 'matmul4bit'} n=${n} beta=${beta} [${i},${j}] ${JSON.stringify(c)}`;
                const acc = gamma(K + 1) * (s + cTerm) + 1e-30;
                const errRounded = Math.abs(g - rounded);
                assert.ok(
                  errRounded <= acc,
                  `${where}: ${g} vs bf16-rounded product ${rounded} (|err| ${errRounded} > ${acc})`,
                );
                const bound = (2 * U + U * U) * s + acc;
                const err = Math.abs(g - want[i * N + j]!);
                assert.ok(
                  err <= bound,
                  `${where}: ${g} vs ref ${want[i * N + j]} (|err| ${err} > bound ${bound})`,
                );
                worstBound = Math.max(worstBound, err / bound);
                if (s > 0) worstRel = Math.max(worstRel, err / s);
              }
            }
            for (const t of [xt, out, xr, outR, outRB]) t.dispose();
          }
        }
      }
      disposePacked4bit(w);
      disposePacked4bit(wRef);
    }
    console.log(
      `# bf16 4-bit matmul: worst |err|/bound ${worstBound.toFixed(3)}, worst |err|/S ${worstRel.toExponential(2)} (u = 2^-8 = ${U.toExponential(2)})`,
    );
    // fp32 compute would stay near 2⁻²⁴·K·S; bf16 rounding shows up at the 2⁻¹⁰..2⁻⁸ level.
    assert.ok(worstRel > 2 ** -12, `errors of at most ${worstRel}·S: the bf16 path did not round`);
  },
);

test(
  'bf16 twin: a frozen dense weight (frozenB: lm_head, unquantized base) computes in bf16 within the same bound; every other matmul stays f32 bit for bit',
  { skip },
  () => {
    const be = cpu.withComputeDtype('bf16');
    let seed = 301;
    let worstRel = 0;
    for (const [M, N, K] of [
      [1, 33, 17],
      [13, 70, 96],
      [37, 45, 801],
      [29, 1030, 63],
    ] as const) {
      for (const transB of [true, false]) {
        for (const beta of [0, 0.5]) {
          const a = randn(M * K, seed++);
          const b = randn(K * N, seed++, 0.1);
          const init = beta === 0 ? new Float64Array(M * N).fill(NaN) : randn(M * N, seed++);
          const bShape = transB ? [N, K] : [K, N];
          const at = be.fromArray(a, [M, K]);
          const bt = be.fromArray(b, bShape);
          const out = be.fromArray(init, [M, N]);
          be.matmul(at, bt, out, { transB, beta, frozenB: true });
          const got = Float32Array.from(out.data as Float32Array);
          // ref's bf16 reference (operands rounded to bf16, float64 sums, beta·out added).
          const want = ref.fromArray(init, [M, N]);
          refMatmul(
            ref.fromArray(a, [M, K]),
            ref.fromArray(b, bShape),
            want,
            { transB, beta, frozenB: true },
            true,
          );
          // Without frozenB (LoRA factors, attention, activations) the twin is the f32 kernel exactly.
          const plain = be.fromArray(init, [M, N]);
          const plainF32 = cpu.fromArray(init, [M, N]);
          be.matmul(at, bt, plain, { transB, beta });
          cpu.matmul(at, bt, plainF32, { transB, beta });
          assert.deepEqual(
            plain.data,
            plainF32.data,
            `non-frozen matmul ${M}x${N}x${K} differs from f32`,
          );
          const af = Float32Array.from(a);
          const bf = Float32Array.from(b);
          for (let i = 0; i < M; i++) {
            for (let j = 0; j < N; j++) {
              let s = 0;
              let exact = 0;
              for (let k = 0; k < K; k++) {
                const x = af[i * K + k]!;
                const w = transB ? bf[j * K + k]! : bf[k * N + j]!;
                s += Math.abs(x * w);
                exact += x * w;
              }
              const c = beta === 0 ? 0 : beta * Math.fround(init[i * N + j]!);
              const acc = gamma(K + 1) * (s + Math.abs(c)) + 1e-30;
              const g = got[i * N + j]!;
              const rounded = want.data[i * N + j]!;
              const where = `frozen matmul M=${M} N=${N} K=${K} transB=${transB} beta=${beta} [${i},${j}]`;
              assert.ok(
                Math.abs(g - rounded) <= acc,
                `${where}: ${g} vs ref bf16 reference ${rounded}`,
              );
              assert.ok(
                Math.abs(g - (exact + c)) <= (2 * U + U * U) * s + acc,
                `${where}: ${g} vs exact ${exact + c}`,
              );
              if (s > 0) worstRel = Math.max(worstRel, Math.abs(g - (exact + c)) / s);
            }
          }
          for (const t of [at, bt, out, plain, plainF32, want]) t.dispose();
        }
      }
    }
    assert.ok(worstRel > 2 ** -12, `errors of at most ${worstRel}·S: the bf16 path did not round`);
  },
);

test('bf16 results do not depend on the thread count', { skip }, () => {
  const be = cpu.withComputeDtype('bf16');
  const saved = cpu.threads;
  try {
    const rows = 300;
    const cols = 768;
    const n = 130;
    const q = quantize4bit(randn(rows * cols, 21, 0.05), {
      quantType: 'nf4',
      blocksize: 64,
      doubleQuant: true,
    });
    const w = uploadPacked4bit(be, q, rows, cols);
    const x = be.fromArray(randn(n * cols, 22), [n, cols]);
    const dy = be.fromArray(randn(n * rows, 23), [n, rows]);
    const y = be.zeros([n, rows]);
    const dx = be.zeros([n, cols]);
    const runs: Float32Array[][] = [];
    for (const threads of [1, 2]) {
      cpu.threads = threads;
      be.matmul4bit(x, w, y);
      be.matmul4bitInputGrad(dy, w, dx);
      runs.push([
        Float32Array.from(y.data as Float32Array),
        Float32Array.from(dx.data as Float32Array),
      ]);
    }
    assert.deepEqual(runs[1]![0], runs[0]![0], 'forward: 1 vs 2 threads');
    assert.deepEqual(runs[1]![1], runs[0]![1], 'input grad: 1 vs 2 threads');
    for (const t of [x, dy, y, dx]) t.dispose();
    disposePacked4bit(w);
  } finally {
    cpu.threads = saved;
  }
});

test('compute dtype is a backend capability: f32 by default, bf16 first where the CPU has it, named in describe()', async () => {
  assert.equal(cpu.computeDtype, 'f32', 'getBackend(cpu) keeps the exact-parity f32 path');
  assert.match(cpu.describe(), /compute f32/);
  assert.equal((await resolveBackend('cpu')).computeDtype, 'f32');
  assert.deepEqual(cpu.computeDtypes, hasBf16 ? ['bf16', 'f32'] : ['f32']);
  const auto = await resolveBackend('cpu', { computeDtype: 'auto' });
  assert.equal(auto.computeDtype, hasBf16 ? 'bf16' : 'f32');
  if (hasBf16) {
    const b = await resolveBackend('cpu', { computeDtype: 'bf16' });
    assert.equal(b, auto, 'one bf16 twin');
    assert.match(b.describe!(), /compute bf16/);
    assert.equal(withComputeDtype(b, 'f32'), cpu, 'and back to the same f32 instance');
  }
  // ref has no bf16: refused with the reason, naming the backend.
  assert.throws(
    () => withComputeDtype(ref, 'bf16'),
    /--compute-dtype bf16 needs .*AVX512_BF16.*'ref'.* computes in f32/,
  );
});

test('without AVX512_BF16 (QLORA_NO_BF16 hides it) auto falls back to f32 and bf16 is refused with the reason', () => {
  const script = `
    const { resolveBackend } = await import(${JSON.stringify(path.join(root, 'src/backends/index.ts'))});
    const auto = await resolveBackend('cpu', { computeDtype: 'auto' });
    console.log('auto=' + auto.computeDtype);
    try { await resolveBackend('cpu', { computeDtype: 'bf16' }); console.log('bf16=accepted'); }
    catch (e) { console.log('bf16=refused: ' + e.message); }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, QLORA_NO_BF16: '1' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /auto=f32/);
  assert.match(
    r.stdout,
    /bf16=refused: --compute-dtype bf16 needs .*AVX512_BF16.*'cpu'.*computes in f32/,
  );
});

test('ref bf16 reference: roundBf16 rounds an fp32 value to nearest even, flushes denormals, keeps Inf and NaN', () => {
  const one = 1;
  const ulp = 2 ** -7; // bf16 spacing at 1
  assert.equal(roundBf16(one + ulp / 2), one, 'tie to even (down)');
  assert.equal(roundBf16(one + (3 * ulp) / 2), one + 2 * ulp, 'tie to even (up)');
  assert.equal(roundBf16(one + ulp / 2 + 2 ** -20), one + ulp, 'above the tie rounds up');
  assert.equal(roundBf16(-(one + ulp / 4)), -one);
  assert.equal(roundBf16(2 ** -140), 0, 'fp32 denormal flushes to zero');
  assert.ok(Object.is(roundBf16(-(2 ** -140)), -0), '… keeping its sign');
  assert.equal(roundBf16(Infinity), Infinity);
  assert.ok(Number.isNaN(roundBf16(NaN)));
  assert.equal(roundBf16(3.4e38), Infinity, 'rounds past the largest bf16 to Inf');
  // Normal values agree with the bf16 encoder the file writers use (src/io/half.ts).
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (const v of randn(2000, 77, 100)) {
    u[0] = f32ToBF16(v) << 16;
    assert.equal(roundBf16(v), f[0], `${v}`);
  }
});

/** One tensor's values on the ref backend (the reference reads plain arrays). */
function onRef(t: Tensor): Tensor {
  return ref.fromArray(Float64Array.from(t.data as Float32Array), t.shape);
}

test(
  'lm_head in bf16: the tied embedding, an untied f32 head and a 4-bit head compute logits and their input gradient as the ref bf16 reference; the f32 model keeps f32',
  { skip },
  async () => {
    const base: BuildConfig = {
      vocabSize: 203,
      hiddenSize: 80,
      intermediateSize: 96,
      numLayers: 1,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 20,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: 64,
      tieWordEmbeddings: true,
      attentionBias: false,
    };
    const quantization = { quantType: 'nf4' as const, blocksize: 64, doubleQuant: true };
    const heads = [
      { name: 'tied embedding', config: base, quantizeHead: false },
      {
        name: 'untied f32 head',
        config: { ...base, tieWordEmbeddings: false },
        quantizeHead: false,
      },
      { name: '4-bit head', config: { ...base, tieWordEmbeddings: false }, quantizeHead: true },
    ];
    let seed = 900;
    for (const h of heads) {
      for (const dtype of ['bf16', 'f32'] as const) {
        const be = cpu.withComputeDtype(dtype);
        const model = await buildLlama(h.config, syntheticSource(h.config, 5), {
          backend: be,
          quantization,
          quantizeHead: h.quantizeHead,
        });
        if (h.name === 'tied embedding') assert.ok(model.tiedEmbeddings);
        const head = model.lmHead;
        const V = head.outFeatures;
        const d = head.inFeatures;
        const W = head.dequantize(); // [V, d], the fp32 values the panels round from
        const Wr = onRef(W);
        const n = 37;
        // The loss chunk's products: logits = x·Wᵀ, then dx (+)= dlogits·W.
        for (const [what, K, N, bShape, transB, accumulate] of [
          ['logits', d, V, [V, d], true, false],
          ['input grad', V, d, [V, d], false, false],
          ['input grad, accumulated', V, d, [V, d], false, true],
        ] as const) {
          const x = be.fromArray(randn(n * K, seed++), [n, K]);
          const init = accumulate ? randn(n * N, seed++) : new Float64Array(n * N).fill(NaN);
          const out = be.fromArray(init, [n, N]);
          if (transB) head.forward(x, out);
          else head.inputGrad(x, out, accumulate);
          const beta = accumulate ? 1 : 0;
          const want = ref.fromArray(init, [n, N]);
          refMatmul(onRef(x), Wr, want, { transB, beta, frozenB: true }, dtype === 'bf16');
          const X = Float64Array.from(x.data as Float32Array);
          const Wd = Float64Array.from(W.data as Float32Array);
          assert.deepEqual(W.shape, bShape);
          let worstRel = 0;
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < N; j++) {
              let s = 0;
              let exact = 0;
              for (let k = 0; k < K; k++) {
                const p = X[i * K + k]! * (transB ? Wd[j * d + k]! : Wd[k * d + j]!);
                s += Math.abs(p);
                exact += p;
              }
              const c = accumulate ? Math.fround(init[i * N + j]!) : 0;
              const g = out.data[i * N + j]!;
              const acc = gamma(K + 1) * (s + Math.abs(c)) + 1e-30;
              assert.ok(
                Math.abs(g - want.data[i * N + j]!) <= acc,
                `${h.name} ${dtype} ${what} [${i},${j}]: ${g} vs ref ${dtype} reference ${want.data[i * N + j]}`,
              );
              if (s > 0) worstRel = Math.max(worstRel, Math.abs(g - (exact + c)) / s);
            }
          }
          // f32: `want` is the exact product, so the bound above already holds it to fp32
          // accuracy; bf16: the rounding must show, far above fp32's 2⁻²⁴ level.
          if (dtype === 'bf16') {
            assert.ok(worstRel > 2 ** -12, `${h.name} ${what}: |err| ≤ ${worstRel}·S: not bf16`);
          }
          for (const t of [x, out]) t.dispose();
        }
        W.dispose();
        model.dispose();
      }
    }
  },
);
