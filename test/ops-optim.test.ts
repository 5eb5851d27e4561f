// AdamW on every backend under test against ref (float64), over several steps with weight decay,
// at sizes around workgroup and SIMD widths.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { codeOfZero } from '../src/backends/adamw8bit-host.js';
import { createDynamicMap } from '../src/quant/dynamic-map.js';
import type { Backend } from '../src/tensor/backend.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';

const ref = await getBackend('ref');

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: adamw matches ref over 5 steps (weight decay on, odd sizes)`, async () => {
    const P = new Pairs(be, ref);
    try {
      for (const n of [1, 17, 257, 5003]) {
        const p = P.random([n]);
        const m = P.zeros([n]);
        const v = P.zeros([n]);
        for (let step = 1; step <= 5; step++) {
          const g = P.random([n], 0.1);
          const o = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step };
          be.adamw(p.t, g.t, m.t, v.t, o);
          ref.adamw(p.r, g.r, m.r, v.r, o);
        }
        await P.close(p, `param n=${n}`, { atol: 1e-6, rtol: 1e-5 });
        await P.close(m, `m n=${n}`, { atol: 1e-7, rtol: 1e-5 });
        await P.close(v, `v n=${n}`, { atol: 1e-9, rtol: 1e-5 });
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: adamw8bit matches ref over 6 steps (partial last block, a non-finite gradient, decay on)`, async () => {
    const signed = createDynamicMap(true);
    const unsigned = createDynamicMap(false);
    for (const n of [1, 7, 256, 1031]) {
      const blocks = Math.ceil(n / 256);
      const make = (b: Backend, dtype: 'f32' | 'f64') => ({
        state1: b.fromArray(new Uint8Array(n).fill(codeOfZero(signed)), [n], 'u8'),
        state2: b.fromArray(new Uint8Array(n).fill(codeOfZero(unsigned)), [n], 'u8'),
        absmax1: b.zeros([blocks], 'f32'),
        absmax2: b.zeros([blocks], 'f32'),
        qmap1: b.fromArray(signed, [256], 'f32'),
        qmap2: b.fromArray(unsigned, [256], 'f32'),
        param: b.fromArray(
          Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1)),
          [n],
          dtype,
        ),
      });
      const T = make(be, 'f32');
      const R = make(ref, 'f32');
      try {
        for (let step = 1; step <= 6; step++) {
          const g = Float32Array.from({ length: n }, (_, i) => 0.1 * Math.cos(i * 0.37 + step));
          if (n > 5 && step === 3) g[5] = Number.NaN;
          const gt = be.fromArray(g, [n]);
          const gr = ref.fromArray(g, [n]);
          const o = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step };
          be.adamw8bit(T.param, gt, T, o);
          ref.adamw8bit(R.param, gr, R, o);
          gt.dispose();
          gr.dispose();
        }
        const [pt, pr] = [await T.param.read(), await R.param.read()];
        for (let i = 0; i < n; i++)
          assert.ok(
            Math.abs(pt[i]! - pr[i]!) <= 1e-5 * (1 + Math.abs(pr[i]!)),
            `param[${i}] ${pt[i]} vs ${pr[i]} (n=${n})`,
          );
        const [c1t, c1r] = [await T.state1.read(), await R.state1.read()];
        let differ = 0;
        for (let i = 0; i < n; i++) if (Math.abs(c1t[i]! - c1r[i]!) > 1) differ++;
        assert.equal(differ, 0, `m codes more than one step apart (n=${n})`);
        const [a2t, a2r] = [await T.absmax2.read(), await R.absmax2.read()];
        for (let b = 0; b < blocks; b++)
          assert.ok(Math.abs(a2t[b]! - a2r[b]!) <= 1e-5 * a2r[b]!, `absmax2[${b}]`);
      } finally {
        for (const s of [T, R]) for (const t of Object.values(s)) t.dispose();
      }
    }
  });

  test(`${name}: adamw rejects aliasing, bad steps and betas`, () => {
    const a = be.zeros([4]);
    const b = be.zeros([4]);
    const c = be.zeros([4]);
    const o = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
    try {
      assert.throws(
        () => be.adamw(a, b, c, c, o),
        new RegExp(`${name}\\.adamw: m and v must not alias`),
      );
      assert.throws(
        () => be.adamw(a, b, c, be.zeros([4]), { ...o, step: 0 }),
        /step must be an integer/,
      );
      assert.throws(() => be.adamw(a, b, c, be.zeros([4]), { ...o, beta1: 1 }), /betas must be in/);
    } finally {
      for (const t of [a, b, c]) t.dispose();
    }
  });
}
