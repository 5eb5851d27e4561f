// Shared pieces of the export tests: a synthetic HF-layout model folder, random-B PEFT adapters,
// and next-token log-probabilities + greedy continuations from our forward and from llama.cpp
// (node-llama-cpp, CPU, f32 KV cache, no flash attention, one thread).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import type { Llama, LlamaModel as CppModel } from 'node-llama-cpp';
import { getBackend } from '../src/backends/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { loadPeftAdapter, savePeftAdapter, type PeftAdapter } from '../src/io/peft.js';
import { buildLlama, type LoraConfig, type TensorSource } from '../src/models/build.js';
import type { LlamaConfig } from '../src/io/config.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import { syntheticSource } from '../src/models/synthetic.js';
import { applyPeftAdapter } from '../src/io/peft.js';
import { uniformAt } from '../src/tensor/rng.js';
import type { Backend } from '../src/tensor/backend.js';

export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
export const STORIES = path.join(FIXTURES, 'stories260K');

/**
 * Writes an HF folder (config.json, model.safetensors with seeded random weights, TinyLlama's
 * tokenizer files) for `hfConfig`, whose vocab_size must be TinyLlama's 32000.
 */
export function writeSyntheticHfFolder(
  dir: string,
  hfConfig: Record<string, unknown>,
  config: LlamaConfig,
  seed: number,
): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hfConfig, null, 2));
  const src = syntheticSource(config, seed);
  writeSafetensors(
    path.join(dir, 'model.safetensors'),
    src.names.map((name) => ({
      name,
      dtype: 'F32' as const,
      shape: src.shape(name),
      data: src.load(name) as Float32Array,
    })),
  );
  const tiny = path.join(FIXTURES, 'tokenizers', 'tinyllama');
  fs.writeFileSync(
    path.join(dir, 'tokenizer.json'),
    zlib.gunzipSync(fs.readFileSync(path.join(tiny, 'tokenizer.json.gz'))),
  );
  fs.copyFileSync(
    path.join(tiny, 'tokenizer_config.json'),
    path.join(dir, 'tokenizer_config.json'),
  );
}

/** Builds a LoRA model over `source`, fills B (and A) with seeded random values and saves it as a PEFT folder. */
export async function writeRandomPeftAdapter(
  dir: string,
  config: LlamaConfig,
  source: TensorSource,
  lora: LoraConfig,
  seed: number,
  bScale: number,
): Promise<PeftAdapter> {
  const be = await getBackend('ref');
  const model = await buildLlama(config, source, { backend: be, lora });
  try {
    model.parameters().forEach((p, i) => {
      if (!p.name.endsWith('lora_B.weight')) return;
      const v = new Float32Array(p.value.size);
      for (let j = 0; j < v.length; j++) v[j] = (2 * uniformAt(seed + i, j) - 1) * bScale;
      p.value.write(v);
    });
    await savePeftAdapter(dir, model, lora, null);
  } finally {
    model.dispose();
  }
  return loadPeftAdapter(dir);
}

export interface NextTokenResult {
  /** Natural-log probabilities of the next token after the prompt, full vocabulary. */
  logProbs: Float64Array;
  /** Greedy continuation (argmax each step). */
  greedy: number[];
}

function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const lse = Math.log(sum) + max;
  return Float64Array.from(row, (v) => v - lse);
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Our model (cpu backend unless given), optionally with a PEFT adapter applied unmerged. */
export async function ourNextTokens(
  config: LlamaConfig,
  source: TensorSource,
  adapter: PeftAdapter | null,
  prompt: number[],
  steps: number,
  backend?: Backend,
): Promise<NextTokenResult> {
  const be = backend ?? (await getBackend('cpu'));
  const model: LlamaModel = await buildLlama(config, source, {
    backend: be,
    lora: adapter?.lora ?? null,
    maxPositions: 128,
  });
  if (adapter) applyPeftAdapter(model, adapter);
  const arena = be.createArena(1 << 22);
  const cache = new KvCache(model, prompt.length + steps + 1);
  try {
    let logits = await model.forwardCached(Int32Array.from(prompt), cache, arena, 1).read();
    const logProbs = logSoftmax(logits as Float32Array);
    const greedy: number[] = [];
    for (let s = 0; s < steps; s++) {
      const next = argmax(logits);
      greedy.push(next);
      arena.reset();
      logits = await model.forwardCached(Int32Array.of(next), cache, arena, 1).read();
    }
    return { logProbs, greedy };
  } finally {
    cache.dispose();
    arena.dispose();
    model.dispose();
  }
}

/** llama.cpp through node-llama-cpp: full-vocabulary probabilities after the prompt, then greedy steps. */
export async function llamaCppNextTokens(
  model: CppModel,
  prompt: number[],
  steps: number,
  loraFile: string | null,
): Promise<NextTokenResult> {
  const ctx = await model.createContext({
    contextSize: 256,
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
    ...(loraFile ? { lora: { adapters: [{ filePath: loraFile, scale: 1 }] } } : {}),
  } as Parameters<CppModel['createContext']>[0]);
  try {
    const seq = ctx.getSequence();
    const res = await seq.controlledEvaluate(
      prompt.map((t, i) =>
        i === prompt.length - 1 ? [t, { generateNext: { probabilities: true, token: true } }] : t,
      ) as never,
    );
    const next = (res.at(-1) as { next: { probabilities: Map<number, number>; token: number } })
      .next;
    const logProbs = new Float64Array(next.probabilities.size).fill(-Infinity);
    for (const [id, p] of next.probabilities) logProbs[id] = Math.log(p);
    const greedy: number[] = [next.token];
    for (let s = 1; s < steps; s++) {
      const r = await seq.controlledEvaluate([
        [greedy[greedy.length - 1]!, { generateNext: { token: true } }],
      ] as never);
      greedy.push((r.at(-1) as { next: { token: number } }).next.token);
    }
    return { logProbs, greedy };
  } finally {
    await ctx.dispose();
  }
}

/** Largest |a−b| over tokens llama.cpp gives a representable probability (> 1e-30), and how many those are. */
export function logProbDiff(
  ours: Float64Array,
  theirs: Float64Array,
): { max: number; compared: number } {
  let max = 0;
  let compared = 0;
  for (let i = 0; i < ours.length; i++) {
    const t = theirs[i]!;
    if (!(t > Math.log(1e-30))) continue;
    compared++;
    max = Math.max(max, Math.abs(ours[i]! - t));
  }
  return { max, compared };
}

export type { Llama };
