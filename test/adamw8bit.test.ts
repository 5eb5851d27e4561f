// The adamw8bit backend op (bitsandbytes blockwise 8-bit AdamW): its first step against the
// formula by hand on ref, cpu equal to ref to the last bit over several steps on odd sizes and
// partial last blocks (non-finite gradients included), and argument errors naming the op.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import { createDynamicMap } from '../src/quant/dynamic-map.js';
import {
  ADAMW8BIT_BLOCKSIZE,
  type AdamW8bitState,
  type AdamWOptions,
  type Backend,
} from '../src/tensor/backend.js';
import type { HostArray } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, randn, rng } from './util.js';

const cpu = (await getBackend('cpu')) as CpuBackend;
const ref = await getBackend('ref');
const QMAP1 = createDynamicMap(true);
const QMAP2 = createDynamicMap(false);

/** Fresh state as AdamW8bit makes it: codes of zero, zero absmax. */
function freshState(be: Backend, n: number): AdamW8bitState {
  const blocks = Math.ceil(n / ADAMW8BIT_BLOCKSIZE);
  const state1 = be.zeros([n], 'u8');
  const state2 = be.zeros([n], 'u8');
  be.fill(state1, QMAP1.indexOf(0));
  be.fill(state2, QMAP2.indexOf(0));
  return {
    state1,
    state2,
    absmax1: be.zeros([blocks]),
    absmax2: be.zeros([blocks]),
    qmap1: be.fromArray(QMAP1, [256]),
    qmap2: be.fromArray(QMAP2, [256]),
  };
}

function disposeState(s: AdamW8bitState): void {
  for (const t of Object.values(s)) (t as Tensor).dispose();
}

const f = Math.fround;

/** The same bytes (NaN payloads included), naming the first element that differs. */
function sameBits(got: HostArray, want: HostArray, what: string): void {
  assert.equal(got.length, want.length, what);
  const a = new Uint8Array(got.buffer, got.byteOffset, got.byteLength);
  const b = new Uint8Array(want.buffer, want.byteOffset, want.byteLength);
  for (let i = 0; i < b.length; i++) {
    if (a[i] !== b[i]) {
      const e = Math.floor(i / got.BYTES_PER_ELEMENT);
      assert.fail(`${what}: element ${e} is ${got[e]}, expected ${want[e]} (bytes differ)`);
    }
  }
}

test('adamw8bit on ref: the first step from fresh state is the formula to the rounding; codes decode to m and v', async () => {
  const n = 300; // one full block and a partial one
  const w0 = Float32Array.from(randn(n, 1));
  const g = Float32Array.from(randn(n, 2, 0.1));
  const o: AdamWOptions = {
    lr: 0.01,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: 0.1,
    step: 1,
  };
  const p = ref.fromArray(w0, [n]);
  const grad = ref.fromArray(g, [n]);
  const s = freshState(ref, n);
  ref.adamw8bit(p, grad, s, o);
  const c2t = 1 - o.beta2;
  const stepSize = (-o.lr * Math.sqrt(c2t)) / (1 - o.beta1);
  const m = g.map((x) => f((1 - o.beta1) * x));
  const v = g.map((x) => f((1 - o.beta2) * x * x));
  const want = w0.map((w, i) =>
    f(
      (w + stepSize * (m[i]! / (Math.sqrt(v[i]!) + o.eps * Math.sqrt(c2t)))) *
        (1 - o.lr * o.weightDecay),
    ),
  );
  assert.deepEqual(await p.read(), want);
  const absmax1 = await s.absmax1.read();
  const absmax2 = await s.absmax2.read();
  const codes1 = await s.state1.read();
  const codes2 = await s.state2.read();
  for (let b = 0; b < 2; b++) {
    const block = [...m.subarray(b * 256, (b + 1) * 256)];
    assert.equal(absmax1[b], Math.max(...block.map(Math.abs)));
    assert.equal(absmax2[b], Math.max(...v.subarray(b * 256, (b + 1) * 256)));
  }
  // Decoded moments sit within the 8-bit map's resolution of the true ones, with m's sign kept.
  const m8 = [...codes1].map((c, i) => QMAP1[c]! * absmax1[Math.floor(i / 256)]!);
  const v8 = [...codes2].map((c, i) => QMAP2[c]! * absmax2[Math.floor(i / 256)]!);
  assertClose(m8, m, { atol: 1e-3 * Math.max(...absmax1), rtol: 0.1, what: 'm' });
  assertClose(v8, v, { atol: 1e-3 * Math.max(...absmax2), rtol: 0.1, what: 'v' });
  m.forEach((x, i) =>
    assert.ok(x === 0 || Math.sign(m8[i]!) === Math.sign(x) || m8[i] === 0, `sign of m[${i}]`),
  );
  for (const t of [p, grad]) t.dispose();
  disposeState(s);
});

test('adamw8bit: cpu equals ref to the last bit over steps, odd sizes, partial blocks, non-finite, denormal and overflowing gradients, 1 and 2 threads', async () => {
  const r = rng(7);
  const threads = cpu.threads;
  for (const n of [1, 255, 256, 257, 1000, 4097, 70_001]) {
    cpu.threads = n % 2 === 0 ? 1 : Math.max(2, threads);
    for (const weightDecay of [0, 0.05]) {
      const w0 = Float32Array.from(randn(n, n));
      const pc = cpu.fromArray(w0, [n]);
      const pr = ref.fromArray(w0, [n]);
      const sc = freshState(cpu, n);
      const sr = freshState(ref, n);
      for (let step = 1; step <= 5; step++) {
        const g = Float32Array.from(randn(n, 100 * n + step, step === 3 ? 1e-4 : 0.1));
        // A fresh block of float32 denormals: its moments are denormal too, so a kernel that
        // flushed denormals to zero would store other codes and absmax.
        if (step === 1) for (let i = 256; i < Math.min(n, 512); i++) g[i] = ((i % 3) - 1) * 1e-40;
        if (step === 2) {
          g[Math.floor(r() * n)] = Number.NaN;
          g[Math.floor(r() * n)] = Number.POSITIVE_INFINITY;
          // A gradient whose square overflows float32: v = ∞, then NaN moments in later steps.
          if (n > 600) g[600] = 1e30;
        }
        const gc = cpu.fromArray(g, [n]);
        const gr = ref.fromArray(g, [n]);
        const o: AdamWOptions = {
          lr: 3e-3,
          beta1: 0.9,
          beta2: 0.995,
          eps: 1e-8,
          weightDecay,
          step,
        };
        cpu.adamw8bit(pc, gc, sc, o);
        ref.adamw8bit(pr, gr, sr, o);
        gc.dispose();
        gr.dispose();
        const what = `n=${n} wd=${weightDecay} step ${step}`;
        sameBits(await pc.read(), await pr.read(), `param ${what}`);
        for (const k of ['state1', 'state2', 'absmax1', 'absmax2'] as const)
          sameBits(await sc[k].read(), await sr[k].read(), `${k} ${what}`);
      }
      const what = `n=${n} wd=${weightDecay}`;
      assert.ok(
        (await pc.read()).some((x, i) => x !== w0[i]),
        `the update moved the weights (${what})`,
      );
      pc.dispose();
      pr.dispose();
      disposeState(sc);
      disposeState(sr);
    }
  }
  cpu.threads = threads;
});

test('adamw8bit: a non-finite gradient leaves its weight alone; bad arguments name the op and tensor', async () => {
  for (const be of [cpu, ref]) {
    const n = 10;
    const p = be.fromArray(
      Array.from({ length: n }, (_, i) => i + 1),
      [n],
    );
    const g = be.fromArray([Number.NaN, 1, 1, 1, 1, 1, 1, 1, Number.NEGATIVE_INFINITY, 1], [n]);
    const s = freshState(be, n);
    const o: AdamWOptions = {
      lr: 0.1,
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-8,
      weightDecay: 0,
      step: 1,
    };
    be.adamw8bit(p, g, s, o);
    const w = await p.read();
    assert.equal(w[0], 1);
    assert.equal(w[8], 9);
    assert.ok(w[1]! < 2);
    const prefix = be.name;
    assert.throws(
      () => be.adamw8bit(p, g, s, { ...o, step: 0 }),
      new RegExp(`${prefix}\\.adamw8bit: step must be an integer ≥ 1`),
    );
    const short = be.zeros([n - 1]);
    assert.throws(
      () => be.adamw8bit(p, short, s, o),
      new RegExp(`${prefix}\\.adamw8bit: grad has 9 elements, expected 10`),
    );
    const f32codes = be.zeros([n]);
    assert.throws(
      () => be.adamw8bit(p, g, { ...s, state1: f32codes }, o),
      /state1 must be u8, got f32/,
    );
    assert.throws(
      () => be.adamw8bit(p, g, { ...s, absmax2: be.zeros([2]) }, o),
      /absmax2 has 2 elements, expected 1/,
    );
    assert.throws(() => be.adamw8bit(p, p, s, o), /must not alias/);
    for (const t of [p, g, short, f32codes]) t.dispose();
    disposeState(s);
  }
});
