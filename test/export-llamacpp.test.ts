// Exported GGUFs run in an independent client: llama.cpp through node-llama-cpp (CPU, f32 KV cache,
// flash attention off, one thread). For stories260K (llama2.c source) and a random GQA Llama from
// an HF-layout folder (so the Q/K permutation, biases, an untied head and Llama-3 rope scaling are
// all exercised), llama.cpp loads (a) the exported base, (b) base + exported GGUF LoRA, (c) the
// merged model; its next-token log-probabilities must match our own forward within 1e-4 and its
// greedy continuations must be identical.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { getLlama, type Llama } from 'node-llama-cpp';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { exportGgufModel } from '../src/export/gguf-model.js';
import { vocabFromHfFolder, vocabFromLlama2c } from '../src/export/gguf-vocab.js';
import type { LoraConfig } from '../src/models/build.js';
import { type Checkpoint, openCheckpoint } from '../src/models/checkpoint.js';
import { configFromHf } from '../src/models/config.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { Llama2cTokenizer } from '../src/tokenizer/llama2c-tokenizer.js';
import { llamaCppNextTokens, logProbDiff, ourNextTokens, STORIES, writeRandomPeftAdapter, writeSyntheticHfFolder, type NextTokenResult } from './export-support.js';

const STEPS = 20;
let llama: Llama;
let tmp: string;

before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-export-'));
});

after(async () => {
  await llama?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function assertSame(what: string, ours: NextTokenResult, theirs: NextTokenResult, vocab: number): number {
  assert.equal(theirs.logProbs.length, vocab, `${what}: llama.cpp vocabulary size`);
  const d = logProbDiff(ours.logProbs, theirs.logProbs);
  assert.ok(d.compared >= 0.99 * vocab, `${what}: only ${d.compared} of ${vocab} probabilities comparable`);
  assert.ok(d.max <= 1e-4, `${what}: next-token log-probabilities differ by ${d.max}`);
  assert.deepEqual(theirs.greedy, ours.greedy, `${what}: greedy continuation`);
  return d.max;
}

/** Largest log-probability change a LoRA makes (so we know it matters). */
function effect(a: NextTokenResult, b: NextTokenResult): number {
  let m = 0;
  for (let i = 0; i < a.logProbs.length; i++) m = Math.max(m, Math.abs(a.logProbs[i]! - b.logProbs[i]!));
  return m;
}

async function checkModel(name: string, ck: Checkpoint, vocabEntries: ReturnType<typeof vocabFromLlama2c>, lora: LoraConfig, bScale: number, promptText: string, encode: (t: string) => number[]): Promise<void> {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const basePath = path.join(dir, 'base.gguf');
  const loraPath = path.join(dir, 'adapter.gguf');
  const mergedPath = path.join(dir, 'merged.gguf');
  exportGgufModel(ck, basePath, { dtype: 'f32', vocab: vocabEntries });
  const adapter = await writeRandomPeftAdapter(path.join(dir, 'peft'), ck.config, ck, lora, 99, bScale);
  exportGgufLora(adapter, ck.config, loraPath);
  exportGgufModel(ck, mergedPath, { dtype: 'f32', vocab: vocabEntries, adapter });

  const base = await llama.loadModel({ modelPath: basePath });
  const merged = await llama.loadModel({ modelPath: mergedPath });
  try {
    // The exported vocabulary tokenizes the prompt as our tokenizer does.
    const prompt = [ck.config.bosTokenId!, ...base.tokenize(promptText)];
    assert.deepEqual(prompt.slice(1), encode(promptText), `${name}: llama.cpp tokenization of the prompt`);
    const V = ck.config.vocabSize;

    const oursBase = await ourNextTokens(ck.config, ck, null, prompt, STEPS);
    const oursLora = await ourNextTokens(ck.config, ck, adapter, prompt, STEPS);
    assert.ok(effect(oursBase, oursLora) > 0.05, `${name}: the LoRA barely changes the output (${effect(oursBase, oursLora)})`);

    const a = assertSame(`${name} (a) base`, oursBase, await llamaCppNextTokens(base, prompt, STEPS, null), V);
    const b = assertSame(`${name} (b) base + GGUF LoRA`, oursLora, await llamaCppNextTokens(base, prompt, STEPS, loraPath), V);
    const c = assertSame(`${name} (c) merged`, oursLora, await llamaCppNextTokens(merged, prompt, STEPS, null), V);
    console.log(`# ${name}: max |Δ log p| base ${a.toExponential(2)}, lora ${b.toExponential(2)}, merged ${c.toExponential(2)}; LoRA effect ${effect(oursBase, oursLora).toFixed(3)}`);
  } finally {
    await base.dispose();
    await merged.dispose();
  }
}

test('stories260K (llama2.c source): base, base + GGUF LoRA and merged GGUF match our forward in llama.cpp', async () => {
  const ck = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  try {
    const tok = Llama2cTokenizer.fromFile(path.join(STORIES, 'tok512.bin'), 512);
    const lora: LoraConfig = {
      r: 4, alpha: 8, dropout: 0, useRslora: false, init: 'kaiming', seed: 5,
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'down_proj'], layers: [0, 2, 4],
    };
    await checkModel('stories', ck, vocabFromLlama2c(path.join(STORIES, 'tok512.bin'), 512), lora, 0.2, 'Once upon a time, there was a little girl', (t) => tok.encode(t, { addSpecialTokens: false }));
  } finally {
    ck.close();
  }
});

test('random GQA Llama from an HF folder (biases, untied head, Llama-3 rope scaling, rsLoRA): base, LoRA and merged match in llama.cpp', async () => {
  const hfConfig = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu',
    vocab_size: 32000, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256,
    rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, attention_bias: true, mlp_bias: true,
    rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 },
    bos_token_id: 1, eos_token_id: 2,
  };
  const dir = path.join(tmp, 'hf-random');
  writeSyntheticHfFolder(dir, hfConfig, configFromHf(hfConfig), 4242);
  const ck = openCheckpoint(dir);
  try {
    const tok = HfTokenizer.fromDirectory(dir);
    const lora: LoraConfig = { r: 8, alpha: 4, dropout: 0, useRslora: true, init: 'kaiming', seed: 11, targets: 'all-linear', layers: null };
    await checkModel('hf-random', ck, vocabFromHfFolder(dir, 32000), lora, 0.2, 'The quick brown fox jumps over the lazy dog.', (t) => tok.encode(t, { addSpecialTokens: false }));
  } finally {
    ck.close();
  }
});
