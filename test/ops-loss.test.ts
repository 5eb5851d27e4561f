// Cross-entropy on every backend under test against ref (float64): ignore index, gradScale,
// dlogits aliasing logits, large logits, vocabularies from 1 to 152k, final-logit soft-capping;
// labels out of range fail (on a device: at the next read); ref's gradient against float64 finite
// differences, soft-capped too.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';
import { FD_TOL, numericGrad } from './finite-diff.js';
import { assertClose, randn, rng } from './util.js';

const ref = await getBackend('ref');
const IGNORE = -100;

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: crossEntropy matches ref (ignore index, gradScale, dlogits aliasing logits)`, async () => {
    const P = new Pairs(be, ref, 400);
    try {
      for (const [n, V] of [
        [1, 1],
        [3, 5],
        [9, 17],
        [40, 1000],
        [5, 32003],
        [2, 152_064],
      ] as const) {
        const what = `n=${n} V=${V}`;
        const r = rng(n * 7 + V);
        const labels = Int32Array.from({ length: n }, (_, i) =>
          i % 4 === 3 ? IGNORE : i === 0 ? V - 1 : Math.floor(r() * V),
        );
        const logits = P.random([n, V], 4);
        const y = P.pair(labels, [n], 'i32');
        const losses = P.zeros([n]);
        const dlogits = P.pair(new Float32Array(n * V).fill(Number.NaN), [n, V]); // overwritten, ignored rows too
        be.crossEntropy(logits.t, y.t, IGNORE, losses.t, dlogits.t, 0.25);
        ref.crossEntropy(logits.r, y.r, IGNORE, losses.r, dlogits.r, 0.25);
        await P.close(losses, `crossEntropy losses ${what}`, { atol: 1e-5, rtol: 1e-5 });
        await P.close(dlogits, `crossEntropy dlogits ${what}`, { atol: 1e-7, rtol: 1e-4 });
        const lossesOnly = P.zeros([n]);
        be.crossEntropy(logits.t, y.t, IGNORE, lossesOnly.t, null, 1);
        assert.deepEqual(
          await lossesOnly.t.read(),
          await losses.t.read(),
          `losses without dlogits ${what}`,
        );
        // The gradient may overwrite the logits.
        be.crossEntropy(logits.t, y.t, IGNORE, lossesOnly.t, logits.t, 0.25);
        assert.deepEqual(await logits.t.read(), await dlogits.t.read(), `dlogits in place ${what}`);
      }
      // Large logits: a stable log-sum-exp.
      const big = P.pair([1000, 0, -1000, 999, -50, 60, 70, -80], [2, 4]);
      const y = P.pair([3, 0], [2], 'i32');
      const loss = P.zeros([2]);
      const grad = P.zeros([2, 4]);
      be.crossEntropy(big.t, y.t, IGNORE, loss.t, grad.t, 1);
      ref.crossEntropy(big.r, y.r, IGNORE, loss.r, grad.r, 1);
      await P.close(loss, 'crossEntropy large logits');
      await P.close(grad, 'crossEntropy large logits dlogits', { atol: 1e-7, rtol: 1e-5 });
      // Every row ignored (a padding-only batch): zero losses and gradients.
      const logits = P.random([3, 6]);
      const ignored = P.pair([IGNORE, IGNORE, IGNORE], [3], 'i32');
      const l = P.pair([1, 1, 1], [3]);
      const g = P.random([3, 6]);
      be.crossEntropy(logits.t, ignored.t, IGNORE, l.t, g.t, 1);
      assert.deepEqual(Array.from(await l.t.read()), [0, 0, 0]);
      assert.deepEqual(Array.from(await g.t.read()), new Array(18).fill(0));
    } finally {
      P.free();
    }
  });

  test(`${name}: crossEntropy with final-logit soft-capping matches ref and equals softcap then crossEntropy`, async () => {
    const P = new Pairs(be, ref, 450);
    try {
      for (const [n, V, cap] of [
        [1, 1, 30],
        [3, 17, 2],
        [9, 1000, 30],
        [2, 32003, 10],
      ] as const) {
        const what = `n=${n} V=${V} cap=${cap}`;
        const r = rng(n * 11 + V);
        const labels = Int32Array.from({ length: n }, (_, i) =>
          i % 4 === 3 ? IGNORE : Math.floor(r() * V),
        );
        const logits = P.random([n, V], 2 * cap); // many logits past the cap
        const y = P.pair(labels, [n], 'i32');
        const losses = P.zeros([n]);
        const dlogits = P.pair(new Float32Array(n * V).fill(Number.NaN), [n, V]);
        const opts = { softcap: cap };
        be.crossEntropy(logits.t, y.t, IGNORE, losses.t, dlogits.t, 0.5, opts);
        ref.crossEntropy(logits.r, y.r, IGNORE, losses.r, dlogits.r, 0.5, opts);
        await P.close(losses, `capped losses ${what}`, { atol: 1e-5, rtol: 1e-5 });
        await P.close(dlogits, `capped dlogits ${what}`, { atol: 1e-7, rtol: 1e-4 });
        // The fused form equals capping first (the loss) and the chain rule (the gradient).
        const capped = P.zeros([n, V]);
        be.softcap(logits.t, cap, capped.t);
        const plain = P.zeros([n]);
        const dcapped = P.zeros([n, V]);
        be.crossEntropy(capped.t, y.t, IGNORE, plain.t, dcapped.t, 0.5);
        be.softcapBackward(dcapped.t, logits.t, cap, dcapped.t);
        const close = { atol: 1e-6, rtol: 1e-5 };
        assertClose(await losses.t.read(), await plain.t.read(), { ...close, what });
        assertClose(await dlogits.t.read(), await dcapped.t.read(), { ...close, what });
        // In place, as the chunked loss runs it.
        be.crossEntropy(logits.t, y.t, IGNORE, plain.t, logits.t, 0.5, opts);
        assert.deepEqual(await logits.t.read(), await dlogits.t.read(), `in place ${what}`);
      }
      const l = P.random([2, 3]).t;
      assert.throws(
        () =>
          be.crossEntropy(l, P.pair([0, 1], [2], 'i32').t, IGNORE, P.zeros([2]).t, null, 1, {
            softcap: -2,
          }),
        new RegExp(`${name}\\.crossEntropy: softcap must be a positive finite number, got -2`),
      );
    } finally {
      P.free();
    }
  });

  test(`${name}: crossEntropy rejects labels outside [0, V) other than the ignore index`, async () => {
    const P = new Pairs(be, ref, 500);
    try {
      const logits = P.random([2, 5]).t;
      const losses = P.zeros([2]).t;
      for (const [bad, row] of [
        [[0, 5], 1],
        [[-1, 0], 0],
        [[IGNORE + 1, 1], 0],
      ] as const) {
        const y = P.pair(bad, [2], 'i32').t;
        await assert.rejects(
          async () => {
            be.crossEntropy(logits, y, IGNORE, losses, null, 1);
            await losses.read();
          },
          new RegExp(
            `${name}\\.crossEntropy: label ${bad[row]} at row ${row} is out of range \\[0, 5\\)`,
          ),
        );
      }
      // Reported once; the next call with good labels reads normally.
      const y = P.pair([0, IGNORE], [2], 'i32').t;
      be.crossEntropy(logits, y, IGNORE, losses, null, 1);
      const got = await losses.read();
      assert.ok(got[0]! > 0 && got[1] === 0);
      assert.throws(
        () => be.crossEntropy(logits, y, IGNORE, P.zeros([3]).t, null, 1),
        new RegExp(`${name}\\.crossEntropy: losses has 3 elements, expected 2`),
      );
      assert.throws(
        () => be.crossEntropy(logits, y, IGNORE, losses, P.zeros([2, 4]).t, 1),
        /dlogits has shape/,
      );
      assert.throws(
        () =>
          be.crossEntropy(logits, y, IGNORE, losses, logits.rows(1, 2).view([1, 5]) as never, 1),
        /dlogits has shape/,
      );
      assert.throws(
        () => be.crossEntropy(logits, y, IGNORE, logits.view([10]).rows(0, 2), null, 1),
        /losses and logits must not alias/,
      );
      assert.throws(
        () => be.crossEntropy(logits, y, IGNORE, losses, null, Number.NaN),
        /gradScale must be a finite number/,
      );
    } finally {
      P.free();
    }
  });
}

test('ref: crossEntropy gradient equals float64 finite differences (ignore index, gradScale, V = 1)', () => {
  for (const [n, V, labels] of [
    [4, 3, [2, IGNORE, 0, 1]],
    [2, 1, [0, IGNORE]],
  ] as const) {
    const logits = ref.fromArray(randn(n * V, 600 + V, 2), [n, V], 'f64');
    const y = ref.fromArray(labels, [n], 'i32');
    const losses = ref.zeros([n], 'f64');
    const dlogits = ref.zeros([n, V], 'f64');
    const gradScale = -0.6;
    ref.crossEntropy(logits, y, IGNORE, losses, dlogits, gradScale);
    const loss = () => {
      ref.crossEntropy(logits, y, IGNORE, losses, null, 0);
      return gradScale * Array.from(losses.data).reduce((s, v) => s + v, 0);
    };
    assertClose(dlogits.data, numericGrad(logits, loss), {
      ...FD_TOL,
      what: `crossEntropy dlogits n=${n} V=${V}`,
    });
  }
});

test('ref: soft-capped crossEntropy gradient equals float64 finite differences', () => {
  const [n, V, cap] = [4, 6, 1.5];
  const logits = ref.fromArray(randn(n * V, 650, 3), [n, V], 'f64');
  const y = ref.fromArray([2, IGNORE, 0, 5], [n], 'i32');
  const losses = ref.zeros([n], 'f64');
  const dlogits = ref.zeros([n, V], 'f64');
  ref.crossEntropy(logits, y, IGNORE, losses, dlogits, 0.8, { softcap: cap });
  const loss = () => {
    ref.crossEntropy(logits, y, IGNORE, losses, null, 0, { softcap: cap });
    return 0.8 * Array.from(losses.data).reduce((s, v) => s + v, 0);
  };
  assertClose(dlogits.data, numericGrad(logits, loss), { ...FD_TOL, what: 'capped dlogits' });
});
