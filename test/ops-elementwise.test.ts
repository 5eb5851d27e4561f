// Elementwise ops (fill, copy, add, scale, axpy, sum, sum of squares, soft-capping, SwiGLU, dropout)
// on every backend under test against ref (float64), at sizes around SIMD widths, workgroup sizes
// and grid caps; ref's soft-cap backward against float64 finite differences.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';
import { checkGradients } from './finite-diff.js';
import { randn } from './util.js';

const ref = await getBackend('ref');
const SIZES = [1, 7, 16, 17, 255, 257, 1000, 100_003];

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: fill, copy, add, scale, axpy match ref (including in-place forms)`, async () => {
    const P = new Pairs(be, ref);
    try {
      for (const n of SIZES) {
        const a = P.random([n]);
        const b = P.random([n]);
        const out = P.zeros([n]);
        be.fill(out.t, 2.5);
        ref.fill(out.r, 2.5);
        await P.close(out, `fill n=${n}`, { atol: 0, rtol: 0 });
        be.copy(a.t, out.t);
        ref.copy(a.r, out.r);
        await P.close(out, `copy n=${n}`, { atol: 0, rtol: 0 });
        be.add(a.t, b.t, out.t);
        ref.add(a.r, b.r, out.r);
        await P.close(out, `add n=${n}`);
        be.add(out.t, b.t, out.t);
        ref.add(out.r, b.r, out.r);
        await P.close(out, `add in place n=${n}`);
        be.scale(out.t, -0.75, out.t);
        ref.scale(out.r, -0.75, out.r);
        await P.close(out, `scale in place n=${n}`);
        be.axpy(0.3, a.t, out.t);
        ref.axpy(0.3, a.r, out.r);
        await P.close(out, `axpy n=${n}`);
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: fill and copy of i32 and u8 tensors, including u8 views at odd byte offsets`, async () => {
    const P = new Pairs(be, ref);
    try {
      for (const n of [1, 3, 5, 17, 1001]) {
        const ints = P.pair(
          Int32Array.from({ length: n }, (_, i) => i * 7 - 3),
          [n],
          'i32',
        );
        const dst = P.zeros([n], 'i32');
        be.copy(ints.t, dst.t);
        ref.copy(ints.r, dst.r);
        await P.equal(dst, `i32 copy n=${n}`);
        be.fill(dst.t, -5);
        ref.fill(dst.r, -5);
        await P.equal(dst, `i32 fill n=${n}`);
        const bytes = P.pair(
          Uint8Array.from({ length: n + 6 }, (_, i) => (i * 37 + 11) & 0xff),
          [n + 6],
          'u8',
        );
        const target = P.pair(
          Uint8Array.from({ length: n + 6 }, (_, i) => (i * 13) & 0xff),
          [n + 6],
          'u8',
        );
        // Views at byte offsets 1..3 (not word aligned): neighbours must be untouched.
        be.copy(bytes.t.rows(1, n + 1), target.t.rows(3, n + 3));
        ref.copy(bytes.r.rows(1, n + 1), target.r.rows(3, n + 3));
        await P.equal(target, `u8 copy of a view n=${n}`);
        be.fill(target.t.rows(2, n + 1), 0xab);
        ref.fill(target.r.rows(2, n + 1), 0xab);
        await P.equal(target, `u8 fill of a view n=${n}`);
        const w = Uint8Array.from({ length: n }, (_, i) => (i * 5 + 1) & 0xff);
        target.t.rows(1, n + 1).write(w);
        target.r.rows(1, n + 1).write(w);
        await P.equal(target, `u8 write to a view n=${n}`);
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: sumOfSquares and sum (overwrite and accumulate), swiglu and its backward match ref`, async () => {
    const P = new Pairs(be, ref);
    try {
      for (const n of SIZES) {
        const x = P.random([n]);
        const s = P.zeros([1]);
        be.sumOfSquares(x.t, s.t, false);
        ref.sumOfSquares(x.r, s.r, false);
        await P.close(s, `sumOfSquares n=${n}`, { atol: 1e-6, rtol: 1e-5 });
        be.sumOfSquares(x.t, s.t, true);
        ref.sumOfSquares(x.r, s.r, true);
        await P.close(s, `sumOfSquares accumulate n=${n}`, { atol: 1e-6, rtol: 1e-5 });
        be.sum(x.t, s.t, true);
        ref.sum(x.r, s.r, true);
        await P.close(s, `sum accumulate n=${n}`, { atol: 1e-5, rtol: 1e-5 });
        be.sum(x.t, s.t, false);
        ref.sum(x.r, s.r, false);
        await P.close(s, `sum n=${n}`, { atol: 1e-5, rtol: 1e-5 });
        const gate = P.random([n], 2);
        const up = P.random([n]);
        const out = P.zeros([n]);
        be.swiglu(gate.t, up.t, out.t);
        ref.swiglu(gate.r, up.r, out.r);
        await P.close(out, `swiglu n=${n}`, { atol: 1e-6, rtol: 1e-5 });
        const dout = P.random([n]);
        const dg = P.zeros([n]);
        const du = P.zeros([n]);
        be.swigluBackward(dout.t, gate.t, up.t, dg.t, du.t);
        ref.swigluBackward(dout.r, gate.r, up.r, dg.r, du.r);
        await P.close(dg, `swiglu dgate n=${n}`, { atol: 1e-6, rtol: 1e-5 });
        await P.close(du, `swiglu dup n=${n}`, { atol: 1e-6, rtol: 1e-5 });
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: softcap and its backward match ref (caps 0.5 to 50, large and tiny inputs, in place)`, async () => {
    const P = new Pairs(be, ref, 90);
    try {
      for (const n of SIZES) {
        for (const cap of [0.5, 30, 50]) {
          const what = `n=${n} cap=${cap}`;
          const x = P.random([n], cap); // around ±cap: the curved part of tanh
          const out = P.zeros([n]);
          be.softcap(x.t, cap, out.t);
          ref.softcap(x.r, cap, out.r);
          await P.close(out, `softcap ${what}`, { atol: 1e-6 * cap, rtol: 1e-5 });
          const dout = P.random([n]);
          const dx = P.zeros([n]);
          be.softcapBackward(dout.t, x.t, cap, dx.t);
          ref.softcapBackward(dout.r, x.r, cap, dx.r);
          await P.close(dx, `softcap backward ${what}`, { atol: 1e-6, rtol: 1e-5 });
          // In place: out = x, dx = dout.
          be.softcap(x.t, cap, x.t);
          be.softcapBackward(dout.t, P.random([n], cap).t, cap, dout.t);
          assert.ok(
            (await x.t.read()).every((v) => Math.abs(v) <= cap),
            `softcap in place ${what}`,
          );
        }
      }
      // Saturation and the region around 0 (relative accuracy there).
      const edge = P.pair([1e9, -1e9, 400, -400, 1e-30, -3e-7, 0, 2e-3], [8]);
      const out = P.zeros([8]);
      be.softcap(edge.t, 20, out.t);
      ref.softcap(edge.r, 20, out.r);
      await P.close(out, 'softcap saturation and tiny inputs', { atol: 1e-36, rtol: 1e-6 });
      assert.throws(() => be.softcap(edge.t, 0, out.t), /softcap: cap must be a positive finite/);
    } finally {
      P.free();
    }
  });

  test(`${name}: dropout masks equal ref's bit for bit (p = 0, 0.1, 0.5, 0.999; seeds near 2^32)`, async () => {
    const P = new Pairs(be, ref);
    try {
      for (const n of [1, 17, 100_003]) {
        for (const [p, seed] of [
          [0, 1],
          [0.1, 42],
          [0.5, 4294967295],
          [0.999, 7],
        ] as const) {
          const x = P.random([n]);
          const out = P.zeros([n]);
          be.dropout(x.t, p, seed, out.t);
          ref.dropout(x.r, p, seed, out.r);
          const got = await out.t.read();
          const want = await out.r.read();
          for (let i = 0; i < n; i++) {
            assert.equal(
              got[i] === 0,
              want[i] === 0,
              `dropout mask p=${p} seed=${seed} n=${n} at ${i}`,
            );
          }
          await P.close(out, `dropout values p=${p} n=${n}`, { atol: 0, rtol: 1e-7 });
        }
      }
    } finally {
      P.free();
    }
  });

  test(`${name}: copyColumns splits and joins column blocks like ref (fused qkv / gate_up), bounds checked`, async () => {
    const P = new Pairs(be, ref, 700);
    try {
      // [rows, src cols, dst cols, srcCol, dstCol, width]: a fused qkv split (GQA widths), the join
      // back, a single column, odd sizes, a view of rows.
      for (const [n, a, b, sc, dc, w] of [
        [5, 24, 8, 16, 0, 8],
        [3, 7, 11, 0, 4, 7],
        [1, 1, 1, 0, 0, 1],
        [17, 130, 65, 65, 0, 65],
        [4, 9, 9, 2, 3, 5],
      ] as const) {
        const src = P.random([n, a]);
        const dst = P.random([n, b]);
        be.copyColumns(src.t, sc, dst.t, dc, w);
        ref.copyColumns(src.r, sc, dst.r, dc, w);
        await P.close(dst, `copyColumns [${n}, ${a}] → [${n}, ${b}] at ${sc} → ${dc} × ${w}`, {
          atol: 0,
          rtol: 0,
        });
      }
      const big = P.random([6, 10]);
      const rows = P.random([3, 4]);
      be.copyColumns(big.t.rows(2, 5), 6, rows.t, 0, 4);
      ref.copyColumns(big.r.rows(2, 5), 6, rows.r, 0, 4);
      await P.close(rows, 'copyColumns from a row view', { atol: 0, rtol: 0 });
      const x = P.zeros([2, 4]).t;
      assert.throws(
        () => be.copyColumns(x, 2, P.zeros([2, 4]).t, 0, 3),
        new RegExp(`${name}\\.copyColumns: columns 2\\.\\.5 exceed src's 4`),
      );
      assert.throws(() => be.copyColumns(x, 0, P.zeros([3, 4]).t, 0, 1), /dst has 3 rows, src 2/);
      assert.throws(() => be.copyColumns(x, 0, x, 2, 2), /src and dst/);
    } finally {
      P.free();
    }
  });

  test(`${name}: elementwise ops reject mismatched sizes and partial aliasing with the op name`, () => {
    const a = be.zeros([8]);
    const b = be.zeros([9]);
    try {
      assert.throws(() => be.add(a, b, a), new RegExp(`${name}\\.add: b has 9 elements`));
      assert.throws(() => be.add(a.rows(0, 4), a.rows(0, 4), a.rows(2, 6)), /overlap partially/);
      assert.throws(
        () => be.axpy(1, a.rows(0, 4), a.rows(1, 5)),
        /overlap partially|must not alias/,
      );
    } finally {
      a.dispose();
      b.dispose();
    }
  });
}

test('ref: softcap backward equals float64 finite differences', () => {
  for (const cap of [0.7, 5]) {
    const x = ref.fromArray(randn(23, 91, 3), [23], 'f64');
    const out = ref.zeros([23], 'f64');
    const R = ref.fromArray(randn(23, 92), [23], 'f64');
    const dx = ref.zeros([23], 'f64');
    ref.softcapBackward(R, x, cap, dx);
    checkGradients(`softcap ${cap}`, { x }, out, () => ref.softcap(x, cap, out), { x: dx.data }, R);
  }
});
