// Gradients of every LoRA A and B through a whole (tiny) Llama model — 4-bit base, GQA, RoPE,
// causal attention with packed segments, SwiGLU, chunked cross-entropy; and with a sliding window on
// one layer of two, attention and final-logit soft-capping — equal central finite differences of
// the loss, on the float64 reference backend.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { type BuildConfig, buildLlama } from '../src/models/build.js';
import { familyOf, tensorShapes } from '../src/models/registry.js';
import type { LlamaModel, ModelBatch, StepOptions } from '../src/models/llama.js';
import { Linear4bit } from '../src/nn/linear.js';
import { randn } from './util.js';

const config: BuildConfig = {
  vocabSize: 13,
  hiddenSize: 8,
  intermediateSize: 12,
  numLayers: 2,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 4,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 64,
  tieWordEmbeddings: false,
  attentionBias: false,
};

function randomSource(seed: number, c: BuildConfig = config) {
  // A (1 + w) norm (Gemma) stores w near 0; the others store weights near 1.
  const onePlus = familyOf(c).norm === 'rms1p';
  let k = 0;
  const values = new Map<string, Float32Array>();
  for (const [name, shape] of tensorShapes(c)) {
    const isNorm = name.includes('norm');
    const size = shape.reduce((a, b) => a * b, 1);
    const v = randn(size, seed + 101 * k++, isNorm ? 0.1 : 0.5);
    values.set(
      name,
      Float32Array.from(v, (x) => (isNorm && !onePlus ? 1 + x : x)),
    );
  }
  return { has: (n: string) => values.has(n), load: (n: string) => values.get(n)! };
}

const batch: ModelBatch = {
  batchSize: 2,
  seqLen: 5,
  inputIds: Int32Array.from([1, 4, 7, 2, 9, 3, 3, 12, 0, 5]),
  // Row 0 packs two examples (segments 0 and 1); row 1 has a masked prompt.
  labels: Int32Array.from([4, 7, -100, 9, 11, -100, -100, 0, 5, 6]),
  positions: Int32Array.from([0, 1, 2, 0, 1, 0, 1, 2, 3, 4]),
  segmentIds: Int32Array.from([0, 0, 0, 1, 1, 0, 0, 0, 0, 0]),
};

/** Mistral/Gemma-style variants: a window shorter than the batch's rows on layer 1 only, soft-caps. */
const windowed: BuildConfig = {
  ...config,
  slidingWindow: 2,
  slidingLayers: [false, true],
  attnLogitSoftcap: 1.1,
  finalLogitSoftcap: 2.5,
};

/**
 * Gemma 2: (1 + w) norms before and after attention and MLP, GeGLU, sqrt(hidden) embedding scale,
 * query_pre_attn_scalar, a sliding layer then a global one, soft-caps, tied embeddings.
 */
const gemma2: BuildConfig = {
  ...windowed,
  architecture: 'gemma2',
  tieWordEmbeddings: true,
  slidingLayers: [true, false],
  queryPreAttnScalar: 6,
};

/** Gemma 3: gemma2's block without soft-caps, with q/k norms and a local rope base of its own. */
const gemma3: BuildConfig = {
  ...config,
  architecture: 'gemma3',
  tieWordEmbeddings: true,
  slidingWindow: 2,
  slidingLayers: [true, false],
  queryPreAttnScalar: 3,
  ropeTheta: 1e6,
  ropeLocalTheta: 100,
  ropeScaling: { ropeType: 'linear', factor: 4 },
};

async function build(
  dropout: number,
  quantizeHead: boolean,
  c: BuildConfig = config,
): Promise<LlamaModel> {
  const be = await getBackend('ref');
  const model = await buildLlama(c, randomSource(7, c), {
    backend: be,
    dtype: 'f64',
    quantization: { quantType: 'nf4', blocksize: 32, doubleQuant: true },
    quantizeHead,
    quantizeEmbedding: quantizeHead,
    lora: {
      r: 2,
      alpha: 3,
      dropout,
      useRslora: false,
      init: 'kaiming',
      seed: 5,
      targets: 'all-linear',
      layers: null,
    },
  });
  // B starts at zero (PEFT init), which would make every dA zero: give B random values.
  model.parameters().forEach((p, i) => {
    if (p.name.endsWith('lora_B.weight')) p.value.write(randn(p.value.size, 900 + i, 0.3));
  });
  return model;
}

for (const [dropout, quantizeHead, c] of [
  [0, false, config],
  [0.3, true, config],
  [0, false, windowed],
  [0.3, false, gemma2],
  [0, false, gemma3],
] as const) {
  const variant =
    c === windowed
      ? ', sliding window on layer 1, soft-capped attention and logits'
      : c.architecture
        ? `, ${c.architecture} block`
        : '';
  test(`LoRA gradients through a 4-bit Llama equal finite differences (f64, dropout ${dropout}, ${quantizeHead ? '4-bit' : 'f64'} lm_head and embedding${variant})`, async () => {
    const model = await build(dropout, quantizeHead, c);
    assert.deepEqual(
      [model.layerWindow(0), model.layerWindow(1)],
      c.slidingLayers ? c.slidingLayers.map((s) => (s ? 2 : null)) : [null, null],
    );
    assert.equal(model.lmHead instanceof Linear4bit, quantizeHead);
    const be = model.backend;
    const arena = be.createArena(1 << 16, 'step');
    const layerArena = be.createArena(1 << 16, 'layer');
    const opts: StepOptions = {
      training: true,
      stepSeed: 77,
      gradientCheckpointing: false,
      lossChunkRows: 3,
      gradScale: 1,
    };
    const loss = async (): Promise<number> => {
      arena.reset();
      const r = await model.lossAndGradients(batch, arena, layerArena, opts, false);
      return r.lossSum / r.tokens;
    };
    const params = model.parameters();
    for (const p of params) p.zeroGrad();
    arena.reset();
    const res = await model.lossAndGradients(batch, arena, layerArena, opts, true);
    assert.equal(res.tokens, 7);
    const analytic = params.map((p) => Float64Array.from(p.grad!.data));

    // The same gradients with gradient checkpointing (recompute per layer).
    for (const p of params) p.zeroGrad();
    arena.reset();
    await model.lossAndGradients(
      batch,
      arena,
      layerArena,
      { ...opts, gradientCheckpointing: true },
      true,
    );
    params.forEach((p, i) =>
      assert.deepEqual(
        Float64Array.from(p.grad!.data),
        analytic[i],
        `${p.name}: checkpointing changed the gradient`,
      ),
    );

    const h = 1e-6;
    let checked = 0;
    for (const [pi, p] of params.entries()) {
      const data = p.value.data as Float64Array;
      // A few entries per parameter keep the test fast; every parameter is covered.
      for (const j of [0, Math.floor(data.length / 2), data.length - 1]) {
        const old = data[j]!;
        data[j] = old + h;
        const up = await loss();
        data[j] = old - h;
        const down = await loss();
        data[j] = old;
        const numeric = (up - down) / (2 * h);
        const a = analytic[pi]![j]!;
        assert.ok(
          Math.abs(a - numeric) <= 1e-6 + 1e-5 * Math.abs(numeric),
          `${p.name}[${j}]: analytic ${a} vs numeric ${numeric}`,
        );
        checked++;
      }
    }
    assert.equal(checked, params.length * 3);
    assert.ok(
      analytic.some((g) => g.some((x) => Math.abs(x) > 1e-4)),
      'gradients are not all ~0',
    );
    arena.dispose();
    layerArena.dispose();
    model.dispose();
  });
}
