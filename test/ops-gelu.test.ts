// tanh-approximation GELU and GeGLU (Gemma's MLP) on every backend under test against ref
// (float64): odd sizes around SIMD widths and workgroup sizes, in-place forms, saturated tails and
// NaN propagation, argument errors. The backward passes are checked against finite differences in
// gradcheck.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';

const ref = await getBackend('ref');
const SIZES = [1, 7, 16, 17, 255, 257, 1000, 100_003];
const TOL = { atol: 2e-6, rtol: 2e-5 };

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: geluTanh, geglu and their backwards match ref`, async () => {
    const P = new Pairs(be, ref);
    try {
      for (const n of SIZES) {
        const x = P.random([n], 3);
        const up = P.random([n]);
        const dout = P.random([n]);
        const out = P.zeros([n]);
        be.geluTanh(x.t, out.t);
        ref.geluTanh(x.r, out.r);
        await P.close(out, `geluTanh n=${n}`, TOL);
        const dx = P.zeros([n]);
        be.geluTanhBackward(dout.t, x.t, dx.t);
        ref.geluTanhBackward(dout.r, x.r, dx.r);
        await P.close(dx, `geluTanhBackward n=${n}`, TOL);
        be.geglu(x.t, up.t, out.t);
        ref.geglu(x.r, up.r, out.r);
        await P.close(out, `geglu n=${n}`, TOL);
        const dgate = P.zeros([n]);
        const dup = P.zeros([n]);
        be.gegluBackward(dout.t, x.t, up.t, dgate.t, dup.t);
        ref.gegluBackward(dout.r, x.r, up.r, dgate.r, dup.r);
        await P.close(dgate, `geglu dgate n=${n}`, TOL);
        await P.close(dup, `geglu dup n=${n}`, TOL);
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: geluTanh and geglu in place (outputs overwrite their inputs)`, async () => {
    const P = new Pairs(be, ref);
    try {
      for (const n of [17, 1000]) {
        const x = P.random([n], 3);
        const want = P.zeros([n]);
        ref.geluTanh(x.r, want.r);
        be.geluTanh(x.t, x.t);
        await P.close({ t: x.t, r: want.r }, `geluTanh in place n=${n}`, TOL);

        const gate = P.random([n], 3);
        const up = P.random([n]);
        const dout = P.random([n]);
        const dg = P.zeros([n]);
        const du = P.zeros([n]);
        ref.gegluBackward(dout.r, gate.r, up.r, dg.r, du.r);
        const dx = P.zeros([n]);
        ref.geluTanhBackward(dout.r, gate.r, dx.r);
        const dcopy = P.pair(await dout.t.read(), [n]);
        be.geluTanhBackward(dcopy.t, gate.t, dcopy.t);
        await P.close({ t: dcopy.t, r: dx.r }, `geluTanhBackward into dout n=${n}`, TOL);
        // Crossed, as Gemma's backward may: dgate over up and dup over gate.
        be.gegluBackward(dout.t, gate.t, up.t, up.t, gate.t);
        await P.close({ t: up.t, r: dg.r }, `geglu dgate over up n=${n}`, TOL);
        await P.close({ t: gate.t, r: du.r }, `geglu dup over gate n=${n}`, TOL);
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: geluTanh saturates without overflow and keeps NaN`, async () => {
    const P = new Pairs(be, ref);
    try {
      const xs = [-3e38, -1e20, -200, -90, -12, -9.5, 0, 9.5, 12, 90, 200, 1e20, 3e38];
      const x = P.pair(xs, [xs.length]);
      const out = P.zeros([xs.length]);
      be.geluTanh(x.t, out.t);
      ref.geluTanh(x.r, out.r);
      await P.close(out, 'geluTanh extremes', { atol: 1e-30, rtol: 1e-6 });
      const ones = P.pair(new Float32Array(xs.length).fill(1), [xs.length]);
      const dx = P.zeros([xs.length]);
      be.geluTanhBackward(ones.t, x.t, dx.t);
      ref.geluTanhBackward(ones.r, x.r, dx.r);
      await P.close(dx, 'geluTanh slope at extremes', { atol: 1e-30, rtol: 1e-5 });
      const nan = P.pair([Number.NaN, 1], [2]);
      const o2 = P.zeros([2]);
      be.geluTanh(nan.t, o2.t);
      const got = await o2.t.read();
      assert.ok(Number.isNaN(got[0]), `gelu(NaN) = ${got[0]}`);
      if (name === 'cpu') {
        // The forward's NaN is what the trainer's non-finite checks see; the cpu slope keeps it
        // too (WGSL leaves min/max/clamp of NaN to the driver).
        be.geluTanhBackward(ones.t.rows(0, 2), nan.t, o2.t);
        assert.ok(Number.isNaN((await o2.t.read())[0]), 'gelu slope of NaN');
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: geglu rejects mismatched sizes and partial aliasing with the op name`, () => {
    const a = be.zeros([8]);
    const c = be.zeros([9]);
    try {
      assert.throws(() => be.geglu(a, c, a), new RegExp(`${name}\\.geglu: up has 9 elements`));
      assert.throws(
        () => be.geluTanh(a.rows(0, 4), a.rows(2, 6)),
        new RegExp(`${name}\\.geluTanh: out and x overlap partially`),
      );
      assert.throws(
        () => be.gegluBackward(a, a, a, c.rows(0, 8), c.rows(0, 8)),
        /dup and dgate must not alias/,
      );
    } finally {
      a.dispose();
      c.dispose();
    }
  });
}
