// The native cpu kernels (every op except matmul and 4-bit) against the reference backend.
// Inputs are float32 values fed identically to both backends; the reference computes in float64
// (f64 tensors), so differences are the cpu kernels' float32 rounding. Shapes include 1, odd sizes
// and sizes that are not multiples of the SIMD width; every op runs with 1 and 2 threads.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import { ropeTables } from '../src/backends/rope-tables.js';
import type { AttentionOptions } from '../src/tensor/backend.js';
import type { DType } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, randn, rng } from './util.js';

const cpu = (await getBackend('cpu')) as CpuBackend;
const ref = await getBackend('ref');
const defaultThreads = cpu.threads;

const TOL = { atol: 2e-6, rtol: 2e-5 };

let nextSeed = 1;
/** Float32-representable random values (so both backends see identical inputs). */
function data(n: number, scale = 1): Float32Array {
  return Float32Array.from(randn(n, nextSeed++, scale));
}

/** The same values as a cpu f32 tensor and a ref f64 tensor (i32 stays i32 on both). */
interface Pair {
  c: Tensor;
  r: Tensor;
}
const live: Tensor[] = [];
function pair(values: ArrayLike<number>, shape: readonly number[], dtype: DType = 'f32'): Pair {
  const c = cpu.fromArray(values, shape, dtype);
  const r = ref.fromArray(values, shape, dtype === 'f32' ? 'f64' : dtype);
  live.push(c, r);
  return { c, r };
}
function zeros(shape: readonly number[]): Pair {
  return pair(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
}
function freeAll(): void {
  for (const t of live.splice(0)) t.dispose();
}
function snapshot(t: Tensor): Float32Array {
  return Float32Array.from(t.data as Float32Array);
}
function close(p: Pair, what: string, tol: { atol?: number; rtol?: number } = TOL): void {
  assertClose(p.c.data, p.r.data, { ...tol, what });
}

/** Runs `body` once per thread count, restoring the default afterwards. */
function withThreads(name: string, body: (threads: number) => void): void {
  for (const threads of [1, 2]) {
    test(`${name} (threads=${threads})`, () => {
      cpu.threads = threads;
      try {
        body(threads);
      } finally {
        cpu.threads = defaultThreads;
        freeAll();
      }
    });
  }
}

// Around the SIMD widths (8, 16) and the parallel grain (32768 elements).
const SIZES = [1, 7, 16, 17, 1000, 100_003];

withThreads('fill, copy, add, scale, axpy match ref (including in-place forms)', () => {
  for (const n of SIZES) {
    const a = pair(data(n), [n]);
    const b = pair(data(n), [n]);
    const out = zeros([n]);
    for (const be of ['c', 'r'] as const) {
      const bk = be === 'c' ? cpu : ref;
      bk.fill(out[be], 2.5);
    }
    close(out, `fill n=${n}`, { atol: 0, rtol: 0 });
    cpu.copy(a.c, out.c);
    ref.copy(a.r, out.r);
    close(out, `copy n=${n}`, { atol: 0, rtol: 0 });
    cpu.add(a.c, b.c, out.c);
    ref.add(a.r, b.r, out.r);
    close(out, `add n=${n}`);
    cpu.add(out.c, b.c, out.c); // out aliases a
    ref.add(out.r, b.r, out.r);
    close(out, `add in place (a) n=${n}`);
    cpu.add(a.c, out.c, out.c); // out aliases b
    ref.add(a.r, out.r, out.r);
    close(out, `add in place (b) n=${n}`);
    cpu.scale(a.c, -0.75, out.c);
    ref.scale(a.r, -0.75, out.r);
    close(out, `scale n=${n}`);
    cpu.scale(out.c, 3, out.c);
    ref.scale(out.r, 3, out.r);
    close(out, `scale in place n=${n}`);
    cpu.axpy(0.3, a.c, out.c);
    ref.axpy(0.3, a.r, out.r);
    close(out, `axpy n=${n}`);
  }
  // The storage types fill and copy through the typed array.
  const ids = cpu.zeros([5], 'i32');
  cpu.fill(ids, 7);
  const ids2 = cpu.zeros([5], 'i32');
  cpu.copy(ids, ids2);
  assert.deepEqual(Array.from(ids2.data), [7, 7, 7, 7, 7]);
  assert.throws(() => cpu.fill(ids, 0.5), /not an integer/);
  ids.dispose();
  ids2.dispose();
});

withThreads('sumOfSquares matches ref, accumulates, and is bit-identical on repeats', () => {
  for (const n of SIZES) {
    const x = pair(data(n), [n]);
    const out = pair([1.25], [1]);
    cpu.sumOfSquares(x.c, out.c, true);
    ref.sumOfSquares(x.r, out.r, true);
    close(out, `sumOfSquares accumulate n=${n}`, { atol: 1e-6, rtol: 1e-6 });
    cpu.sumOfSquares(x.c, out.c, false);
    ref.sumOfSquares(x.r, out.r, false);
    close(out, `sumOfSquares n=${n}`, { atol: 1e-6, rtol: 1e-6 });
    const first = snapshot(out.c);
    cpu.sumOfSquares(x.c, out.c, false);
    assert.deepEqual(snapshot(out.c), first);
  }
});

withThreads(
  'sum equals ref f32 to the last bit (float64 in element order), accumulates, and rejects bad shapes',
  () => {
    for (const n of SIZES) {
      const values = data(n, 10);
      const xc = cpu.fromArray(values, [n]);
      const xr = ref.fromArray(values, [n]);
      const oc = cpu.fromArray([1.25], [1]);
      const or = ref.fromArray([1.25], [1]);
      cpu.sum(xc, oc, true);
      ref.sum(xr, or, true);
      assert.deepEqual(oc.data, or.data, `sum accumulate n=${n}`);
      let s = 0;
      for (const v of values) s += v;
      assert.equal(oc.data[0], Math.fround(1.25 + s));
      cpu.sum(xc, oc, false);
      assert.equal(oc.data[0], Math.fround(s));
      for (const t of [xc, xr, oc, or]) t.dispose();
    }
    const x = cpu.zeros([3]);
    assert.throws(
      () => cpu.sum(x, cpu.zeros([2]), false),
      /cpu\.sum: out has 2 elements, expected 1/,
    );
    x.dispose();
  },
);

withThreads('swiglu and its backward match ref (dgate/dup may alias gate/up)', () => {
  for (const n of SIZES) {
    const gate = pair(data(n, 3), [n]);
    const up = pair(data(n), [n]);
    const dout = pair(data(n), [n]);
    const out = zeros([n]);
    cpu.swiglu(gate.c, up.c, out.c);
    ref.swiglu(gate.r, up.r, out.r);
    close(out, `swiglu n=${n}`);
    const dgate = zeros([n]);
    const dup = zeros([n]);
    cpu.swigluBackward(dout.c, gate.c, up.c, dgate.c, dup.c);
    ref.swigluBackward(dout.r, gate.r, up.r, dgate.r, dup.r);
    close(dgate, `swiglu dgate n=${n}`);
    close(dup, `swiglu dup n=${n}`);
    // In place: the gradients overwrite gate and up.
    cpu.swigluBackward(dout.c, gate.c, up.c, gate.c, up.c);
    assertClose(gate.c.data, dgate.r.data, { ...TOL, what: `swiglu in-place dgate n=${n}` });
    assertClose(up.c.data, dup.r.data, { ...TOL, what: `swiglu in-place dup n=${n}` });
  }
  // Extreme gates: silu saturates without overflow or NaN.
  const g = pair([-200, -90, -20, 0, 20, 90, 200], [7]);
  const u = pair([1, 1, 1, 1, 1, 1, 1], [7]);
  const o = zeros([7]);
  cpu.swiglu(g.c, u.c, o.c);
  ref.swiglu(g.r, u.r, o.r);
  close(o, 'swiglu extremes');
});

withThreads('dropout keeps exactly the elements the shared hash keeps, scaled by 1/(1-p)', () => {
  for (const n of SIZES) {
    for (const [p, seed] of [
      [0, 5],
      [0.1, 1],
      [0.5, 123456789],
      [0.9, 0xffffffff],
    ] as const) {
      const x = pair(data(n), [n]);
      const out = zeros([n]);
      cpu.dropout(x.c, p, seed, out.c);
      ref.dropout(x.r, p, seed, out.r);
      close(out, `dropout n=${n} p=${p}`);
      const c = out.c.data;
      const r = out.r.data;
      for (let i = 0; i < n; i++) {
        if ((c[i] === 0) !== (r[i] === 0))
          assert.fail(`dropout mask differs at ${i} (n=${n}, p=${p})`);
      }
      cpu.dropout(x.c, p, seed, x.c); // in place
      assert.deepEqual(snapshot(x.c), snapshot(out.c));
    }
  }
  const x = pair([1], [1]);
  assert.throws(() => cpu.dropout(x.c, 1, 0, x.c), /p must be in \[0, 1\)/);
  assert.throws(() => cpu.dropout(x.c, 0.5, 0.5, x.c), /seed must be an integer/);
});

withThreads('embedding and its backward match ref; repeated ids accumulate', () => {
  for (const [V, d, n] of [
    [1, 1, 1],
    [10, 12, 7],
    [50, 80, 33],
    [300, 128, 500],
  ] as const) {
    const table = pair(data(V * d), [V, d]);
    const r = rng(nextSeed++);
    const idValues = Int32Array.from({ length: n }, () => Math.floor(r() * V));
    const ids = pair(idValues, [n], 'i32');
    const out = zeros([n, d]);
    cpu.embedding(ids.c, table.c, out.c);
    ref.embedding(ids.r, table.r, out.r);
    close(out, `embedding V=${V} d=${d}`, { atol: 0, rtol: 0 });
    const dout = pair(data(n * d), [n, d]);
    const dtable = pair(data(V * d), [V, d]);
    cpu.embeddingBackward(ids.c, dout.c, dtable.c);
    ref.embeddingBackward(ids.r, dout.r, dtable.r);
    close(dtable, `embeddingBackward V=${V} d=${d}`);
  }
});

withThreads('embedding rejects out-of-range ids before writing anything', () => {
  const table = pair(data(20), [5, 4]);
  const out = zeros([3, 4]);
  for (const bad of [
    [0, 5, 1],
    [0, -1, 1],
  ]) {
    const ids = cpu.fromArray(bad, [3], 'i32');
    assert.throws(
      () => cpu.embedding(ids, table.c, out.c),
      /cpu\.embedding: id -?\d+ at index 1 is out of range \[0, 5\)/,
    );
    const before = snapshot(table.c);
    assert.throws(() => cpu.embeddingBackward(ids, out.c, table.c), /cpu\.embeddingBackward: id/);
    assert.deepEqual(snapshot(table.c), before, 'dtable untouched');
    ids.dispose();
  }
  const ids = cpu.fromArray([0, 1, 2], [3], 'i32');
  assert.throws(
    () => cpu.embedding(ids, table.c, zeros([3, 5]).c),
    /out has shape \[3, 5\], expected \[3, 4\]/,
  );
  assert.throws(() => cpu.embedding(table.c, table.c, out.c), /ids must be i32/);
  ids.dispose();
});

withThreads(
  'rmsnorm and its backward match ref; dweight accumulates and repeats are bit-identical',
  () => {
    for (const [n, d] of [
      [1, 1],
      [3, 8],
      [5, 12],
      [300, 64],
      [7, 80],
      [65, 129],
    ] as const) {
      const x = pair(data(n * d, 2), [n, d]);
      const w = pair(data(d), [d]);
      const out = zeros([n, d]);
      const rstd = zeros([n]);
      cpu.rmsnorm(x.c, w.c, 1e-5, out.c, rstd.c);
      ref.rmsnorm(x.r, w.r, 1e-5, out.r, rstd.r);
      close(out, `rmsnorm out n=${n} d=${d}`);
      close(rstd, `rmsnorm rstd n=${n} d=${d}`);
      const dout = pair(data(n * d), [n, d]);
      const dx = zeros([n, d]);
      const dw = pair(data(d), [d]);
      cpu.rmsnormBackward(dout.c, x.c, w.c, rstd.c, dx.c, dw.c);
      ref.rmsnormBackward(dout.r, x.r, w.r, rstd.r, dx.r, dw.r);
      close(dx, `rmsnorm dx n=${n} d=${d}`, { atol: 1e-5, rtol: 1e-4 });
      close(dw, `rmsnorm dweight n=${n} d=${d}`, { atol: 1e-5, rtol: 1e-4 });
      // Without dweight, and repeated: identical bits.
      const dx2 = zeros([n, d]);
      cpu.rmsnormBackward(dout.c, x.c, w.c, rstd.c, dx2.c, null);
      assert.deepEqual(snapshot(dx2.c), snapshot(dx.c));
      const dwA = pair(new Float32Array(d), [d]);
      const dwB = pair(new Float32Array(d), [d]);
      cpu.rmsnormBackward(dout.c, x.c, w.c, rstd.c, dx2.c, dwA.c);
      cpu.rmsnormBackward(dout.c, x.c, w.c, rstd.c, dx2.c, dwB.c);
      assert.deepEqual(snapshot(dwA.c), snapshot(dwB.c));
      // In place forward (out = x).
      cpu.rmsnorm(x.c, w.c, 1e-5, x.c, rstd.c);
      assertClose(x.c.data, out.r.data, { ...TOL, what: `rmsnorm in place n=${n} d=${d}` });
    }
    const x = pair(data(12), [3, 4]);
    assert.throws(
      () => cpu.rmsnorm(x.c, zeros([5]).c, 1e-5, zeros([3, 4]).c, zeros([3]).c),
      /weight has shape \[5\], expected \[4\]/,
    );
    assert.throws(
      () => cpu.rmsnorm(x.c, zeros([4]).c, 1e-5, zeros([3, 4]).c, zeros([2]).c),
      /rstd has 2 elements, expected 3/,
    );
  },
);

withThreads('rope matches ref in both layouts, forward and inverse, in place', () => {
  for (const D of [2, 8, 12, 64, 80, 128]) {
    const maxPos = 40;
    const tables = ropeTables(D, maxPos, 10000);
    const cos = pair(tables.cos, [maxPos, D / 2]);
    const sin = pair(tables.sin, [maxPos, D / 2]);
    const [B, T, H] = [2, 5, 3];
    const r = rng(nextSeed++);
    const positions = pair(
      Int32Array.from({ length: B * T }, () => Math.floor(r() * maxPos)),
      [B * T],
      'i32',
    );
    for (const layout of ['half', 'interleaved'] as const) {
      for (const inverse of [false, true]) {
        const x = pair(data(B * T * H * D), [B, T, H, D]);
        const out = zeros([B, T, H, D]);
        cpu.rope(x.c, positions.c, cos.c, sin.c, layout, inverse, out.c);
        ref.rope(x.r, positions.r, cos.r, sin.r, layout, inverse, out.r);
        close(out, `rope D=${D} ${layout} inverse=${inverse}`);
        // In place, then rotating back recovers x.
        const original = snapshot(x.c);
        cpu.rope(x.c, positions.c, cos.c, sin.c, layout, inverse, x.c);
        assertClose(x.c.data, out.r.data, { ...TOL, what: `rope in place D=${D} ${layout}` });
        cpu.rope(x.c, positions.c, cos.c, sin.c, layout, !inverse, x.c);
        assertClose(x.c.data, original, { ...TOL, what: `rope round trip D=${D} ${layout}` });
      }
    }
  }
  const tables = ropeTables(8, 4, 10000);
  const cos = cpu.fromArray(tables.cos, [4, 4]);
  const sin = cpu.fromArray(tables.sin, [4, 4]);
  const x = zeros([1, 2, 1, 8]).c;
  for (const bad of [
    [0, 4],
    [-1, 0],
  ]) {
    const pos = cpu.fromArray(bad, [2], 'i32');
    assert.throws(
      () => cpu.rope(x, pos, cos, sin, 'half', false, x),
      /cpu\.rope: position -?\d+ at index \d is outside the cos\/sin tables \[0, 4\)/,
    );
    pos.dispose();
  }
  const pos = cpu.fromArray([0, 1], [2], 'i32');
  assert.throws(
    () => cpu.rope(zeros([1, 2, 1, 6]).c, pos, cos, sin, 'half', false, zeros([1, 2, 1, 6]).c),
    /cos has shape \[4, 4\], expected \[4, 3\]/,
  );
  assert.throws(
    () => cpu.rope(zeros([1, 2, 1, 7]).c, pos, cos, sin, 'half', false, zeros([1, 2, 1, 7]).c),
    /head dim must be even/,
  );
  assert.throws(() => cpu.rope(x, pos, cos, sin, 'other' as never, false, x), /unknown layout/);
  pos.dispose();
  cos.dispose();
  sin.dispose();
});

interface AttnCase {
  B: number;
  Tq: number;
  Tk: number;
  H: number;
  Hkv: number;
  D: number;
  segments?: 'packed' | 'scattered';
}

/** Segment ids [B, T]: packed documents (runs), or ids scattered at random (masks inside tiles). */
function segmentIds(c: AttnCase): Int32Array {
  const r = rng(nextSeed++);
  const s = new Int32Array(c.B * c.Tk);
  for (let b = 0; b < c.B; b++) {
    let id = 0;
    for (let j = 0; j < c.Tk; j++) {
      if (c.segments === 'packed') {
        if (j > 0 && r() < 0.04) id++;
        s[b * c.Tk + j] = id;
      } else {
        s[b * c.Tk + j] = Math.floor(r() * 3);
      }
    }
  }
  return s;
}

function attentionCase(c: AttnCase): {
  out: Float32Array;
  lse: Float32Array;
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
} {
  const qShape = [c.B, c.Tq, c.H, c.D];
  const kShape = [c.B, c.Tk, c.Hkv, c.D];
  const q = pair(data(c.B * c.Tq * c.H * c.D), qShape);
  const k = pair(data(c.B * c.Tk * c.Hkv * c.D), kShape);
  const v = pair(data(c.B * c.Tk * c.Hkv * c.D), kShape);
  const seg = c.segments ? pair(segmentIds(c), [c.B, c.Tk], 'i32') : null;
  const opts = (side: 'c' | 'r'): AttentionOptions => ({
    scale: 1 / Math.sqrt(c.D),
    segmentIds: seg ? seg[side] : null,
  });
  const out = zeros(qShape);
  const lse = zeros([c.B, c.H, c.Tq]);
  cpu.attention(q.c, k.c, v.c, out.c, lse.c, opts('c'));
  ref.attention(q.r, k.r, v.r, out.r, lse.r, opts('r'));
  const what = `B=${c.B} Tq=${c.Tq} Tk=${c.Tk} H=${c.H} Hkv=${c.Hkv} D=${c.D} seg=${c.segments ?? 'none'}`;
  close(out, `attention out ${what}`, { atol: 1e-5, rtol: 1e-4 });
  close(lse, `attention lse ${what}`, { atol: 1e-5, rtol: 1e-5 });
  const dout = pair(data(c.B * c.Tq * c.H * c.D), qShape);
  const dq = zeros(qShape);
  const dk = zeros(kShape);
  const dv = zeros(kShape);
  cpu.attentionBackward(dout.c, q.c, k.c, v.c, out.c, lse.c, dq.c, dk.c, dv.c, opts('c'));
  // The reference backward gets its own forward's out/lse (float64).
  ref.attentionBackward(dout.r, q.r, k.r, v.r, out.r, lse.r, dq.r, dk.r, dv.r, opts('r'));
  close(dq, `attention dq ${what}`, { atol: 2e-5, rtol: 1e-4 });
  close(dk, `attention dk ${what}`, { atol: 2e-5, rtol: 1e-4 });
  close(dv, `attention dv ${what}`, { atol: 2e-5, rtol: 1e-4 });
  return {
    out: snapshot(out.c),
    lse: snapshot(lse.c),
    dq: snapshot(dq.c),
    dk: snapshot(dk.c),
    dv: snapshot(dv.c),
  };
}

const ATTENTION_CASES: AttnCase[] = [
  { B: 1, Tq: 1, Tk: 1, H: 1, Hkv: 1, D: 8 },
  { B: 2, Tq: 5, Tk: 5, H: 2, Hkv: 1, D: 8 },
  { B: 1, Tq: 70, Tk: 70, H: 4, Hkv: 2, D: 12 },
  { B: 2, Tq: 130, Tk: 130, H: 4, Hkv: 4, D: 64 },
  { B: 1, Tq: 67, Tk: 67, H: 8, Hkv: 2, D: 80 },
  { B: 1, Tq: 65, Tk: 65, H: 2, Hkv: 1, D: 128 },
  // Decode with a KV cache (one query at the last position) and a chunk of new queries.
  { B: 2, Tq: 1, Tk: 77, H: 4, Hkv: 1, D: 64 },
  { B: 1, Tq: 33, Tk: 150, H: 4, Hkv: 2, D: 12 },
  { B: 1, Tq: 7, Tk: 200, H: 4, Hkv: 2, D: 80 },
  // Packed sequences.
  { B: 2, Tq: 140, Tk: 140, H: 2, Hkv: 1, D: 16, segments: 'packed' },
  { B: 1, Tq: 90, Tk: 90, H: 4, Hkv: 2, D: 80, segments: 'scattered' },
];

withThreads('attention forward and backward match ref (GQA, decode, odd sizes, segments)', () => {
  for (const c of ATTENTION_CASES) attentionCase(c);
});

test('attention is bit-identical on repeats and across thread counts', () => {
  const c: AttnCase = { B: 1, Tq: 150, Tk: 150, H: 4, Hkv: 2, D: 24, segments: 'packed' };
  const results = [];
  for (const threads of [2, 2, 1]) {
    cpu.threads = threads;
    nextSeed = 9000; // same inputs each time
    results.push(attentionCase(c));
  }
  cpu.threads = defaultThreads;
  freeAll();
  assert.deepEqual(results[1], results[0], 'repeat with 2 threads');
  assert.deepEqual(results[2], results[0], '1 thread vs 2 threads');
  // One (batch, kv head) unit on 2 threads: the backward splits key tiles; still reproducible.
  const single: AttnCase = { B: 1, Tq: 200, Tk: 200, H: 3, Hkv: 1, D: 32 };
  const repeats = [];
  for (let i = 0; i < 2; i++) {
    cpu.threads = 2;
    nextSeed = 9100;
    repeats.push(attentionCase(single));
  }
  cpu.threads = defaultThreads;
  freeAll();
  assert.deepEqual(repeats[1], repeats[0], 'repeat with split key tiles');
});

test('attention rejects inconsistent shapes and options', () => {
  const q = zeros([1, 4, 4, 8]).c;
  const k = zeros([1, 4, 2, 8]).c;
  const out = zeros([1, 4, 4, 8]).c;
  const lse = zeros([1, 4, 4]).c;
  const opts = { scale: 0.3 };
  assert.throws(
    () => cpu.attention(q, zeros([1, 4, 3, 8]).c, zeros([1, 4, 3, 8]).c, out, lse, opts),
    /multiple of kv heads/,
  );
  assert.throws(
    () => cpu.attention(q, zeros([1, 3, 2, 8]).c, zeros([1, 3, 2, 8]).c, out, lse, opts),
    /Tk \(3\) must be ≥ Tq \(4\)/,
  );
  assert.throws(() => cpu.attention(q, k, zeros([1, 4, 2, 4]).c, out, lse, opts), /v has shape/);
  assert.throws(
    () => cpu.attention(q, k, k, out, zeros([1, 4, 3]).c, opts),
    /lse has shape \[1, 4, 3\], expected \[1, 4, 4\]/,
  );
  assert.throws(() => cpu.attention(q, k, k, q, lse, opts), /must not alias/);
  const seg = cpu.fromArray([0, 0, 1, 1, 1], [1, 5], 'i32');
  assert.throws(
    () =>
      cpu.attention(q, zeros([1, 5, 2, 8]).c, zeros([1, 5, 2, 8]).c, out, lse, {
        scale: 1,
        segmentIds: seg,
      }),
    /segment ids need Tq == Tk/,
  );
  seg.dispose();
  assert.throws(
    () => cpu.attention(q, k, k, out, lse, { scale: Number.NaN }),
    /scale must be a finite number/,
  );
  freeAll();
});

withThreads('crossEntropy matches ref (ignore index, gradScale, dlogits aliasing logits)', () => {
  for (const [n, V] of [
    [1, 1],
    [3, 5],
    [9, 17],
    [40, 1000],
    [5, 32003],
  ] as const) {
    const r = rng(nextSeed++);
    const labels = Int32Array.from({ length: n }, (_, i) =>
      i % 4 === 3 ? -100 : Math.floor(r() * V),
    );
    const logits = pair(data(n * V, 4), [n, V]);
    const y = pair(labels, [n], 'i32');
    const losses = zeros([n]);
    const dlogits = zeros([n, V]);
    cpu.crossEntropy(logits.c, y.c, -100, losses.c, dlogits.c, 0.25);
    ref.crossEntropy(logits.r, y.r, -100, losses.r, dlogits.r, 0.25);
    close(losses, `crossEntropy losses n=${n} V=${V}`, { atol: 1e-5, rtol: 1e-5 });
    close(dlogits, `crossEntropy dlogits n=${n} V=${V}`, { atol: 1e-7, rtol: 1e-4 });
    const lossesOnly = zeros([n]);
    cpu.crossEntropy(logits.c, y.c, -100, lossesOnly.c, null, 1);
    assert.deepEqual(snapshot(lossesOnly.c), snapshot(losses.c));
    // The gradient may overwrite the logits.
    cpu.crossEntropy(logits.c, y.c, -100, lossesOnly.c, logits.c, 0.25);
    assert.deepEqual(snapshot(logits.c), snapshot(dlogits.c));
  }
  // Large logits: stable log-sum-exp.
  const big = pair([1000, 0, -1000, 999], [1, 4]);
  const y = pair([3], [1], 'i32');
  const loss = zeros([1]);
  cpu.crossEntropy(big.c, y.c, -100, loss.c, null, 1);
  ref.crossEntropy(big.r, y.r, -100, loss.r, null, 1);
  close(loss, 'crossEntropy large logits');
});

withThreads('crossEntropy rejects labels outside [0, V) other than the ignore index', () => {
  const logits = zeros([2, 5]);
  const losses = zeros([2]);
  for (const bad of [
    [0, 5],
    [-1, 0],
  ]) {
    const y = cpu.fromArray(bad, [2], 'i32');
    assert.throws(
      () => cpu.crossEntropy(logits.c, y, -100, losses.c, null, 1),
      /cpu\.crossEntropy: label -?\d+ at row \d is out of range \[0, 5\)/,
    );
    y.dispose();
  }
  const y = cpu.fromArray([0, 1], [2], 'i32');
  assert.throws(
    () => cpu.crossEntropy(logits.c, y, -100, zeros([3]).c, null, 1),
    /losses has 3 elements, expected 2/,
  );
  assert.throws(
    () => cpu.crossEntropy(logits.c, y, -100, losses.c, zeros([2, 4]).c, 1),
    /dlogits has shape/,
  );
  y.dispose();
});

withThreads('adamw matches ref over several steps (PyTorch semantics)', () => {
  for (const n of [1, 7, 17, 1000, 40_001]) {
    const p = pair(data(n), [n]);
    const m = zeros([n]);
    const v = zeros([n]);
    for (let step = 1; step <= 5; step++) {
      const g = pair(data(n, 0.1), [n]);
      const options = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step };
      cpu.adamw(p.c, g.c, m.c, v.c, options);
      ref.adamw(p.r, g.r, m.r, v.r, options);
    }
    close(p, `adamw param n=${n}`, { atol: 1e-6, rtol: 1e-5 });
    close(m, `adamw m n=${n}`, { atol: 1e-7, rtol: 1e-5 });
    close(v, `adamw v n=${n}`, { atol: 1e-9, rtol: 1e-5 });
  }
  const p = zeros([3]);
  const options = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 0 };
  assert.throws(
    () => cpu.adamw(p.c, zeros([3]).c, zeros([3]).c, zeros([3]).c, options),
    /step must be an integer ≥ 1/,
  );
  assert.throws(
    () => cpu.adamw(p.c, zeros([2]).c, zeros([3]).c, zeros([3]).c, { ...options, step: 1 }),
    /grad has 2 elements/,
  );
  assert.throws(
    () => cpu.adamw(p.c, p.c, zeros([3]).c, zeros([3]).c, { ...options, step: 1 }),
    /must not alias/,
  );
});

test('cpu ops reject f64 tensors and mismatched sizes with the op name', () => {
  const x64 = cpu.zeros([4], 'f64');
  const x = cpu.zeros([4]);
  const y = cpu.zeros([5]);
  assert.throws(() => cpu.add(x64, x, x), /cpu\.add: a must be f32, got f64/);
  assert.throws(() => cpu.add(x, y, x), /cpu\.add: b has 5 elements, expected 4/);
  assert.throws(() => cpu.swiglu(x, x, y), /cpu\.swiglu: out has 5 elements/);
  assert.throws(() => cpu.copy(x, y), /cpu\.copy: dst has 5 elements/);
  assert.throws(() => cpu.sumOfSquares(x, x.rows(0, 1), false), /must not alias/);
  for (const t of [x64, x, y]) t.dispose();
});
