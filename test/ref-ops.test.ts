// Reference-backend forward values against hand calculations on small cases.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { ropeTables } from '../src/backends/rope-tables.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';
import { disposePacked4bit, uploadPacked4bit } from '../src/quant/upload.js';
import { uniformAt } from '../src/tensor/rng.js';
import { assertClose, randn } from './util.js';

const be = await getBackend('ref');
const f64 = (v: ArrayLike<number>, shape: number[]) => be.fromArray(v, shape, 'f64');
const i32 = (v: ArrayLike<number>, shape: number[]) => be.fromArray(v, shape, 'i32');

test('matmul: hand-computed products, transposes, alpha/beta, NaN ignored when beta = 0', () => {
  const a = f64([1, 2, 3, 4, 5, 6], [2, 3]); // [[1,2,3],[4,5,6]]
  const b = f64([7, 8, 9, 10, 11, 12], [3, 2]); // [[7,8],[9,10],[11,12]]
  const out = f64([NaN, NaN, NaN, NaN], [2, 2]);
  be.matmul(a, b, out);
  assert.deepEqual(Array.from(out.data), [58, 64, 139, 154]);
  const aT = f64([1, 4, 2, 5, 3, 6], [3, 2]);
  const bT = f64([7, 9, 11, 8, 10, 12], [2, 3]);
  for (const [x, y, transA, transB] of [
    [aT, b, true, false],
    [a, bT, false, true],
    [aT, bT, true, true],
  ] as const) {
    const o = be.zeros([2, 2], 'f64');
    be.matmul(x, y, o, { transA, transB });
    assert.deepEqual(Array.from(o.data), [58, 64, 139, 154], `transA=${transA} transB=${transB}`);
  }
  const acc = f64([1, 1, 1, 1], [2, 2]);
  be.matmul(a, b, acc, { alpha: 2, beta: -1 });
  assert.deepEqual(Array.from(acc.data), [115, 127, 277, 307]);
  // Batched a with a shared 2-D b, and with a batched b.
  const a3 = f64([1, 0, 0, 1, 2, 0, 0, 2], [2, 2, 2]);
  const shared = f64([1, 2, 3, 4], [2, 2]);
  const o3 = be.zeros([2, 2, 2], 'f64');
  be.matmul(a3, shared, o3);
  assert.deepEqual(Array.from(o3.data), [1, 2, 3, 4, 2, 4, 6, 8]);
  const b3 = f64([1, 2, 3, 4, 0, 1, 1, 0], [2, 2, 2]);
  be.matmul(a3, b3, o3);
  assert.deepEqual(Array.from(o3.data), [1, 2, 3, 4, 0, 2, 2, 0]);
  assert.throws(() => be.matmul(a, a, out), /inner dimensions/);
  assert.throws(() => be.matmul(a, b, be.zeros([2, 2], 'f32')), /f32/);
  assert.throws(() => be.matmul(a3, f64(new Array(12).fill(0), [3, 2, 2]), o3), /batch/);
});

test('matmul4bit and its input gradient equal dense matmuls with the dequantized weight', () => {
  const [rows, cols, n] = [5, 37, 3];
  const q = quantize4bit(randn(rows * cols, 1), { blocksize: 32 });
  const w = uploadPacked4bit(be, q, rows, cols);
  const dense = be.zeros([rows, cols], 'f64');
  be.dequantize4bit(w, dense);
  const x = f64(randn(n * cols, 2), [n, cols]);
  const y = f64(new Array(n * rows).fill(NaN), [n, rows]);
  be.matmul4bit(x, w, y);
  const yRef = be.zeros([n, rows], 'f64');
  be.matmul(x, dense, yRef, { transB: true });
  assertClose(y.data, yRef.data, { atol: 1e-12, rtol: 1e-12 });
  const prev = Array.from(y.data);
  be.matmul4bit(x, w, y, 0.5);
  assertClose(
    y.data,
    Array.from(yRef.data, (v, i) => v + 0.5 * prev[i]!),
    { atol: 1e-12, rtol: 1e-12 },
  );
  const dy = f64(randn(n * rows, 3), [n, rows]);
  const dx = be.zeros([n, cols], 'f64');
  be.matmul4bitInputGrad(dy, w, dx);
  const dxRef = be.zeros([n, cols], 'f64');
  be.matmul(dy, dense, dxRef);
  assertClose(dx.data, dxRef.data, { atol: 1e-12, rtol: 1e-12 });
  assert.throws(
    () => be.matmul4bit(f64([1, 2], [1, 2]), w, y),
    /ref\.matmul4bit: x \[1, 2\] must be \[n, \d+\]/,
  );
  disposePacked4bit(w);
});

test('fill, copy, add, scale, axpy, sumOfSquares', () => {
  const x = f64([1, -2, 3], [3]);
  const y = f64([10, 20, 30], [3]);
  const out = be.zeros([3], 'f64');
  be.add(x, y, out);
  assert.deepEqual(Array.from(out.data), [11, 18, 33]);
  be.add(out, x, out); // out aliases a
  assert.deepEqual(Array.from(out.data), [12, 16, 36]);
  be.scale(x, -0.5, out);
  assert.deepEqual(Array.from(out.data), [-0.5, 1, -1.5]);
  be.axpy(2, x, y);
  assert.deepEqual(Array.from(y.data), [12, 16, 36]);
  const s = be.zeros([1], 'f64');
  be.sumOfSquares(x, s, false);
  assert.equal(s.data[0], 14);
  be.sumOfSquares(x, s, true);
  assert.equal(s.data[0], 28);
  be.fill(out, 7);
  assert.deepEqual(Array.from(out.data), [7, 7, 7]);
  be.copy(x, out);
  assert.deepEqual(Array.from(out.data), [1, -2, 3]);
  assert.throws(() => be.copy(x, be.zeros([3], 'f32')), /dtype|f32/);
  assert.throws(() => be.add(x, f64([1, 2], [2]), out), /elements/);
  // f32 storage rounds the float64 result.
  const a32 = be.fromArray([0.1], [1], 'f32');
  const o32 = be.zeros([1], 'f32');
  be.scale(a32, 3, o32);
  assert.equal(o32.data[0], Math.fround(3 * Math.fround(0.1)));
});

test('swiglu: silu(g)·u by hand', () => {
  const gate = f64([0, 1, -2], [3]);
  const up = f64([5, 2, 3], [3]);
  const out = be.zeros([3], 'f64');
  be.swiglu(gate, up, out);
  assertClose(out.data, [0, 2 / (1 + Math.exp(-1)), (3 * -2) / (1 + Math.exp(2))], {
    atol: 1e-15,
    rtol: 1e-14,
  });
});

test('tanh-GELU and GeGLU by hand: 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))', () => {
  const xs = [0, 1, -2, 0.5, 3.25, -7];
  const tanhForm = (x: number) =>
    0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const x = f64(xs, [6]);
  const out = be.zeros([6], 'f64');
  be.geluTanh(x, out);
  assertClose(out.data, xs.map(tanhForm), { atol: 1e-15, rtol: 1e-13 });
  // PyTorch: torch.nn.functional.gelu(torch.tensor(1.0, dtype=torch.float64), approximate='tanh')
  assert.ok(Math.abs(out.data[1]! - 0.8411919906082768) < 1e-15);
  const up = f64([5, 2, 3, -1, 0.5, 4], [6]);
  be.geglu(x, up, out);
  assertClose(
    out.data,
    xs.map((v, i) => tanhForm(v) * [5, 2, 3, -1, 0.5, 4][i]!),
    { atol: 1e-15, rtol: 1e-13 },
  );
});

test('dropout: kept fraction ≈ 1-p, mask = uniformAt(seed, i) ≥ p, same seed same mask', () => {
  const n = 100_000;
  const x = be.fromArray(new Float32Array(n).fill(2), [n], 'f32');
  const out = be.zeros([n], 'f32');
  const p = 0.3;
  be.dropout(x, p, 42, out);
  let kept = 0;
  for (let i = 0; i < n; i++) {
    const keep = uniformAt(42, i) >= p;
    assert.equal(out.data[i], keep ? Math.fround(2 / (1 - p)) : 0, `element ${i}`);
    if (keep) kept++;
  }
  assert.ok(Math.abs(kept / n - (1 - p)) < 0.01, `kept fraction ${kept / n}`);
  const again = be.zeros([n], 'f32');
  be.dropout(x, p, 42, again);
  assert.deepEqual(again.data, out.data);
  be.dropout(x, p, 43, again);
  assert.notDeepEqual(again.data, out.data);
  be.dropout(x, 0, 43, again);
  assert.ok(again.data.every((v) => v === 2));
  assert.throws(() => be.dropout(x, 1, 1, out), /p must be/);
});

test('embedding gathers rows and rejects out-of-range ids', () => {
  const table = f64([0, 1, 10, 11, 20, 21], [3, 2]);
  const out = be.zeros([3, 2], 'f64');
  be.embedding(i32([2, 0, 2], [3]), table, out);
  assert.deepEqual(Array.from(out.data), [20, 21, 0, 1, 20, 21]);
  assert.throws(() => be.embedding(i32([3, 0, 0], [3]), table, out), /outside/);
  assert.throws(() => be.embedding(i32([-1, 0, 0], [3]), table, out), /outside/);
  const dtable = be.zeros([3, 2], 'f64');
  be.embeddingBackward(i32([2, 0, 2], [3]), f64([1, 2, 3, 4, 5, 6], [3, 2]), dtable);
  assert.deepEqual(Array.from(dtable.data), [3, 4, 0, 0, 6, 8]);
});

test('rmsnorm of a known vector', () => {
  const x = f64([3, 4, 0, 0], [2, 2]);
  const w = f64([1, 2], [2]);
  const out = be.zeros([2, 2], 'f64');
  const rstd = be.zeros([2], 'f64');
  be.rmsnorm(x, w, 0.5, out, rstd);
  const r0 = 1 / Math.sqrt(12.5 + 0.5);
  const r1 = 1 / Math.sqrt(0.5);
  assertClose(rstd.data, [r0, r1], { atol: 0, rtol: 1e-15 });
  assertClose(out.data, [3 * r0, 8 * r0, 0, 0], { atol: 0, rtol: 1e-15 });
});

test('rope rotates a unit vector by position × inverse frequency (both layouts)', () => {
  const D = 4;
  const theta = 10000; // inverse frequencies 1 and 1/100
  const t = ropeTables(D, 8, theta, null, 'f64');
  const cos = f64(t.cos, [8, 2]);
  const sin = f64(t.sin, [8, 2]);
  const pos = i32([3], [1]);
  const cases: [string, number[], number[]][] = [
    ['half', [1, 0, 0, 0], [Math.cos(3), 0, Math.sin(3), 0]],
    ['half', [0, 1, 0, 0], [0, Math.cos(0.03), 0, Math.sin(0.03)]],
    ['half', [0, 0, 1, 0], [-Math.sin(3), 0, Math.cos(3), 0]],
    ['interleaved', [1, 0, 0, 0], [Math.cos(3), Math.sin(3), 0, 0]],
    ['interleaved', [0, 0, 0, 1], [0, 0, -Math.sin(0.03), Math.cos(0.03)]],
  ];
  for (const [layout, input, expected] of cases) {
    const x = f64(input, [1, 1, 1, D]);
    const out = be.zeros([1, 1, 1, D], 'f64');
    be.rope(x, pos, cos, sin, layout as 'half' | 'interleaved', false, out);
    assertClose(out.data, expected, { atol: 1e-15, rtol: 1e-12, what: `${layout} ${input}` });
    be.rope(out, pos, cos, sin, layout as 'half' | 'interleaved', true, out); // in place, inverse
    assertClose(out.data, input, { atol: 1e-15, rtol: 1e-12 });
  }
  assert.throws(
    () =>
      be.rope(
        f64([1, 0, 0, 0], [1, 1, 1, 4]),
        i32([8], [1]),
        cos,
        sin,
        'half',
        false,
        be.zeros([1, 1, 1, 4], 'f64'),
      ),
    /outside/,
  );
});

test('rope tables: Llama-3 scaling keeps high frequencies, divides low ones by the factor, blends between', () => {
  const D = 128;
  const theta = 500000;
  const plain = ropeTables(D, 2, theta, null, 'f64').invFreq;
  const scaled = ropeTables(
    D,
    2,
    theta,
    {
      ropeType: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    },
    'f64',
  ).invFreq;
  const seen = { high: 0, low: 0, mid: 0 };
  for (let i = 0; i < D / 2; i++) {
    const base = 1 / theta ** ((2 * i) / D);
    assertClose([plain[i]!], [base], { atol: 0, rtol: 1e-14 });
    const wavelen = (2 * Math.PI) / base;
    let expected: number;
    if (wavelen < 8192 / 4) {
      expected = base;
      seen.high++;
    } else if (wavelen > 8192 / 1) {
      expected = base / 8;
      seen.low++;
    } else {
      const s = (8192 / wavelen - 1) / (4 - 1);
      expected = ((1 - s) * base) / 8 + s * base;
      seen.mid++;
    }
    assertClose([scaled[i]!], [expected], { atol: 0, rtol: 1e-12, what: `invFreq[${i}]` });
  }
  assert.ok(seen.high > 0 && seen.low > 0 && seen.mid > 0, JSON.stringify(seen));
  const f32 = ropeTables(D, 5, theta, null, 'f32');
  assert.ok(f32.cos instanceof Float32Array);
  assertClose(
    [f32.cos[4 * 64 + 1]!, f32.sin[4 * 64 + 1]!],
    [Math.cos(4 * plain[1]!), Math.sin(4 * plain[1]!)],
    { atol: 1e-6, rtol: 0 },
  );
});

test('attention: one key returns its value; equal scores average; causal, Tq < Tk, segments, GQA', () => {
  // One key: softmax weight 1.
  const q1 = f64([0.3, -0.7], [1, 1, 1, 2]);
  const k1 = f64([2, 1], [1, 1, 1, 2]);
  const v1 = f64([5, -6], [1, 1, 1, 2]);
  const out1 = be.zeros([1, 1, 1, 2], 'f64');
  const lse1 = be.zeros([1, 1, 1], 'f64');
  be.attention(q1, k1, v1, out1, lse1, { scale: 0.5 });
  assertClose(out1.data, [5, -6], { atol: 1e-15, rtol: 0 });
  assertClose(lse1.data, [0.5 * (0.6 - 0.7)], { atol: 1e-15, rtol: 0 });

  // Two queries, two keys, q·k = [1, 0] for the second query: weights e/(e+1), 1/(e+1).
  const q = f64([1, 0, 1, 0], [1, 2, 1, 2]);
  const k = f64([1, 0, 0, 1], [1, 2, 1, 2]);
  const v = f64([1, 2, 3, 4], [1, 2, 1, 2]);
  const out = be.zeros([1, 2, 1, 2], 'f64');
  const lse = be.zeros([1, 1, 2], 'f64');
  be.attention(q, k, v, out, lse, { scale: 1 });
  const e = Math.E;
  assertClose(out.data, [1, 2, (e * 1 + 3) / (e + 1), (e * 2 + 4) / (e + 1)], {
    atol: 1e-14,
    rtol: 0,
  });
  assertClose(lse.data, [1, Math.log(e + 1)], { atol: 1e-14, rtol: 0 });

  // Segment ids: the second query is in its own segment and sees only itself.
  be.attention(q, k, v, out, lse, { scale: 1, segmentIds: i32([0, 1], [1, 2]) });
  assertClose(out.data, [1, 2, 3, 4], { atol: 1e-14, rtol: 0 });

  // Tq = 1 < Tk = 2: the query sits at position 1 and sees both keys; equal scores average.
  const qz = f64([0, 0], [1, 1, 1, 2]);
  const o = be.zeros([1, 1, 1, 2], 'f64');
  const l = be.zeros([1, 1, 1], 'f64');
  be.attention(qz, k, v, o, l, { scale: 1 });
  assertClose(o.data, [2, 3], { atol: 1e-14, rtol: 0 });
  assertClose(l.data, [Math.log(2)], { atol: 1e-14, rtol: 0 });

  // GQA: two query heads share one key/value head.
  const qg = f64([1, 0, 0, 0], [1, 1, 2, 2]);
  const kg = f64([1, 0], [1, 1, 1, 2]);
  const vg = f64([7, 8], [1, 1, 1, 2]);
  const og = be.zeros([1, 1, 2, 2], 'f64');
  be.attention(qg, kg, vg, og, be.zeros([1, 2, 1], 'f64'), { scale: 1 });
  assertClose(og.data, [7, 8, 7, 8], { atol: 1e-15, rtol: 0 });

  assert.throws(
    () =>
      be.attention(
        f64([0, 0, 0, 0, 0, 0], [1, 3, 1, 2]),
        k,
        v,
        be.zeros([1, 3, 1, 2], 'f64'),
        be.zeros([1, 1, 3], 'f64'),
        { scale: 1 },
      ),
    /Tk/,
  );
  assert.throws(
    () => be.attention(q, k, v, out, lse, { scale: 1, segmentIds: i32([0], [1, 1]) }),
    /segmentIds/,
  );
});

test('cross-entropy: uniform logits give log V; gradient; ignore index; aliasing; bad labels', () => {
  const V = 6;
  const logits = f64(new Array(2 * V).fill(0.25), [2, V]);
  const losses = be.zeros([2], 'f64');
  be.crossEntropy(logits, i32([4, -1], [2]), -1, losses, logits, 2); // dlogits aliases logits
  assertClose(losses.data, [Math.log(V), 0], { atol: 1e-15, rtol: 0 });
  const expected = new Array(2 * V).fill(0);
  for (let j = 0; j < V; j++) expected[j] = 2 * (1 / V - (j === 4 ? 1 : 0));
  assertClose(logits.data, expected, { atol: 1e-15, rtol: 0 });
  // Loss of a peaked row by hand: logits [0, ln 3] → softmax [1/4, 3/4].
  const two = f64([0, Math.log(3)], [1, 2]);
  const l = be.zeros([1], 'f64');
  be.crossEntropy(two, i32([1], [1]), -100, l, null, 1);
  assertClose(l.data, [Math.log(4 / 3)], { atol: 1e-15, rtol: 0 });
  assert.throws(() => be.crossEntropy(two, i32([2], [1]), -100, l, null, 1), /outside/);
});

test('adamw: two steps against the PyTorch formula', () => {
  const opts = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
  const p = f64([1, -2], [2]);
  const m = be.zeros([2], 'f64');
  const v = be.zeros([2], 'f64');
  const expectP = [1, -2];
  const expectM = [0, 0];
  const expectV = [0, 0];
  for (const [step, grads] of [
    [1, [0.5, -3]],
    [2, [-0.25, 1]],
  ] as const) {
    be.adamw(p, f64(grads, [2]), m, v, { ...opts, step });
    for (let i = 0; i < 2; i++) {
      expectP[i] = expectP[i]! * (1 - opts.lr * opts.weightDecay);
      expectM[i] = opts.beta1 * expectM[i]! + (1 - opts.beta1) * grads[i]!;
      expectV[i] = opts.beta2 * expectV[i]! + (1 - opts.beta2) * grads[i]! ** 2;
      const mHat = expectM[i]! / (1 - opts.beta1 ** step);
      const vHat = expectV[i]! / (1 - opts.beta2 ** step);
      expectP[i] = expectP[i]! - (opts.lr * mHat) / (Math.sqrt(vHat) + opts.eps);
    }
    assertClose(m.data, expectM, { atol: 1e-15, rtol: 1e-13 });
    assertClose(v.data, expectV, { atol: 1e-15, rtol: 1e-13 });
    assertClose(p.data, expectP, { atol: 1e-13, rtol: 1e-12 });
    // By hand for the first step: mHat = g, vHat = g², so p = p·(1 - lr·wd) - lr·g/(|g| + eps).
    if (step === 1)
      assertClose(
        p.data,
        [0.999 - (0.1 * 0.5) / (0.5 + 1e-8), -2 * 0.999 + (0.1 * 3) / (3 + 1e-8)],
        { atol: 1e-13, rtol: 0 },
      );
  }
});
