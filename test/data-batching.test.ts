// Batches from real tokenized ViGGO examples: pre-shifted labels, packing that never lets one example
// attend to another (checked through the reference attention kernel), padding with length groups,
// and seeded shuffling that resumes exactly from a cursor.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { RefBackend } from '../src/backends/ref/index.js';
import { Batcher, IGNORE_INDEX, type Batch, type DataCursor } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import { PromptTemplate } from '../src/data/prompt-template.js';
import type { TokenizedExample } from '../src/data/tokenize.js';
import { mix32, uniformAt } from '../src/tensor/rng.js';
import { maxAbsDiff } from './util.js';
import { tinyLlamaTokenizer } from './data-util.js';

let examples: TokenizedExample[];
let padId: number;
before(async () => {
  const tok = tinyLlamaTokenizer();
  padId = tok.eosId!;
  const ds = await loadDataset('fixtures/datasets/viggo/train.csv', tok, {
    maxSeqLen: 256,
    columns: { completion: 'mr' },
    promptTemplate: new PromptTemplate('Target sentence: {ref}\nMeaning representation:\n'),
    validFraction: 0,
  });
  examples = ds.train;
});

const keyOf = (ids: ArrayLike<number>) => Array.from(ids).join(',');

/** Splits each row of a batch into its segments: [start, end) and segment id. */
function segmentsOf(batch: Batch, row: number): { start: number; end: number; id: number }[] {
  const out: { start: number; end: number; id: number }[] = [];
  const base = row * batch.seqLen;
  for (let t = 0; t < batch.seqLen; t++) {
    const id = batch.segmentIds[base + t]!;
    if (t === 0 || id !== batch.segmentIds[base + t - 1]) out.push({ start: t, end: t + 1, id });
    else out[out.length - 1]!.end = t + 1;
  }
  return out;
}

/** Checks one batch against the examples it holds; returns the example keys it contains. */
function checkBatch(batch: Batch, byKey: Map<string, TokenizedExample>): string[] {
  const found: string[] = [];
  let loss = 0;
  for (let r = 0; r < batch.batchSize; r++) {
    const base = r * batch.seqLen;
    const segments = segmentsOf(batch, r);
    segments.forEach((seg, s) => {
      assert.equal(seg.id, s, 'segment ids count up within a row and never repeat');
      const ids = batch.inputIds.subarray(base + seg.start, base + seg.end);
      const example = byKey.get(keyOf(ids));
      const isPadding = s === segments.length - 1 && example === undefined;
      if (isPadding) {
        assert.ok(ids.every((id) => id === padId));
      } else {
        assert.ok(example, `row ${r} segment ${s} is one whole example`);
        found.push(keyOf(ids));
      }
      for (let t = seg.start; t < seg.end; t++) {
        assert.equal(
          batch.positions[base + t],
          t - seg.start,
          'positions restart at 0 per example',
        );
        const label = batch.labels[base + t]!;
        const within = t - seg.start;
        // Pre-shifted: label at t is the next token of the same example when it is a target.
        const want =
          !isPadding && t + 1 < seg.end && example!.targets[within + 1]
            ? example!.ids[within + 1]!
            : IGNORE_INDEX;
        assert.equal(label, want, `row ${r} position ${t}`);
        if (label !== IGNORE_INDEX) loss++;
      }
    });
  }
  assert.equal(batch.numLossTokens, loss);
  return found;
}

/** Deterministic q/k/v features of a token that depend on its id AND position (as RoPE makes them). */
function features(
  ids: ArrayLike<number>,
  positions: ArrayLike<number>,
  heads: number,
  dim: number,
  salt: number,
): Float64Array {
  const out = new Float64Array(ids.length * heads * dim);
  for (let t = 0; t < ids.length; t++) {
    const seed = mix32(mix32(ids[t]! + salt) ^ (positions[t]! * 0x9e3779b1));
    for (let e = 0; e < heads * dim; e++) out[t * heads * dim + e] = uniformAt(seed, e) * 2 - 1;
  }
  return out;
}

function runAttention(
  ids: ArrayLike<number>,
  positions: ArrayLike<number>,
  B: number,
  T: number,
  segmentIds: Int32Array | null,
): Float64Array {
  const backend = new RefBackend();
  const [H, Hkv, D] = [2, 1, 4];
  const q = backend.fromArray(features(ids, positions, H, D, 1), [B, T, H, D], 'f64');
  const k = backend.fromArray(features(ids, positions, Hkv, D, 2), [B, T, Hkv, D], 'f64');
  const v = backend.fromArray(features(ids, positions, Hkv, D, 3), [B, T, Hkv, D], 'f64');
  const out = backend.zeros([B, T, H, D], 'f64');
  const lse = backend.zeros([B, H, T], 'f64');
  const seg = segmentIds ? backend.fromArray(segmentIds, [B, T], 'i32') : null;
  backend.attention(q, k, v, out, lse, { scale: 0.5, segmentIds: seg });
  return out.data as Float64Array;
}

test('packing: every row is whole examples + padding, labels pre-shifted and masked, each example once per epoch', () => {
  const byKey = new Map(examples.map((e) => [keyOf(e.ids), e]));
  const batcher = new Batcher(examples, { batchSize: 4, seqLen: 256, padId, seed: 7 });
  const seen: string[] = [];
  let slots = 0;
  for (const batch of batcher.epoch(0)) {
    assert.equal(batch.seqLen, 256);
    seen.push(...checkBatch(batch, byKey));
    slots += batch.inputIds.length;
  }
  // Every example exactly once (ViGGO repeats a few rows, so compare as multisets).
  assert.deepEqual(seen.sort(), examples.map((e) => keyOf(e.ids)).sort());
  const tokens = examples.reduce((n, e) => n + e.ids.length, 0);
  // First-fit over open rows packs ViGGO's ~80-token examples into 256-token rows tightly.
  assert.ok(tokens / slots > 0.9, `packing efficiency ${(tokens / slots).toFixed(3)}`);
});

test('packing: attention with the batch segment ids gives each example exactly what it gets alone', () => {
  const batcher = new Batcher(examples, { batchSize: 2, seqLen: 256, padId, seed: 3 });
  const batch = batcher.epoch(0).next().value as Batch;
  const [H, D] = [2, 4];
  const packed = runAttention(
    batch.inputIds,
    batch.positions,
    batch.batchSize,
    batch.seqLen,
    batch.segmentIds,
  );
  const unsegmented = runAttention(
    batch.inputIds,
    batch.positions,
    batch.batchSize,
    batch.seqLen,
    null,
  );
  let checked = 0;
  let leakWithoutSegments = 0;
  for (let r = 0; r < batch.batchSize; r++) {
    for (const seg of segmentsOf(batch, r)) {
      const ids = batch.inputIds.subarray(r * batch.seqLen + seg.start, r * batch.seqLen + seg.end);
      if (ids.every((id) => id === padId)) continue;
      // The example alone, with positions 0..L-1 computed here (not taken from the batch).
      const L = ids.length;
      const alone = runAttention(
        ids,
        Array.from({ length: L }, (_, t) => t),
        1,
        L,
        null,
      );
      const from = (r * batch.seqLen + seg.start) * H * D;
      assert.ok(
        maxAbsDiff(packed.subarray(from, from + L * H * D), alone) < 1e-12,
        `row ${r} segment ${seg.id}`,
      );
      leakWithoutSegments = Math.max(
        leakWithoutSegments,
        maxAbsDiff(unsegmented.subarray(from, from + L * H * D), alone),
      );
      checked++;
    }
  }
  assert.ok(checked >= 4, `checked ${checked} examples`);
  // The check is sensitive: without segment ids, later examples do see earlier ones.
  assert.ok(leakWithoutSegments > 1e-3);
});

test('shuffling is seeded per epoch and resumes exactly from a cursor', () => {
  const options = { batchSize: 3, seqLen: 256, padId, seed: 11 };
  const a = new Batcher(examples, options);
  const n = a.batchesPerEpoch;
  const steps = n + 5;
  let cursor: DataCursor = { epoch: 0, index: 0 };
  const batches: Batch[] = [];
  const cursors: DataCursor[] = [];
  for (let s = 0; s < steps; s++) {
    cursors.push(cursor);
    const r = a.next(cursor);
    batches.push(r.batch);
    cursor = r.cursor;
  }
  assert.deepEqual(cursors[n], { epoch: 1, index: 0 });
  // A fresh batcher (as after a restart) continues identically from any saved cursor.
  for (const k of [1, n - 1, n + 2]) {
    const b = new Batcher(examples, options);
    let c = cursors[k]!;
    for (let s = k; s < steps; s++) {
      const r = b.next(c);
      assert.deepEqual(r.batch.inputIds, batches[s]!.inputIds, `step ${s} resumed from ${k}`);
      assert.deepEqual(r.batch.labels, batches[s]!.labels);
      c = r.cursor;
    }
  }
  // Epoch 1 is a different order; another seed is a different order.
  assert.notDeepEqual(batches[n]!.inputIds, batches[0]!.inputIds);
  const other = new Batcher(examples, { ...options, seed: 12 }).next({ epoch: 0, index: 0 }).batch;
  assert.notDeepEqual(other.inputIds, batches[0]!.inputIds);
});

test('padding: one example per row, length-grouped batches pad less, lengths rounded to 8', () => {
  const byKey = new Map(examples.map((e) => [keyOf(e.ids), e]));
  const padded = (groupByLength: boolean) => {
    const batcher = new Batcher(examples, {
      batchSize: 8,
      seqLen: 256,
      padId,
      seed: 5,
      packing: false,
      groupByLength,
    });
    let slots = 0;
    const seen: string[] = [];
    for (const batch of batcher.epoch(0)) {
      assert.equal(batch.seqLen % 8, 0);
      const found = checkBatch(batch, byKey);
      assert.equal(found.length, batch.batchSize, 'one example per row');
      const longest = Math.max(...found.map((k) => byKey.get(k)!.ids.length));
      assert.equal(batch.seqLen, Math.ceil(longest / 8) * 8);
      slots += batch.inputIds.length;
      seen.push(...found);
    }
    assert.deepEqual(seen.sort(), examples.map((e) => keyOf(e.ids)).sort());
    return slots;
  };
  assert.ok(padded(true) < padded(false));
  // Without shuffling (validation) batches keep file order.
  const ordered = new Batcher(examples, {
    batchSize: 2,
    seqLen: 256,
    padId,
    shuffle: false,
    packing: false,
  });
  const first = ordered.epoch(0).next().value as Batch;
  assert.deepEqual(first.inputIds.subarray(0, examples[0]!.ids.length), examples[0]!.ids);
  assert.throws(
    () => new Batcher(examples, { batchSize: 2, seqLen: 16, padId }),
    /has \d+ tokens but batches hold 16/,
  );
});

test('packing over several epochs: each epoch has its own length, every example once per epoch, no batch lost or invented', () => {
  // Shuffled packing gives later epochs a batch more or less than the first (issue 10.1: a run sized
  // from epoch 0 crashed at its last step). Several dataset sizes and batch sizes, three epochs each.
  let lengthsDiffer = 0;
  for (const size of [5, 37, 120, examples.length]) {
    for (const batchSize of [1, 3, 4]) {
      const subset = examples.slice(0, size);
      const batcher = new Batcher(subset, {
        batchSize,
        seqLen: 256,
        padId,
        seed: size * 7 + batchSize,
      });
      const perEpoch = [0, 1, 2].map((e) => batcher.batchesInEpoch(e));
      if (new Set(perEpoch).size > 1) lengthsDiffer++;
      const total = batcher.batchesInEpochs(3);
      assert.equal(total, perEpoch[0]! + perEpoch[1]! + perEpoch[2]!);
      assert.equal(
        batcher.batchesInEpochs(2.5),
        perEpoch[0]! + perEpoch[1]! + Math.ceil(perEpoch[2]! / 2),
      );
      const seen: string[][] = [[], [], []];
      let cursor: DataCursor = { epoch: 0, index: 0 };
      for (let s = 0; s < total; s++) {
        const epoch = cursor.epoch;
        assert.ok(
          cursor.index < perEpoch[epoch]!,
          `size ${size} batch ${batchSize}: cursor ${JSON.stringify(cursor)} past its epoch`,
        );
        assert.ok(
          Math.abs(batcher.epochPosition(cursor) - (epoch + cursor.index / perEpoch[epoch]!)) <
            1e-12,
        );
        const r = batcher.next(cursor);
        assert.ok(r.batch.batchSize >= 1);
        for (let row = 0; row < r.batch.batchSize; row++) {
          for (const seg of segmentsOf(r.batch, row)) {
            const ids = r.batch.inputIds.subarray(
              row * r.batch.seqLen + seg.start,
              row * r.batch.seqLen + seg.end,
            );
            if (!ids.every((id) => id === padId)) seen[epoch]!.push(keyOf(ids));
          }
        }
        cursor = r.cursor;
      }
      // Exactly three whole epochs: the cursor sits at the start of the fourth.
      assert.deepEqual(cursor, { epoch: 3, index: 0 }, `size ${size} batch ${batchSize}`);
      const want = subset.map((e) => keyOf(e.ids)).sort();
      for (const e of [0, 1, 2])
        assert.deepEqual(seen[e]!.sort(), want, `size ${size} batch ${batchSize} epoch ${e}`);
    }
  }
  assert.ok(lengthsDiffer > 0, 'the case this guards against (epochs of different lengths) occurs');
});

test('a cursor saved past the end of a shorter epoch rolls into the next epoch', () => {
  // Find a seed whose epoch 1 packs into fewer batches than epoch 0.
  let batcher: Batcher | null = null;
  for (let seed = 0; seed < 200 && !batcher; seed++) {
    const b = new Batcher(examples.slice(0, 120), { batchSize: 1, seqLen: 256, padId, seed });
    if (b.batchesInEpoch(1) < b.batchesInEpoch(0)) batcher = b;
  }
  assert.ok(batcher, 'some seed packs epoch 1 shorter than epoch 0');
  const epoch = 1;
  // The index epoch 0 would still allow is past the end of epoch 1.
  const r = batcher.next({ epoch, index: batcher.batchesInEpoch(epoch) });
  assert.deepEqual(r.batch.inputIds, batcher.next({ epoch: epoch + 1, index: 0 }).batch.inputIds);
});
