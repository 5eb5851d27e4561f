// Every reference backward against central finite differences of the reference forward, in float64.
// The scalar loss is a random projection L = Σ R ∘ output, so the backward is fed dout = R.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { ropeTables } from '../src/backends/rope-tables.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';
import { disposePacked4bit, uploadPacked4bit } from '../src/quant/upload.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, randn, rng } from './util.js';

const be = await getBackend('ref');
const H = 1e-6;
const TOL = { atol: 1e-6, rtol: 1e-5 };

function f64(values: ArrayLike<number>, shape: readonly number[]): Tensor {
  return be.fromArray(values, shape, 'f64');
}

function randTensor(shape: readonly number[], seed: number, scale = 1): Tensor {
  return f64(
    randn(
      shape.reduce((a, b) => a * b, 1),
      seed,
      scale,
    ),
    shape,
  );
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** d loss / d input by central differences, perturbing the input tensor's elements in place. */
function numericGrad(input: Tensor, loss: () => number): Float64Array {
  const x = input.data;
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const orig = x[i]!;
    x[i] = orig + H;
    const up = loss();
    x[i] = orig - H;
    const down = loss();
    x[i] = orig;
    g[i] = (up - down) / (2 * H);
  }
  return g;
}

/** Checks the analytic gradient of L = Σ R∘forward() w.r.t. each input. */
function check(
  what: string,
  inputs: Record<string, Tensor>,
  out: Tensor,
  forward: () => void,
  analytic: Record<string, ArrayLike<number>>,
  R: Tensor,
): void {
  const loss = () => {
    forward();
    return dot(out.data, R.data);
  };
  for (const [name, t] of Object.entries(inputs)) {
    const numeric = numericGrad(t, loss);
    assertClose(analytic[name]!, numeric, { ...TOL, what: `${what}: d/d${name}` });
  }
}

const pick = (r: () => number, options: number[]) => options[Math.floor(r() * options.length)]!;

test('gradcheck matmul: all transposes, batched and shared b', () => {
  const r = rng(11);
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      for (const sharedB of [false, true]) {
        const [batch, M, K, N] = [
          pick(r, [1, 2]),
          pick(r, [1, 3]),
          pick(r, [1, 2, 5]),
          pick(r, [1, 3, 4]),
        ];
        const a = randTensor(transA ? [batch, K, M] : [batch, M, K], 1 + M);
        const b = randTensor(
          sharedB ? (transB ? [N, K] : [K, N]) : transB ? [batch, N, K] : [batch, K, N],
          2 + N,
        );
        const out = be.zeros([batch, M, N], 'f64');
        const R = randTensor([batch, M, N], 3);
        const forward = () => be.matmul(a, b, out, { transA, transB });
        // Gradients by matmuls with swapped transposes, per batch item (shared b sums over the batch).
        const da = be.zeros(a.shape, 'f64');
        const db = be.zeros(b.shape, 'f64');
        for (let i = 0; i < batch; i++) {
          const ai = a.rows(i, i + 1).view(a.shape.slice(1));
          const bi = sharedB ? b : b.rows(i, i + 1).view(b.shape.slice(1));
          const Ri = R.rows(i, i + 1).view([M, N]);
          const dai = da.rows(i, i + 1).view(a.shape.slice(1));
          if (!transA) be.matmul(Ri, bi, dai, { transB: !transB });
          else be.matmul(bi, Ri, dai, { transA: transB, transB: true });
          const dbi = be.zeros(bi.shape, 'f64');
          if (!transB) be.matmul(ai, Ri, dbi, { transA: !transA });
          else be.matmul(Ri, ai, dbi, { transA: true, transB: transA });
          if (sharedB) be.axpy(1, dbi, db);
          else be.copy(dbi, db.rows(i, i + 1).view(b.shape.slice(1)));
        }
        check(
          `matmul tA=${transA} tB=${transB} shared=${sharedB}`,
          { a, b },
          out,
          forward,
          { a: da.data, b: db.data },
          R,
        );
      }
    }
  }
});

test('gradcheck matmul4bit: input gradient through the dequantized weight', () => {
  for (const [rows, cols, n] of [
    [3, 5, 2],
    [4, 33, 1],
    [1, 7, 3],
  ] as const) {
    const q = quantize4bit(randn(rows * cols, rows + cols), { blocksize: 32 });
    const w = uploadPacked4bit(be, q, rows, cols);
    const x = randTensor([n, cols], 5);
    const out = be.zeros([n, rows], 'f64');
    const R = randTensor([n, rows], 6);
    const dx = be.zeros([n, cols], 'f64');
    be.fill(dx, Number.NaN); // beta = 0 must ignore old contents
    be.matmul4bitInputGrad(R, w, dx);
    check(
      `matmul4bit [${rows}x${cols}]`,
      { x },
      out,
      () => be.matmul4bit(x, w, out),
      { x: dx.data },
      R,
    );
    disposePacked4bit(w);
  }
});

test('gradcheck embedding backward (repeated ids accumulate)', () => {
  const table = randTensor([5, 3], 7);
  const ids = be.fromArray([4, 0, 4, 2, 4, 1, 0], [7], 'i32');
  const out = be.zeros([7, 3], 'f64');
  const R = randTensor([7, 3], 8);
  const dtable = be.zeros([5, 3], 'f64');
  be.embeddingBackward(ids, R, dtable);
  check(
    'embedding',
    { table },
    out,
    () => be.embedding(ids, table, out),
    { table: dtable.data },
    R,
  );
});

test('gradcheck rmsnorm: dx and dweight', () => {
  for (const [n, d] of [
    [1, 1],
    [3, 5],
    [2, 8],
  ] as const) {
    const x = randTensor([n, d], 9 + d);
    const weight = randTensor([d], 10 + d);
    const out = be.zeros([n, d], 'f64');
    const rstd = be.zeros([n], 'f64');
    const R = randTensor([n, d], 12);
    const eps = 1e-5;
    be.rmsnorm(x, weight, eps, out, rstd);
    const dx = be.zeros([n, d], 'f64');
    const dweight = be.fromArray(new Array(d).fill(0.25), [d], 'f64'); // accumulates onto 0.25
    be.rmsnormBackward(R, x, weight, rstd, dx, dweight);
    const dw = Array.from(dweight.data, (v) => v - 0.25);
    check(
      `rmsnorm [${n}, ${d}]`,
      { x, weight },
      out,
      () => be.rmsnorm(x, weight, eps, out, rstd),
      { x: dx.data, weight: dw },
      R,
    );
  }
});

test('gradcheck rope: the inverse rotation is the backward, both layouts', () => {
  const [B, T, Hh, D] = [2, 3, 2, 6];
  const tables = ropeTables(D, 16, 10000, null, 'f64');
  const cos = f64(tables.cos, [16, D / 2]);
  const sin = f64(tables.sin, [16, D / 2]);
  const positions = be.fromArray([0, 5, 15, 3, 1, 9], [B * T], 'i32');
  for (const layout of ['half', 'interleaved'] as const) {
    const x = randTensor([B, T, Hh, D], 13);
    const out = be.zeros(x.shape, 'f64');
    const R = randTensor(x.shape, 14);
    const dx = be.zeros(x.shape, 'f64');
    be.rope(R, positions, cos, sin, layout, true, dx);
    check(
      `rope ${layout}`,
      { x },
      out,
      () => be.rope(x, positions, cos, sin, layout, false, out),
      { x: dx.data },
      R,
    );
  }
});

test('gradcheck attention: dq, dk, dv for GQA ratios 1/2/4, Tq < Tk, segment ids', () => {
  const cases = [
    { B: 1, Tq: 3, Tk: 3, H: 2, Hkv: 2, D: 3, seg: null },
    { B: 2, Tq: 2, Tk: 4, H: 2, Hkv: 1, D: 2, seg: null },
    { B: 1, Tq: 4, Tk: 4, H: 4, Hkv: 1, D: 2, seg: [0, 0, 1, 1] },
    { B: 1, Tq: 1, Tk: 3, H: 4, Hkv: 2, D: 5, seg: null },
    { B: 2, Tq: 5, Tk: 5, H: 2, Hkv: 1, D: 1, seg: [7, 7, 7, 2, 2, 0, 1, 1, 1, 1] },
  ];
  for (const [ci, c] of cases.entries()) {
    const q = randTensor([c.B, c.Tq, c.H, c.D], 20 + ci);
    const k = randTensor([c.B, c.Tk, c.Hkv, c.D], 30 + ci);
    const v = randTensor([c.B, c.Tk, c.Hkv, c.D], 40 + ci);
    const out = be.zeros(q.shape, 'f64');
    const lse = be.zeros([c.B, c.H, c.Tq], 'f64');
    const options = {
      scale: 1 / Math.sqrt(c.D) + 0.1,
      segmentIds: c.seg ? be.fromArray(c.seg, [c.B, c.Tk], 'i32') : null,
    };
    const R = randTensor(q.shape, 50 + ci);
    be.attention(q, k, v, out, lse, options);
    const dq = be.zeros(q.shape, 'f64');
    const dk = be.zeros(k.shape, 'f64');
    const dv = be.zeros(v.shape, 'f64');
    be.attentionBackward(R, q, k, v, out, lse, dq, dk, dv, options);
    check(
      `attention case ${ci}`,
      { q, k, v },
      out,
      () => be.attention(q, k, v, out, lse, options),
      { q: dq.data, k: dk.data, v: dv.data },
      R,
    );
  }
});

test('gradcheck swiglu', () => {
  const gate = randTensor([3, 5], 60, 2);
  const up = randTensor([3, 5], 61);
  const out = be.zeros([3, 5], 'f64');
  const R = randTensor([3, 5], 62);
  const dgate = be.zeros([3, 5], 'f64');
  const dup = be.zeros([3, 5], 'f64');
  be.swigluBackward(R, gate, up, dgate, dup);
  check(
    'swiglu',
    { gate, up },
    out,
    () => be.swiglu(gate, up, out),
    { gate: dgate.data, up: dup.data },
    R,
  );
});

test('gradcheck tanh-GELU and GeGLU (odd shapes, gates into both tails)', () => {
  const x = randTensor([3, 7], 63, 3);
  const out = be.zeros([3, 7], 'f64');
  const R = randTensor([3, 7], 64);
  const dx = be.zeros([3, 7], 'f64');
  be.geluTanhBackward(R, x, dx);
  check('geluTanh', { x }, out, () => be.geluTanh(x, out), { x: dx.data }, R);
  const gate = randTensor([5, 3], 65, 3);
  const up = randTensor([5, 3], 66);
  const gout = be.zeros([5, 3], 'f64');
  const G = randTensor([5, 3], 67);
  const dgate = be.zeros([5, 3], 'f64');
  const dup = be.zeros([5, 3], 'f64');
  be.gegluBackward(G, gate, up, dgate, dup);
  check(
    'geglu',
    { gate, up },
    gout,
    () => be.geglu(gate, up, gout),
    { gate: dgate.data, up: dup.data },
    G,
  );
});

test('gradcheck cross-entropy with ignore index and gradScale', () => {
  const [n, V] = [5, 7];
  const logits = randTensor([n, V], 70, 3);
  const labels = be.fromArray([3, -100, 0, 6, -100], [n], 'i32');
  const losses = be.zeros([n], 'f64');
  const gradScale = 0.37;
  const dlogits = be.zeros([n, V], 'f64');
  be.crossEntropy(logits, labels, -100, losses, dlogits, gradScale);
  const loss = () => {
    be.crossEntropy(logits, labels, -100, losses, null, 0);
    return gradScale * Array.from(losses.data).reduce((s, v) => s + v, 0);
  };
  assertClose(dlogits.data, numericGrad(logits, loss), { ...TOL, what: 'crossEntropy dlogits' });
  for (const r of [1, 4]) for (let j = 0; j < V; j++) assert.equal(dlogits.data[r * V + j], 0);
});

test('gradcheck dropout: the same call with the same seed is the backward', () => {
  const x = randTensor([4, 9], 80);
  const out = be.zeros(x.shape, 'f64');
  const R = randTensor(x.shape, 81);
  const dx = be.zeros(x.shape, 'f64');
  be.dropout(R, 0.3, 1234, dx);
  check('dropout', { x }, out, () => be.dropout(x, 0.3, 1234, out), { x: dx.data }, R);
});

test('gradcheck add, scale, axpy', () => {
  const a = randTensor([3, 1], 90);
  const b = randTensor([3, 1], 91);
  const out = be.zeros([3, 1], 'f64');
  const R = randTensor([3, 1], 92);
  check('add', { a, b }, out, () => be.add(a, b, out), { a: R.data, b: R.data }, R);
  const dscale = be.zeros([3, 1], 'f64');
  be.scale(R, -1.7, dscale);
  check('scale', { a }, out, () => be.scale(a, -1.7, out), { a: dscale.data }, R);
  // y ← y + 0.6·x as a function of (x, y0): out = copy(y0) then axpy.
  check(
    'axpy',
    { a, b },
    out,
    () => {
      be.copy(b, out);
      be.axpy(0.6, a, out);
    },
    { a: Array.from(R.data, (v) => 0.6 * v), b: R.data },
    R,
  );
});
