// AdamW on every backend under test against ref (float64), over several steps with weight decay,
// at sizes around workgroup and SIMD widths.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
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

  test(`${name}: adamw rejects aliasing, bad steps and betas`, () => {
    const a = be.zeros([4]);
    const b = be.zeros([4]);
    const c = be.zeros([4]);
    const o = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
    try {
      assert.throws(() => be.adamw(a, b, c, c, o), new RegExp(`${name}\\.adamw: m and v must not alias`));
      assert.throws(() => be.adamw(a, b, c, be.zeros([4]), { ...o, step: 0 }), /step must be an integer/);
      assert.throws(() => be.adamw(a, b, c, be.zeros([4]), { ...o, beta1: 1 }), /betas must be in/);
    } finally {
      for (const t of [a, b, c]) t.dispose();
    }
  });
}
