// Mistral's sliding-window attention is not implemented: within the window full attention is the
// same thing, beyond it the model refuses instead of silently computing something else.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { type BuildConfig, buildLlama } from '../src/models/build.js';
import { KvCache } from '../src/models/llama.js';
import { syntheticSource } from '../src/models/synthetic.js';

test('a sliding-window model refuses sequences longer than its window', async () => {
  const config: BuildConfig & { slidingWindow: number } = {
    vocabSize: 32,
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: 1,
    numHeads: 2,
    numKvHeads: 1,
    headDim: 8,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 64,
    tieWordEmbeddings: true,
    attentionBias: false,
    slidingWindow: 6,
  };
  const be = await getBackend('ref');
  const model = await buildLlama(config, syntheticSource(config, 1), { backend: be });
  const arena = be.createArena();
  const cache = new KvCache(model, 16);
  await model.forwardCached(Int32Array.from([1, 2, 3, 4, 5, 6]), cache, arena, 1).read();
  assert.throws(
    () => model.forwardCached(Int32Array.of(7), cache, arena, 1),
    /7 tokens exceeds this model's sliding attention window \(6\)/,
  );
  const batch = {
    batchSize: 1,
    seqLen: 8,
    inputIds: new Int32Array(8),
    labels: new Int32Array(8),
    positions: Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]),
    segmentIds: null,
  };
  await assert.rejects(
    model.lossAndGradients(
      batch,
      arena,
      arena,
      {
        training: false,
        stepSeed: 0,
        gradientCheckpointing: false,
        lossChunkRows: 8,
        gradScale: 1,
      },
      false,
    ),
    /sliding attention window/,
  );
  cache.dispose();
  arena.dispose();
  model.dispose();
});
