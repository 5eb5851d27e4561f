/**
 * Random-weight models of real shapes, generated in-process (tests, benchmarks, the memory plan):
 * users can't download models here, but the shapes of TinyLlama or Llama-2-7B are what matter for
 * speed and memory. Weights are deterministic per (seed, tensor name) and generated one tensor at
 * a time, so a 7B-shaped model never exists in full precision at once.
 */
import { seedFor } from '../nn/init.js';
import { mix32, uniformAt } from '../tensor/rng.js';
import type { BuildConfig, TensorSource } from './build.js';
import { familyOf, tensorTable } from './registry.js';
import type { ModelBatch } from './llama.js';

/** Shape of a tensor in an HF checkpoint of `c`'s family (from the family's tensor table). */
export function tensorShape(c: BuildConfig, name: string): number[] {
  const e = tensorTable(c).find((t) => t.hf === name);
  if (!e) throw new Error(`not a ${familyOf(c).name} tensor name: ${name}`);
  return e.shape;
}

/**
 * Deterministic random weights: embeddings (and a separate lm_head) ~ U with std 0.02 (HF's
 * initializer_range, so a tied head gives logits of O(1) and a loss near ln V); projections with
 * std 1/√fan_in so activations stay O(1) through deep stacks; norm weights near 1.
 */
/** A TensorSource whose tensors are generated on request (synchronously). */
export interface SyntheticSource extends TensorSource {
  readonly names: string[];
  shape(name: string): number[];
  load(name: string): Float32Array;
}

export function syntheticSource(config: BuildConfig, seed = 1234): SyntheticSource {
  const table = new Map(tensorTable(config).map((e) => [e.hf, e.shape]));
  const names = [...table.keys()];
  const onePlusNorm = familyOf(config).norm === 'rms1p';
  return {
    names,
    shape: (name: string) => tensorShape(config, name),
    has: (name: string) => table.has(name),
    load: (name: string) => {
      const shape = table.get(name);
      if (!shape) throw new Error(`synthetic model has no tensor '${name}'`);
      const n = shape.reduce((a, b) => a * b, 1);
      const s = seedFor(seed, name);
      const out = new Float32Array(n);
      if (name.endsWith('norm.weight')) {
        // Scales near 1: a (1 + w) norm (Gemma) stores w near 0.
        const center = onePlusNorm ? 0 : 1;
        for (let i = 0; i < n; i++) out[i] = center + 0.1 * (2 * uniformAt(s, i) - 1);
        return out;
      }
      const fanIn = shape.length === 2 ? shape[1]! : config.hiddenSize;
      const std =
        name === 'model.embed_tokens.weight' || name === 'lm_head.weight'
          ? 0.02
          : 1 / Math.sqrt(fanIn);
      const bound = Math.sqrt(3) * std;
      for (let i = 0; i < n; i++) out[i] = (2 * uniformAt(s, i) - 1) * bound;
      return out;
    },
  };
}

/** Random token ids as a training batch: each row is one sequence, labels are the next ids (none after the last). */
export function syntheticBatch(
  batchSize: number,
  seqLen: number,
  vocab: number,
  seed: number,
): ModelBatch {
  const n = batchSize * seqLen;
  const inputIds = new Int32Array(n);
  const labels = new Int32Array(n);
  const positions = new Int32Array(n);
  let h = seed >>> 0;
  for (let i = 0; i < n; i++) {
    h = mix32((h + 0x9e3779b9) >>> 0);
    inputIds[i] = h % vocab;
    positions[i] = i % seqLen;
  }
  for (let i = 0; i < n; i++) labels[i] = (i + 1) % seqLen === 0 ? -100 : inputIds[i + 1]!;
  return { batchSize, seqLen, inputIds, labels, positions, segmentIds: null };
}
