// Sliding-window models (Mistral; Qwen2 with use_sliding_window) compute sequences longer than
// their window: each layer passes its window to attention (LlamaModel.layerWindow, the per-layer
// hook: Qwen2's max_window_layers, HF layer_types). A one-layer model's logits at position p
// equal its logits for the last `window` tokens alone (RoPE is relative), prefill equals decode
// through the KV cache beyond the window on ref and cpu, and a Mistral-shaped model trains on
// sequences longer than its window on cpu.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { configFromHf } from '../src/io/config.js';
import { type BuildConfig, buildLlama } from '../src/models/build.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import { syntheticBatch, syntheticSource } from '../src/models/synthetic.js';
import type { Backend } from '../src/tensor/backend.js';
import { mix32 } from '../src/tensor/rng.js';
import { AdamW } from '../src/train/optimizer.js';
import { assertClose } from './util.js';

const tiny: BuildConfig = {
  vocabSize: 32,
  hiddenSize: 16,
  intermediateSize: 24,
  numLayers: 1,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 4,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 256,
  tieWordEmbeddings: true,
  attentionBias: false,
};

const tokens = (n: number, seed: number) =>
  Int32Array.from({ length: n }, (_, i) => mix32(seed + i) % tiny.vocabSize);

/** Logits [keep, V] of `ids` from an empty cache. */
async function logitsOf(model: LlamaModel, ids: Int32Array, keep: number): Promise<Float64Array> {
  const arena = model.backend.createArena();
  const cache = new KvCache(model, ids.length);
  try {
    return Float64Array.from(await model.forwardCached(ids, cache, arena, keep).read());
  } finally {
    cache.dispose();
    arena.dispose();
  }
}

test('a one-layer sliding-window model sees exactly the last `window` tokens (ref, f64)', async () => {
  const be = await getBackend('ref');
  const W = 4;
  const T = 11;
  const ids = tokens(T, 100);
  const V = tiny.vocabSize;
  const windowed = await buildLlama({ ...tiny, slidingWindow: W }, syntheticSource(tiny, 1), {
    backend: be,
    dtype: 'f64',
  });
  const full = await buildLlama(tiny, syntheticSource(tiny, 1), { backend: be, dtype: 'f64' });
  try {
    assert.equal(windowed.layerWindow(0), W);
    assert.equal(full.layerWindow(0), null);
    const all = await logitsOf(windowed, ids, T);
    const allFull = await logitsOf(full, ids, T);
    for (let p = W; p < T; p++) {
      // The same W tokens at positions 0..W-1: RoPE scores depend on position differences only.
      const alone = await logitsOf(windowed, ids.slice(p - W + 1, p + 1), 1);
      const row = all.slice(p * V, (p + 1) * V);
      assertClose(row, alone, { atol: 1e-9, rtol: 1e-9, what: `position ${p}` });
      const rowFull = allFull.slice(p * V, (p + 1) * V);
      assert.ok(
        rowFull.some((x, j) => Math.abs(x - alone[j]!) > 1e-4),
        `full attention at position ${p} sees more than the window`,
      );
    }
    // Within the window the two models agree.
    assertClose(all.slice(0, W * V), allFull.slice(0, W * V), { atol: 1e-9, what: 'prefix' });
  } finally {
    windowed.dispose();
    full.dispose();
  }
});

async function prefillEqualsDecode(be: Backend, atol: number): Promise<Float64Array> {
  const config: BuildConfig = { ...tiny, numLayers: 2, slidingWindow: 20 };
  const model = await buildLlama(config, syntheticSource(config, 2), {
    backend: be,
    dtype: be.name === 'ref' ? 'f64' : 'f32',
  });
  const T = 150; // several 64-key tiles: whole tiles fall outside the window
  const ids = tokens(T, 200);
  const arena = be.createArena();
  const cache = new KvCache(model, T);
  try {
    const prefill = await logitsOf(model, ids, 1);
    await model.forwardCached(ids.slice(0, 100), cache, arena, 1).read();
    let last: Float64Array = new Float64Array(0);
    for (let i = 100; i < T; i++) {
      arena.reset();
      last = Float64Array.from(
        await model.forwardCached(ids.slice(i, i + 1), cache, arena, 1).read(),
      );
    }
    assertClose(last, prefill, { atol, rtol: 1e-4, what: `${be.name}: decode vs prefill` });
    return prefill;
  } finally {
    cache.dispose();
    arena.dispose();
    model.dispose();
  }
}

test('sliding-window generation beyond the window: prefill equals token-by-token decode, cpu equals ref', async () => {
  const ref = await prefillEqualsDecode(await getBackend('ref'), 1e-9);
  const cpu = await prefillEqualsDecode(await getBackend('cpu'), 1e-4);
  assertClose(cpu, ref, { atol: 1e-4, rtol: 1e-4, what: 'cpu vs ref logits' });
});

test('the per-layer window follows config.json: Qwen2 max_window_layers and layer_types, Mistral everywhere', async () => {
  const shape = {
    vocab_size: 32,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 256,
  };
  const be = await getBackend('ref');
  const windows = async (json: object) => {
    const c = configFromHf(json);
    const model = await buildLlama(c, syntheticSource(c, 3), { backend: be });
    try {
      return [0, 1, 2].map((i) => model.layerWindow(i));
    } finally {
      model.dispose();
    }
  };
  assert.deepEqual(
    await windows({ ...shape, model_type: 'mistral', sliding_window: 8 }),
    [8, 8, 8],
  );
  assert.deepEqual(await windows({ ...shape, model_type: 'mistral', sliding_window: null }), [
    null,
    null,
    null,
  ]);
  const qwen2 = { ...shape, model_type: 'qwen2', sliding_window: 8 };
  assert.deepEqual(await windows({ ...qwen2, use_sliding_window: false }), [null, null, null]);
  assert.deepEqual(await windows({ ...qwen2, use_sliding_window: true, max_window_layers: 1 }), [
    null,
    8,
    8,
  ]);
  assert.deepEqual(
    await windows({
      ...qwen2,
      use_sliding_window: true,
      max_window_layers: 1,
      layer_types: ['sliding_attention', 'full_attention', 'sliding_attention'],
    }),
    [8, null, 8],
  );
});

test('cpu: a Mistral-shaped model trains on sequences longer than its sliding window (loss falls)', async () => {
  const be = await getBackend('cpu');
  // Mistral's structure at a tiny size: GQA 4:1, a window shorter than the sequence.
  const config = configFromHf({
    model_type: 'mistral',
    vocab_size: 97,
    hidden_size: 64,
    intermediate_size: 96,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    max_position_embeddings: 512,
    sliding_window: 24,
    tie_word_embeddings: false,
  });
  assert.equal(config.slidingWindow, 24);
  const model = await buildLlama(config, syntheticSource(config, 5), {
    backend: be,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora: {
      r: 8,
      alpha: 16,
      dropout: 0,
      useRslora: false,
      init: 'kaiming',
      seed: 0,
      targets: 'all-linear',
      layers: null,
    },
  });
  const params = model.parameters();
  const optimizer = new AdamW(params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  const batch = syntheticBatch(2, 150, config.vocabSize, 17);
  const arena = be.createArena(0, 'step');
  const layerArena = be.createArena(0, 'layer');
  const losses: number[] = [];
  try {
    for (let step = 1; step <= 30; step++) {
      for (const p of params) p.zeroGrad();
      arena.reset();
      const { lossSum, tokens: counted } = await model.lossAndGradients(batch, arena, layerArena, {
        training: true,
        stepSeed: step,
        gradientCheckpointing: step % 2 === 0,
        lossChunkRows: 128,
        gradScale: 1,
      });
      losses.push(lossSum / counted);
      optimizer.step(1e-2);
    }
    assert.ok(losses.every(Number.isFinite), 'finite losses');
    assert.ok(losses[29]! < 0.9 * losses[0]!, `loss ${losses[0]} → ${losses[29]}`);
  } finally {
    arena.dispose();
    layerArena.dispose();
    optimizer.dispose();
    model.dispose();
  }
});
