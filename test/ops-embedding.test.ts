// embedding and embeddingBackward on every backend under test against ref: repeated ids (the
// backward accumulates them in position order, bit-identical run to run), odd widths, n = 1; on
// webgpu tables split into binding windows (forced small limit, standing in for a 500 MiB table),
// and ids out of range raising a fault that the next read throws with the op name and the id.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { gemmTuning } from '../src/backends/webgpu/kernels/matmul.js';
import type { Backend } from '../src/tensor/backend.js';
import { Pairs, backendsUnderTest } from './backends-under-test.js';
import { rng } from './util.js';

const ref = await getBackend('ref');

function ids(n: number, vocab: number, seed: number): Int32Array {
  const r = rng(seed);
  // About n/3 distinct ids spread over the vocabulary, so repeats are common.
  const distinct = Math.max(1, Math.min(vocab, Math.ceil(n / 3)));
  const stride = Math.max(1, Math.floor(vocab / distinct));
  return Int32Array.from({ length: n }, () => (Math.floor(r() * distinct) * stride) % vocab);
}

async function checkShapes(
  P: Pairs,
  be: Backend,
  shapes: readonly [number, number, number][],
): Promise<void> {
  for (const [n, vocab, d] of shapes) {
    const idPair = P.pair(ids(n, vocab, n + vocab + d), [n], 'i32');
    const table = P.random([vocab, d]);
    const out = P.zeros([n, d]);
    be.embedding(idPair.t, table.t, out.t);
    ref.embedding(idPair.r, table.r, out.r);
    await P.close(out, `embedding n=${n} vocab=${vocab} d=${d}`, { atol: 0, rtol: 0 });
    const dout = P.random([n, d]);
    const dtable = P.random([vocab, d]);
    be.embeddingBackward(idPair.t, dout.t, dtable.t);
    ref.embeddingBackward(idPair.r, dout.r, dtable.r);
    await P.close(dtable, `embeddingBackward n=${n} vocab=${vocab} d=${d}`, {
      atol: 1e-6,
      rtol: 1e-6,
    });
  }
}

for (const { name, be } of await backendsUnderTest()) {
  test(`${name}: embedding and embeddingBackward match ref (repeated ids, odd widths, n = 1)`, async () => {
    const P = new Pairs(be, ref, 1);
    try {
      await checkShapes(P, be, [
        [1, 1, 1],
        [1, 7, 5],
        [9, 5, 3],
        [40, 11, 33],
        [300, 50, 17],
        [64, 1000, 260],
      ]);
    } finally {
      P.free();
    }
  });

  test(`${name}: embeddingBackward is deterministic (bit-identical on repeats with many repeated ids)`, async () => {
    const n = 500;
    const d = 37;
    const vocab = 4;
    const idT = be.fromArray(ids(n, vocab, 3), [n], 'i32');
    const dout = be.fromArray(
      Float32Array.from({ length: n * d }, (_, i) => Math.sin(i) * 1e3 + 1e-3 * Math.cos(i)),
      [n, d],
    );
    const runs: number[][] = [];
    try {
      for (let k = 0; k < 2; k++) {
        const dtable = be.zeros([vocab, d]);
        be.embeddingBackward(idT, dout, dtable);
        runs.push(Array.from(await dtable.read()));
        dtable.dispose();
      }
      assert.deepEqual(runs[1], runs[0]);
    } finally {
      idT.dispose();
      dout.dispose();
    }
  });

  test(`${name}: embedding ops reject bad shapes and dtypes with the op name`, () => {
    const idT = be.fromArray([0, 1], [2], 'i32');
    const table = be.zeros([4, 3]);
    try {
      assert.throws(() => be.embedding(idT, table, be.zeros([2, 4])), /embedding.*out/);
      assert.throws(
        () => be.embedding(be.zeros([2]), table, be.zeros([2, 3])),
        /embedding.*ids must be i32/,
      );
      assert.throws(
        () => be.embeddingBackward(idT, be.zeros([3, 3]), table),
        /embeddingBackward.*dout/,
      );
      assert.throws(() => be.embedding(idT, be.zeros([12]), be.zeros([2, 3])), /embedding.*table/);
    } finally {
      idT.dispose();
      table.dispose();
    }
  });

  if (name === 'webgpu') {
    test('webgpu: embedding tables larger than one binding run in windows (forced small limit)', async () => {
      const P = new Pairs(be, ref, 2);
      const saved = gemmTuning.maxBindingBytes;
      // 512 bytes of payload per binding: a few rows per window.
      gemmTuning.maxBindingBytes = 512 + 256;
      try {
        await checkShapes(P, be, [
          [30, 50, 17],
          [7, 9, 100],
          [5, 3, 200],
        ]);
      } finally {
        gemmTuning.maxBindingBytes = saved;
        P.free();
      }
    });

    test('webgpu: ids out of range raise a fault thrown at the next read, naming the op and the id', async () => {
      const idT = be.fromArray([1, 70000, 2], [3], 'i32');
      const table = be.zeros([5, 4]);
      const out = be.zeros([3, 4]);
      const dout = be.zeros([3, 4]);
      try {
        be.embedding(idT, table, out);
        await assert.rejects(out.read(), /embedding: id 70000 at position 1 is outside \[0, 5\)/);
        idT.write([1, 2, -1]);
        be.embeddingBackward(idT, dout, table);
        await assert.rejects(
          table.read(),
          /embeddingBackward: id -1 at position 2 is outside \[0, 5\)/,
        );
        idT.write([4, 0, 0]);
        be.embedding(idT, table, out);
        await out.read(); // the fault was consumed: valid ids read fine
      } finally {
        for (const t of [idT, table, out, dout]) t.dispose();
      }
    });
  }
}
