/**
 * Inference speed: prompt processing (one prefill of the prompt) and generation (one token per
 * forward with the KV cache), on the bundled stories260K and on a random model of stories15M's
 * shape (dim 288, 6 layers, 6 heads, hidden 768, vocab 32000). Greedy argmax, f32 weights.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/tensor/backend.js';
import { argmax } from '../src/generate/sampler.js';
import { type BuildConfig, buildLlama, type TensorSource } from '../src/models/build.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import { syntheticSource } from '../src/models/synthetic.js';

export interface InferenceResult {
  readonly model: string;
  readonly promptTokens: number;
  readonly promptTokensPerSecond: number;
  readonly generatedTokens: number;
  readonly generateTokensPerSecond: number;
}

export const STORIES15M_SHAPE: BuildConfig = {
  vocabSize: 32000,
  hiddenSize: 288,
  intermediateSize: 768,
  numLayers: 6,
  numHeads: 6,
  numKvHeads: 6,
  headDim: 48,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 1024,
  tieWordEmbeddings: true,
  attentionBias: false,
};

async function measure(
  name: string,
  model: LlamaModel,
  promptTokens: number,
  genTokens: number,
  reps: number,
): Promise<InferenceResult> {
  const be = model.backend;
  const arena = be.createArena(1 << 22, 'bench');
  const cache = new KvCache(model, promptTokens + genTokens + 1);
  const prompt = Int32Array.from(
    { length: promptTokens },
    (_, i) => 1 + ((i * 7919) % (model.dims.vocabSize - 1)),
  );
  let bestPrompt = Infinity;
  let bestGen = Infinity;
  try {
    for (let rep = 0; rep < reps; rep++) {
      cache.truncate(0);
      arena.reset();
      let t0 = performance.now();
      let logits = await model.forwardCached(prompt, cache, arena, 1).read();
      bestPrompt = Math.min(bestPrompt, (performance.now() - t0) / 1000);
      t0 = performance.now();
      for (let i = 0; i < genTokens; i++) {
        const next = argmax(logits);
        arena.reset();
        logits = await model.forwardCached(Int32Array.of(next), cache, arena, 1).read();
      }
      bestGen = Math.min(bestGen, (performance.now() - t0) / 1000);
    }
  } finally {
    cache.dispose();
    arena.dispose();
  }
  return {
    model: name,
    promptTokens,
    promptTokensPerSecond: promptTokens / bestPrompt,
    generatedTokens: genTokens,
    generateTokensPerSecond: genTokens / bestGen,
  };
}

export async function inferenceBench(be: Backend, quick: boolean): Promise<InferenceResult[]> {
  const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
  const out: InferenceResult[] = [];
  const ck = openCheckpoint(path.join(root, 'fixtures', 'stories260K', 'stories260K.bin'));
  const small = await buildLlama(ck.config, ck, { backend: be, maxPositions: 512 });
  ck.close();
  out.push(await measure('stories260K', small, 256, quick ? 64 : 256, 3));
  small.dispose();
  const src: TensorSource = syntheticSource(STORIES15M_SHAPE, 15);
  const mid = await buildLlama(STORIES15M_SHAPE, src, { backend: be, maxPositions: 1024 });
  out.push(
    await measure('stories15M shape (random weights)', mid, 256, quick ? 32 : 128, quick ? 1 : 3),
  );
  mid.dispose();
  return out;
}
