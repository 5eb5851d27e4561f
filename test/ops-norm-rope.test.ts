// RMSNorm (forward, input and weight gradients) and rotary embeddings (both layouts, forward and
// inverse, in place) on every backend under test against ref (float64); ref's backwards against
// float64 finite differences; faults for positions outside the tables.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { ropeTables } from '../src/backends/rope-tables.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';
import { checkGradients } from './finite-diff.js';
import { assertClose, randn, rng } from './util.js';

const ref = await getBackend('ref');
const GRAD_TOL = { atol: 1e-5, rtol: 1e-4 };

// [shape of x]: a single element, odd widths, rows over several weight-gradient chunks, width over
// one workgroup, rank 3.
const NORM_SHAPES: readonly (readonly number[])[] = [
  [1, 1],
  [3, 8],
  [5, 12],
  [7, 80],
  [65, 129],
  [300, 64],
  [4, 700],
  [2, 3, 5],
];

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: rmsnorm, its backward and the accumulated weight gradient match ref; repeats are bit-identical`, async () => {
    const P = new Pairs(be, ref, 100);
    try {
      for (const shape of NORM_SHAPES) {
        const d = shape[shape.length - 1]!;
        const n = shape.reduce((a, b) => a * b, 1) / d;
        const what = `[${shape.join(', ')}]`;
        const x = P.random(shape, 2);
        const w = P.random([d]);
        const out = P.zeros(shape);
        const rstd = P.zeros([n]);
        be.rmsnorm(x.t, w.t, 1e-5, out.t, rstd.t);
        ref.rmsnorm(x.r, w.r, 1e-5, out.r, rstd.r);
        await P.close(out, `rmsnorm out ${what}`);
        await P.close(rstd, `rmsnorm rstd ${what}`);
        const dout = P.random(shape);
        const dx = P.zeros(shape);
        const dw = P.random([d]); // accumulates onto random values
        be.rmsnormBackward(dout.t, x.t, w.t, rstd.t, dx.t, dw.t);
        ref.rmsnormBackward(dout.r, x.r, w.r, rstd.r, dx.r, dw.r);
        await P.close(dx, `rmsnorm dx ${what}`, GRAD_TOL);
        await P.close(dw, `rmsnorm dweight ${what}`, GRAD_TOL);
        // Without dweight the same dx; two accumulations from zero give identical bits.
        const dx2 = P.zeros(shape);
        be.rmsnormBackward(dout.t, x.t, w.t, rstd.t, dx2.t, null);
        assert.deepEqual(await dx2.t.read(), await dx.t.read(), `dx without dweight ${what}`);
        const dwA = P.zeros([d]);
        const dwB = P.zeros([d]);
        be.rmsnormBackward(dout.t, x.t, w.t, rstd.t, dx2.t, dwA.t);
        be.rmsnormBackward(dout.t, x.t, w.t, rstd.t, dx2.t, dwB.t);
        assert.deepEqual(await dwA.t.read(), await dwB.t.read(), `dweight repeat ${what}`);
        // dx written over dout.
        be.rmsnormBackward(dout.t, x.t, w.t, rstd.t, dout.t, null);
        assert.deepEqual(await dout.t.read(), await dx.t.read(), `dx in place of dout ${what}`);
        // In-place forward (out = x).
        be.rmsnorm(x.t, w.t, 1e-5, x.t, rstd.t);
        assertClose(await x.t.read(), await out.r.read(), {
          atol: 2e-6,
          rtol: 2e-5,
          what: `rmsnorm in place ${what}`,
        });
      }
      const x = P.zeros([3, 4]);
      assert.throws(
        () => be.rmsnorm(x.t, P.zeros([5]).t, 1e-5, P.zeros([3, 4]).t, P.zeros([3]).t),
        new RegExp(`${name}\\.rmsnorm: weight has shape \\[5\\], expected \\[4\\]`),
      );
      assert.throws(
        () => be.rmsnorm(x.t, P.zeros([4]).t, 1e-5, P.zeros([3, 4]).t, P.zeros([2]).t),
        /rstd has 2 elements, expected 3/,
      );
      assert.throws(
        () => be.rmsnorm(x.t, P.zeros([4]).t, -1, P.zeros([3, 4]).t, P.zeros([3]).t),
        /eps must be ≥ 0/,
      );
      assert.throws(
        () => be.rmsnormBackward(x.t, x.t, P.zeros([4]).t, P.zeros([3]).t, x.t, null),
        /dx and x must not alias/,
      );
      const dw = P.zeros([4]);
      assert.throws(
        () =>
          be.rmsnormBackward(x.t, P.zeros([3, 4]).t, dw.t, P.zeros([3]).t, P.zeros([3, 4]).t, dw.t),
        /dweight and weight must not alias/,
      );
    } finally {
      P.free();
    }
  });

  test(`${name}: rope matches ref in both layouts, forward and inverse, in place and round trip`, async () => {
    const P = new Pairs(be, ref, 200);
    try {
      // [B, T, H, D, R]: R rotated dims (R < D: partial rotary, the rest pass through; 60 of 80 is
      // Phi-4-mini's 0.75, 2 of 6 the narrowest table with odd pass-through).
      for (const [B, T, H, D, Rot] of [
        [1, 1, 1, 2, 2],
        [2, 5, 3, 12, 12],
        [1, 7, 2, 64, 64],
        [2, 3, 1, 128, 128],
        [1, 2, 5, 80, 80],
        [2, 3, 3, 80, 60],
        [1, 5, 2, 6, 2],
        [3, 2, 1, 14, 10],
      ] as const) {
        const maxPos = 40;
        const tables = ropeTables(Rot, maxPos, 10000);
        const cos = P.pair(tables.cos, [maxPos, Rot / 2]);
        const sin = P.pair(tables.sin, [maxPos, Rot / 2]);
        const r = rng(B * 1000 + T * 100 + D);
        // Include both ends of the table.
        const pos = Int32Array.from({ length: B * T }, (_, i) =>
          i === 0 ? maxPos - 1 : i === 1 ? 0 : Math.floor(r() * maxPos),
        );
        const positions = P.pair(pos, [B * T], 'i32');
        for (const layout of ['half', 'interleaved'] as const) {
          for (const inverse of [false, true]) {
            const what = `[${B}, ${T}, ${H}, ${D}] rotary ${Rot} ${layout} inverse=${inverse}`;
            const x = P.random([B, T, H, D]);
            const out = P.zeros([B, T, H, D]);
            be.rope(x.t, positions.t, cos.t, sin.t, layout, inverse, out.t);
            ref.rope(x.r, positions.r, cos.r, sin.r, layout, inverse, out.r);
            await P.close(out, `rope ${what}`);
            const original = await x.t.read();
            be.rope(x.t, positions.t, cos.t, sin.t, layout, inverse, x.t);
            assertClose(await x.t.read(), await out.r.read(), {
              atol: 2e-6,
              rtol: 2e-5,
              what: `rope in place ${what}`,
            });
            be.rope(x.t, positions.t, cos.t, sin.t, layout, !inverse, x.t);
            assertClose(await x.t.read(), original, {
              atol: 2e-6,
              rtol: 2e-5,
              what: `rope round trip ${what}`,
            });
          }
        }
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: rope rejects positions outside the tables (at the next read on a device) and bad shapes`, async () => {
    const P = new Pairs(be, ref, 300);
    try {
      const tables = ropeTables(8, 4, 10000);
      const cos = P.pair(tables.cos, [4, 4]).t;
      const sin = P.pair(tables.sin, [4, 4]).t;
      const x = P.random([1, 2, 1, 8]).t;
      for (const [bad, at] of [
        [[0, 4], 1],
        [[-1, 0], 0],
      ] as const) {
        const pos = P.pair(bad, [2], 'i32').t;
        await assert.rejects(
          async () => {
            be.rope(x, pos, cos, sin, 'half', false, x);
            await x.read();
          },
          new RegExp(
            `${name}\\.rope: position ${bad[at]} at index ${at} is outside the cos/sin tables \\[0, 4\\)`,
          ),
        );
      }
      // The fault is reported once: later work runs and reads normally.
      const pos = P.pair([3, 0], [2], 'i32').t;
      const out = P.zeros([1, 2, 1, 8]).t;
      be.rope(x, pos, cos, sin, 'half', false, out);
      assert.equal((await out.read()).length, 16);
      assert.throws(
        () =>
          be.rope(P.zeros([1, 2, 1, 6]).t, pos, cos, sin, 'half', false, P.zeros([1, 2, 1, 6]).t),
        /cos has shape \[4, 4\], expected \[4, 3\]/,
      );
      assert.throws(
        () =>
          be.rope(P.zeros([1, 2, 1, 7]).t, pos, cos, sin, 'half', false, P.zeros([1, 2, 1, 7]).t),
        /head dim must be even/,
      );
      assert.throws(
        () => be.rope(x, pos, cos, sin, 'other' as never, false, x),
        new RegExp(`${name}\\.rope: unknown layout`),
      );
    } finally {
      P.free();
    }
  });
}

test('ref: rmsnorm backward (dx, accumulated dweight) equals float64 finite differences', () => {
  for (const shape of [
    [1, 1],
    [3, 7],
    [2, 2, 4],
  ] as readonly (readonly number[])[]) {
    const d = shape[shape.length - 1]!;
    const n = shape.reduce((a, b) => a * b, 1) / d;
    const x = ref.fromArray(randn(n * d, 9 + d), shape, 'f64');
    const weight = ref.fromArray(randn(d, 10 + d), [d], 'f64');
    const out = ref.zeros(shape, 'f64');
    const rstd = ref.zeros([n], 'f64');
    const R = ref.fromArray(randn(n * d, 12), shape, 'f64');
    ref.rmsnorm(x, weight, 1e-5, out, rstd);
    const dx = ref.zeros(shape, 'f64');
    const dweight = ref.fromArray(new Array(d).fill(0.25), [d], 'f64');
    ref.rmsnormBackward(R, x, weight, rstd, dx, dweight);
    const dw = Array.from(dweight.data, (v) => v - 0.25);
    checkGradients(
      `rmsnorm [${shape.join(', ')}]`,
      { x, weight },
      out,
      () => ref.rmsnorm(x, weight, 1e-5, out, rstd),
      { x: dx.data, weight: dw },
      R,
    );
  }
});

test('ref: rope inverse is its backward (finite differences, both layouts, odd head count, partial rotary)', () => {
  for (const [D, Rot] of [
    [4, 4],
    [10, 6],
  ] as const) {
    const [B, T, H] = [1, 3, 3];
    const tables = ropeTables(Rot, 8, 10000, null, 'f64');
    const cos = ref.fromArray(tables.cos, [8, Rot / 2], 'f64');
    const sin = ref.fromArray(tables.sin, [8, Rot / 2], 'f64');
    const positions = ref.fromArray([7, 0, 4], [B * T], 'i32');
    for (const layout of ['half', 'interleaved'] as const) {
      const x = ref.fromArray(randn(B * T * H * D, 21), [B, T, H, D], 'f64');
      const out = ref.zeros(x.shape, 'f64');
      const R = ref.fromArray(randn(x.size, 22), x.shape, 'f64');
      const dx = ref.zeros(x.shape, 'f64');
      ref.rope(R, positions, cos, sin, layout, true, dx);
      checkGradients(
        `rope ${layout} D=${D} rotary ${Rot}`,
        { x },
        out,
        () => ref.rope(x, positions, cos, sin, layout, false, out),
        { x: dx.data },
        R,
      );
    }
  }
});
