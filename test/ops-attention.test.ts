// Causal grouped-query flash attention, forward and backward, on every backend under test against
// ref (float64): GQA ratios 1/2/3/4, decode (Tq = 1 < Tk) and query chunks (Tq < Tk), head dims
// from 5 to 256, packed and scattered segment ids, sliding windows smaller than, equal to and larger
// than the sequence, logit soft-capping; backward repeats bit-identical; keys outside every window
// of a tile are never read (tiles skipped, not masked); ref's backward against float64 finite
// differences, window and soft-cap included.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import type { AttentionOptions, Backend } from '../src/tensor/backend.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';
import { checkGradients } from './finite-diff.js';
import { assertClose, randn, rng } from './util.js';

const ref = await getBackend('ref');

interface Case {
  B: number;
  Tq: number;
  Tk: number;
  H: number;
  Hkv: number;
  D: number;
  segments?: 'packed' | 'scattered';
  window?: number;
  softcap?: number;
}

// Small: the software adapter CI uses computes about 1 GFLOP/s.
const CASES: Case[] = [
  { B: 1, Tq: 1, Tk: 1, H: 1, Hkv: 1, D: 8 },
  { B: 2, Tq: 5, Tk: 5, H: 2, Hkv: 1, D: 8 },
  { B: 1, Tq: 37, Tk: 37, H: 3, Hkv: 1, D: 12 },
  { B: 1, Tq: 20, Tk: 20, H: 4, Hkv: 1, D: 64 },
  { B: 1, Tq: 33, Tk: 33, H: 2, Hkv: 2, D: 128 },
  { B: 1, Tq: 9, Tk: 9, H: 2, Hkv: 1, D: 256 },
  { B: 1, Tq: 6, Tk: 6, H: 1, Hkv: 1, D: 5 },
  // Decode with a KV cache (one query at the last position) and a chunk of new queries.
  { B: 2, Tq: 1, Tk: 40, H: 4, Hkv: 1, D: 64 },
  { B: 1, Tq: 1, Tk: 19, H: 6, Hkv: 2, D: 12 },
  { B: 1, Tq: 7, Tk: 50, H: 4, Hkv: 2, D: 80 },
  // Packed sequences; scattered ids put masked keys inside tiles.
  { B: 2, Tq: 45, Tk: 45, H: 2, Hkv: 1, D: 16, segments: 'packed' },
  { B: 1, Tq: 30, Tk: 30, H: 3, Hkv: 1, D: 24, segments: 'scattered' },
];

// Sliding windows (smaller than, equal to, larger than the sequence; 1; with segments, GQA, decode
// and query chunks; long enough that whole key tiles fall outside the window) and soft-capping.
const WINDOW_CASES: Case[] = [
  { B: 2, Tq: 37, Tk: 37, H: 4, Hkv: 2, D: 12, window: 5 },
  { B: 1, Tq: 37, Tk: 37, H: 2, Hkv: 1, D: 9, window: 37 },
  { B: 1, Tq: 20, Tk: 20, H: 3, Hkv: 3, D: 8, window: 64 },
  { B: 1, Tq: 11, Tk: 11, H: 2, Hkv: 1, D: 8, window: 1 },
  { B: 2, Tq: 45, Tk: 45, H: 4, Hkv: 1, D: 16, segments: 'packed', window: 7 },
  { B: 1, Tq: 30, Tk: 30, H: 3, Hkv: 1, D: 24, segments: 'scattered', window: 9 },
  { B: 2, Tq: 1, Tk: 40, H: 4, Hkv: 1, D: 64, window: 13 },
  { B: 1, Tq: 7, Tk: 50, H: 4, Hkv: 2, D: 20, window: 10 },
  { B: 1, Tq: 150, Tk: 150, H: 2, Hkv: 1, D: 8, window: 20 },
  { B: 1, Tq: 140, Tk: 140, H: 4, Hkv: 2, D: 8, segments: 'packed', window: 70 },
  { B: 2, Tq: 23, Tk: 23, H: 2, Hkv: 1, D: 16, softcap: 1.5 },
  { B: 1, Tq: 5, Tk: 31, H: 6, Hkv: 2, D: 12, softcap: 0.7 },
  { B: 2, Tq: 70, Tk: 70, H: 4, Hkv: 2, D: 10, segments: 'packed', window: 12, softcap: 2 },
];

function segmentIds(c: Case, seed: number): Int32Array {
  const r = rng(seed);
  const s = new Int32Array(c.B * c.Tk);
  for (let b = 0; b < c.B; b++) {
    let id = 0;
    for (let j = 0; j < c.Tk; j++) {
      if (c.segments === 'packed') {
        if (j > 0 && r() < 0.1) id++;
        s[b * c.Tk + j] = id;
      } else {
        s[b * c.Tk + j] = Math.floor(r() * 3);
      }
    }
  }
  return s;
}

const describe = (c: Case) =>
  `B=${c.B} Tq=${c.Tq} Tk=${c.Tk} H=${c.H} Hkv=${c.Hkv} D=${c.D} seg=${c.segments ?? 'none'} window=${c.window ?? 'none'} softcap=${c.softcap ?? 'none'}`;

/** Forward and backward of one case on `be` and ref; returns the backend's gradients (for repeats). */
async function runCase(be: Backend, c: Case, seed: number): Promise<Float32Array[]> {
  const P = new Pairs(be, ref, seed);
  try {
    const qShape = [c.B, c.Tq, c.H, c.D];
    const kShape = [c.B, c.Tk, c.Hkv, c.D];
    const q = P.random(qShape);
    const k = P.random(kShape);
    const v = P.random(kShape);
    const seg = c.segments ? P.pair(segmentIds(c, seed), [c.B, c.Tk], 'i32') : null;
    const opts = (side: 't' | 'r'): AttentionOptions => ({
      scale: 1 / Math.sqrt(c.D),
      segmentIds: seg ? seg[side] : null,
      window: c.window ?? null,
      softcap: c.softcap ?? null,
    });
    const out = P.zeros(qShape);
    const lse = P.zeros([c.B, c.H, c.Tq]);
    be.attention(q.t, k.t, v.t, out.t, lse.t, opts('t'));
    ref.attention(q.r, k.r, v.r, out.r, lse.r, opts('r'));
    const what = describe(c);
    await P.close(out, `attention out ${what}`, { atol: 1e-5, rtol: 1e-4 });
    await P.close(lse, `attention lse ${what}`, { atol: 1e-5, rtol: 1e-5 });
    const dout = P.random(qShape);
    // Gradients are overwritten: start from NaN.
    const nan = (shape: number[]) =>
      P.pair(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(Number.NaN), shape);
    const dq = nan(qShape);
    const dk = nan(kShape);
    const dv = nan(kShape);
    be.attentionBackward(dout.t, q.t, k.t, v.t, out.t, lse.t, dq.t, dk.t, dv.t, opts('t'));
    // The reference backward gets its own forward's out/lse (float64).
    ref.attentionBackward(dout.r, q.r, k.r, v.r, out.r, lse.r, dq.r, dk.r, dv.r, opts('r'));
    await P.close(dq, `attention dq ${what}`, { atol: 2e-5, rtol: 1e-4 });
    await P.close(dk, `attention dk ${what}`, { atol: 2e-5, rtol: 1e-4 });
    await P.close(dv, `attention dv ${what}`, { atol: 2e-5, rtol: 1e-4 });
    return [
      await out.t.read(),
      await lse.t.read(),
      await dq.t.read(),
      await dk.t.read(),
      await dv.t.read(),
    ] as Float32Array[];
  } finally {
    P.free();
  }
}

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: attention forward and backward match ref (GQA 1/2/3/4, decode, odd sizes, head dims to 256, segments)`, async () => {
    for (const [i, c] of CASES.entries()) await runCase(be, c, 1000 + 10 * i);
  });

  test(`${name}: sliding-window and soft-capped attention, forward and backward, match ref (windows < = > T, 1, segments, GQA, decode)`, async () => {
    for (const [i, c] of WINDOW_CASES.entries()) await runCase(be, c, 5000 + 10 * i);
  });

  test(`${name}: sliding-window attention never reads keys outside every window of a tile (skipped, not masked)`, async () => {
    // NaN keys and values at positions 0..63: queries at positions ≥ 128 with a window of 8 see
    // keys ≥ 121 only, and a kernel that visited (and masked) the first tiles would still multiply
    // their zero probabilities by NaN values. Their outputs and gradients must be exact.
    const [B, T, H, Hkv, D, window, poisoned, clean] = [1, 200, 2, 1, 8, 8, 64, 128];
    const P = new Pairs(be, ref, 7000);
    try {
      const qShape = [B, T, H, D];
      const kShape = [B, T, Hkv, D];
      const poison = (values: Float32Array) => values.fill(Number.NaN, 0, poisoned * Hkv * D);
      const q = P.random(qShape);
      const kv = [P.data(B * T * Hkv * D), P.data(B * T * Hkv * D)].map(poison);
      const k = P.pair(kv[0]!, kShape);
      const v = P.pair(kv[1]!, kShape);
      const opts = { scale: 1 / Math.sqrt(D), window };
      const out = P.zeros(qShape);
      const lse = P.zeros([B, H, T]);
      be.attention(q.t, k.t, v.t, out.t, lse.t, opts);
      ref.attention(q.r, k.r, v.r, out.r, lse.r, opts);
      const dout = P.random(qShape);
      const [dq, dk, dv] = [qShape, kShape, kShape].map((s) => P.zeros(s));
      be.attentionBackward(dout.t, q.t, k.t, v.t, out.t, lse.t, dq!.t, dk!.t, dv!.t, opts);
      ref.attentionBackward(dout.r, q.r, k.r, v.r, out.r, lse.r, dq!.r, dk!.r, dv!.r, opts);
      // Rows from position `clean` on ([B=1, T, heads, D] and lse's [1, H, T]).
      const tail = async (p: { t: Tensor; r: Tensor }, heads: number) => {
        const [got, want] = [await p.t.read(), await p.r.read()];
        const from = clean * heads * D;
        return [got.slice(from), want.slice(from)] as const;
      };
      for (const [what, p, heads] of [
        ['out', out, H],
        ['dq', dq!, H],
        ['dk', dk!, Hkv],
        ['dv', dv!, Hkv],
      ] as const) {
        const [got, want] = await tail(p, heads);
        assert.ok(got.every(Number.isFinite), `${what}: positions ≥ ${clean} are finite`);
        assertClose(got, want, { atol: 2e-5, rtol: 1e-4, what: `${what} beyond the window` });
      }
      const [gotLse, wantLse] = [await lse.t.read(), await lse.r.read()];
      for (let h = 0; h < H; h++) {
        const row = (a: ArrayLike<number>) => Array.from(a).slice(h * T + clean, (h + 1) * T);
        assertClose(row(gotLse), row(wantLse), { atol: 1e-5, rtol: 1e-5, what: 'lse' });
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: attention forward and backward are bit-identical on repeats`, async () => {
    const c: Case = { B: 1, Tq: 40, Tk: 40, H: 4, Hkv: 2, D: 24, segments: 'packed' };
    const first = await runCase(be, c, 2000);
    const second = await runCase(be, c, 2000);
    assert.deepEqual(second, first);
  });

  test(`${name}: attention, rmsnorm and crossEntropy on views packed closer than a binding alignment equal whole tensors`, async () => {
    // Tensors a few elements apart in one buffer: on a device their aligned binding windows overlap
    // and must be merged into one binding (transitively), each keeping its own offset.
    const [B, T, H, Hkv, D] = [2, 9, 4, 2, 12];
    const count = (s: number[]) => s.reduce((a, b) => a * b, 1);
    const pool = be.zeros([20000]);
    const owned = [pool];
    let at = 3;
    const view = (shape: number[]) => {
      const t = pool.rows(at, at + count(shape)).view(shape);
      at += count(shape) + 5;
      return t;
    };
    const values = (k: number, s: number) =>
      Float32Array.from({ length: k }, (_, i) => Math.sin(i * 1.3 + s));
    const input = (shape: number[], s: number) => {
      const whole = be.fromArray(values(count(shape), s), shape);
      owned.push(whole);
      const v = view(shape);
      v.write(values(count(shape), s));
      return { whole, v };
    };
    const output = (shape: number[]) => {
      const whole = be.zeros(shape);
      owned.push(whole);
      return { whole, v: view(shape) };
    };
    try {
      const [qS, kS] = [
        [B, T, H, D],
        [B, T, Hkv, D],
      ];
      const q = input(qS, 1),
        k = input(kS, 2),
        v = input(kS, 3),
        dout = input(qS, 4);
      const seg = be.fromArray(
        Int32Array.from({ length: B * T }, (_, i) => (i % T < 4 ? 0 : 1)),
        [B, T],
        'i32',
      );
      owned.push(seg);
      const out = output(qS),
        lse = output([B, H, T]),
        dq = output(qS),
        dk = output(kS),
        dv = output(kS);
      const o = { scale: 0.3, segmentIds: seg };
      for (const side of ['whole', 'v'] as const) {
        be.attention(q[side], k[side], v[side], out[side], lse[side], o);
        be.attentionBackward(
          dout[side],
          q[side],
          k[side],
          v[side],
          out[side],
          lse[side],
          dq[side],
          dk[side],
          dv[side],
          o,
        );
      }
      const x = input([7, 33], 5),
        w = input([33], 6);
      const y = output([7, 33]),
        rstd = output([7]),
        dx = output([7, 33]),
        dw = output([33]);
      const labels = be.fromArray([1, 2, -100, 30, 0, 5, 32], [7], 'i32');
      owned.push(labels);
      const losses = output([7]),
        dlogits = output([7, 33]);
      for (const side of ['whole', 'v'] as const) {
        be.rmsnorm(x[side], w[side], 1e-5, y[side], rstd[side]);
        be.rmsnormBackward(x[side], x[side], w[side], rstd[side], dx[side], dw[side]);
        be.crossEntropy(x[side], labels, -100, losses[side], dlogits[side], 0.5);
      }
      for (const [what, p] of Object.entries({
        out,
        lse,
        dq,
        dk,
        dv,
        y,
        rstd,
        dx,
        dw,
        losses,
        dlogits,
      })) {
        assert.deepEqual(await p.v.read(), await p.whole.read(), `${what} on views`);
      }
    } finally {
      for (const t of owned) t.dispose();
    }
  });

  test(`${name}: attention rejects inconsistent shapes and options`, () => {
    const P = new Pairs(be, ref, 3000);
    try {
      const z = (shape: number[]) => P.zeros(shape).t;
      const q = z([1, 4, 4, 8]);
      const k = z([1, 4, 2, 8]);
      const out = z([1, 4, 4, 8]);
      const lse = z([1, 4, 4]);
      const opts = { scale: 0.3 };
      assert.throws(
        () => be.attention(q, z([1, 4, 3, 8]), z([1, 4, 3, 8]), out, lse, opts),
        new RegExp(
          `${name}\\.attention: query heads \\(4\\) must be a multiple of kv heads \\(3\\)`,
        ),
      );
      assert.throws(
        () => be.attention(q, z([1, 3, 2, 8]), z([1, 3, 2, 8]), out, lse, opts),
        /Tk \(3\) must be ≥ Tq \(4\)/,
      );
      assert.throws(() => be.attention(q, k, z([1, 4, 2, 4]), out, lse, opts), /v has shape/);
      assert.throws(
        () => be.attention(q, k, k, out, z([1, 4, 3]), opts),
        /lse has shape \[1, 4, 3\], expected \[1, 4, 4\]/,
      );
      assert.throws(() => be.attention(q, k, k, q, lse, opts), /must not alias/);
      const seg = P.pair([0, 0, 1, 1, 1], [1, 5], 'i32').t;
      assert.throws(
        () =>
          be.attention(q, z([1, 5, 2, 8]), z([1, 5, 2, 8]), out, lse, {
            scale: 1,
            segmentIds: seg,
          }),
        /segment ids need Tq == Tk/,
      );
      assert.throws(
        () => be.attention(q, k, k, out, lse, { scale: 1, segmentIds: z([1, 4]) }),
        /segmentIds must be i32/,
      );
      assert.throws(
        () => be.attention(q, k, k, out, lse, { scale: Number.NaN }),
        /scale must be a finite number/,
      );
      for (const window of [0, -3, 2.5])
        assert.throws(
          () => be.attention(q, k, k, out, lse, { scale: 1, window }),
          new RegExp(`${name}\\.attention: window must be a positive integer, got ${window}`),
        );
      for (const softcap of [0, -1, Number.POSITIVE_INFINITY])
        assert.throws(
          () => be.attention(q, k, k, out, lse, { scale: 1, softcap }),
          /softcap must be a positive finite number/,
        );
      assert.throws(
        () => be.attentionBackward(q, q, k, k, out, lse, z([1, 4, 4, 8]), k, z([1, 4, 2, 8]), opts),
        new RegExp(`${name}\\.attentionBackward: dk and k must not alias`),
      );
      assert.throws(
        () =>
          be.attentionBackward(
            q,
            q,
            k,
            k,
            out,
            lse,
            z([1, 4, 4, 8]),
            z([1, 4, 2, 8]),
            z([1, 4, 3, 8]),
            opts,
          ),
        /dv has shape/,
      );
      if (name === 'webgpu') {
        const big = z([1, 1, 1, 264]);
        assert.throws(
          () => be.attention(big, big, big, z([1, 1, 1, 264]), z([1, 1, 1]), opts),
          /head dim 264 is over/,
        );
      }
    } finally {
      P.free();
    }
  });
}

test('ref: attention backward equals float64 finite differences (GQA 3, Tq < Tk, segments with GQA, windows, soft-cap)', () => {
  const cases = [
    { B: 1, Tq: 2, Tk: 4, H: 3, Hkv: 1, D: 3, seg: null },
    { B: 1, Tq: 4, Tk: 4, H: 3, Hkv: 1, D: 2, seg: [5, 5, 6, 6] },
    { B: 2, Tq: 1, Tk: 3, H: 2, Hkv: 2, D: 4, seg: null },
    { B: 1, Tq: 6, Tk: 6, H: 2, Hkv: 1, D: 3, seg: null, window: 2 },
    { B: 1, Tq: 3, Tk: 7, H: 2, Hkv: 2, D: 2, seg: null, window: 3, softcap: 0.8 },
    { B: 1, Tq: 6, Tk: 6, H: 3, Hkv: 1, D: 2, seg: [1, 1, 1, 2, 2, 2], window: 2, softcap: 1.3 },
  ];
  for (const [ci, c] of cases.entries()) {
    const t = (shape: number[], seed: number) =>
      ref.fromArray(
        randn(
          shape.reduce((a, b) => a * b, 1),
          seed,
        ),
        shape,
        'f64',
      );
    const q = t([c.B, c.Tq, c.H, c.D], 20 + ci);
    const k = t([c.B, c.Tk, c.Hkv, c.D], 30 + ci);
    const v = t([c.B, c.Tk, c.Hkv, c.D], 40 + ci);
    const out = ref.zeros(q.shape, 'f64');
    const lse = ref.zeros([c.B, c.H, c.Tq], 'f64');
    const options = {
      scale: 0.7,
      segmentIds: c.seg ? ref.fromArray(c.seg, [c.B, c.Tk], 'i32') : null,
      window: c.window ?? null,
      softcap: c.softcap ?? null,
    };
    const R = t(q.shape as number[], 50 + ci);
    ref.attention(q, k, v, out, lse, options);
    const dq = ref.zeros(q.shape, 'f64');
    const dk = ref.zeros(k.shape, 'f64');
    const dv = ref.zeros(v.shape, 'f64');
    ref.attentionBackward(R, q, k, v, out, lse, dq, dk, dv, options);
    checkGradients(
      `attention case ${ci}`,
      { q, k, v },
      out,
      () => ref.attention(q, k, v, out, lse, options),
      { q: dq.data, k: dk.data, v: dv.data },
      R,
    );
  }
});
