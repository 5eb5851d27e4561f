// The KV cache of sliding-window layers is trimmed to the window (KvCache maxAppend): a sliding
// layer holds 2·(window − 1) + maxAppend positions however long the generation, a global layer
// all of them, and the logits of every step equal those of the untrimmed cache (Mistral-style
// every-layer window, Gemma 3's 5 local : 1 global layers, Qwen2's max_window_layers), on every
// backend. generate() prefills long prompts in chunks over a trimmed cache and produces the tokens
// of one untrimmed prefill.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { initRandomModel } from '../src/export/init-random.js';
import { generate, PREFILL_CHUNK } from '../src/generate/generate.js';
import { configFromHf, type LlamaConfig } from '../src/io/config.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { buildLlama } from '../src/models/build.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import { syntheticSource } from '../src/models/synthetic.js';
import { loadTokenizer } from '../src/tokenizer/index.js';
import type { Backend } from '../src/tensor/backend.js';
import { backendsUnderTest } from './backends-under-test.js';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-kv-window-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const small = (extra: Record<string, unknown>): LlamaConfig =>
  configFromHf({
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 96,
    max_position_embeddings: 256,
    ...extra,
  });

const CONFIGS: [string, () => LlamaConfig][] = [
  ['mistral (window 6 on every layer)', () => small({ model_type: 'mistral', sliding_window: 6 })],
  [
    'qwen2 (window 5 below max_window_layers)',
    () =>
      small({
        model_type: 'qwen2',
        use_sliding_window: true,
        sliding_window: 5,
        max_window_layers: 1,
        num_hidden_layers: 3,
      }),
  ],
  [
    'gemma3 (init-random --tiny: window 16 on 5 of 6 layers)',
    () => {
      const dir = path.join(tmp, 'gemma3');
      if (!fs.existsSync(dir)) initRandomModel({ config: 'gemma3', output: dir, tiny: true });
      const ck = openCheckpoint(dir);
      ck.close();
      return ck.config;
    },
  ],
];

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Prefill `prompt` in chunks of `chunk`, then greedy-decode `steps` tokens; every step's logits. */
async function run(
  model: LlamaModel,
  cache: KvCache,
  prompt: number[],
  chunk: number,
  steps: number,
): Promise<{ logits: Float32Array[]; tokens: number[] }> {
  const arena = model.backend.createArena(1 << 20);
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  try {
    let row: Float32Array | null = null;
    for (let at = 0; at < prompt.length; at += chunk) {
      arena.reset();
      const out = model.forwardCached(Int32Array.from(prompt.slice(at, at + chunk)), cache, arena);
      row = Float32Array.from(await out.read());
      logits.push(row);
    }
    for (let s = 0; s < steps; s++) {
      const next = argmax(row!);
      tokens.push(next);
      arena.reset();
      row = Float32Array.from(await model.forwardCached(Int32Array.of(next), cache, arena).read());
      logits.push(row);
    }
    return { logits, tokens };
  } finally {
    arena.dispose();
  }
}

/** ref and cpu; webgpu too (when there is an adapter) for the first config, to keep CI fast. */
async function backends(withGpu: boolean): Promise<{ name: string; be: Backend }[]> {
  return [
    { name: 'ref', be: await getBackend('ref') },
    ...(await backendsUnderTest(withGpu ? ['cpu', 'webgpu'] : ['cpu'])),
  ];
}

for (const [index, [what, make]] of CONFIGS.entries()) {
  test(`${what}: a trimmed cache holds the window's positions only and gives the untrimmed logits`, async () => {
    const config = make();
    const maxAppend = 4;
    const prompt = Array.from({ length: 11 }, (_, i) => (i * 29 + 3) % config.vocabSize);
    const steps = 64;
    const capacity = prompt.length + steps + 1;
    for (const { name, be } of await backends(index === 0)) {
      const model = await buildLlama(config, syntheticSource(config, 5), { backend: be });
      const full = new KvCache(model, capacity);
      const trimmed = new KvCache(model, capacity, { maxAppend });
      try {
        let sliding = 0;
        for (let l = 0; l < config.numLayers; l++) {
          const w = model.layerWindow(l);
          assert.equal(full.layerRows(l), capacity);
          if (w === null) assert.equal(trimmed.layerRows(l), capacity, `${name} layer ${l}`);
          else {
            sliding++;
            assert.equal(trimmed.layerRows(l), 2 * (w - 1) + maxAppend, `${name} layer ${l}`);
            // The generation runs well past what the trimmed buffer holds: rows move.
            assert.ok(capacity > 2 * trimmed.layerRows(l), `${name} layer ${l}`);
          }
        }
        assert.ok(sliding > 0 && (what.startsWith('mistral') || sliding < config.numLayers));
        const a = await run(model, full, prompt, maxAppend, steps);
        const b = await run(model, trimmed, prompt, maxAppend, steps);
        assert.deepEqual(b.tokens, a.tokens, `${name}: greedy tokens`);
        let worst = 0;
        a.logits.forEach((row, i) => {
          for (let j = 0; j < row.length; j++)
            worst = Math.max(worst, Math.abs(row[j]! - b.logits[i]![j]!));
        });
        assert.ok(worst <= 1e-5, `${name}: trimmed logits differ by ${worst}`);
        // A one-forward prefill longer than maxAppend is refused, not silently wrong.
        const other = new KvCache(model, capacity, { maxAppend });
        const arena = be.createArena(1 << 16);
        assert.throws(
          () => model.forwardCached(Int32Array.from(prompt), other, arena),
          /exceed maxAppend 4/,
        );
        arena.dispose();
        other.dispose();
        // Truncating below what a sliding layer still holds is refused.
        assert.throws(() => trimmed.truncate(2), /keeps positions from \d+ only/);
        trimmed.truncate(trimmed.length - 1);
      } finally {
        full.dispose();
        trimmed.dispose();
        model.dispose();
      }
    }
  });
}

test('generate(): a prompt longer than PREFILL_CHUNK over the trimmed cache gives the tokens of one untrimmed prefill', async () => {
  const dir = path.join(tmp, 'mistral-gen');
  // Mistral's structure with a short window, so the prompt spans many windows.
  const hf = {
    model_type: 'mistral',
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    vocab_size: 300,
    max_position_embeddings: 2048,
    sliding_window: 24,
  };
  const cfgPath = path.join(tmp, 'mistral-config.json');
  fs.writeFileSync(cfgPath, JSON.stringify(hf));
  initRandomModel({ config: cfgPath, output: dir, seed: 3 });
  const ck = openCheckpoint(dir);
  const tok = loadTokenizer(dir);
  const be = await getBackend('cpu');
  const model = await buildLlama(ck.config, ck, { backend: be });
  ck.close();
  const arena = be.createArena(1 << 20);
  try {
    const prompt = Array.from({ length: PREFILL_CHUNK + 77 }, (_, i) => 3 + ((i * 7919) % 290));
    const g = await generate(model, tok, prompt, arena, {
      maxTokens: 12,
      temperature: 0,
      stopTokens: [],
    });
    // The untrimmed path: one prefill of the whole prompt into a full cache.
    const full = new KvCache(model, prompt.length + 13);
    try {
      const want = await run(model, full, prompt, prompt.length, 12);
      assert.deepEqual(g.tokens, want.tokens.slice(0, 12));
    } finally {
      full.dispose();
    }
  } finally {
    arena.dispose();
    model.dispose();
  }
});
