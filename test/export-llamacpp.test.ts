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
import zlib from 'node:zlib';
import { getLlama, type Llama } from 'node-llama-cpp';
import { hyperparameterMetadata } from '../src/export/gguf-arch.js';
import { GgufReader } from '../src/io/gguf.js';
import { writeGguf } from '../src/io/gguf-writer.js';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { loadGgufLoraAdapter } from '../src/io/gguf-lora.js';
import { exportGgufModel } from '../src/export/gguf-model.js';
import { initRandomModel } from '../src/export/init-random.js';
import { vocabFromHfFolder, vocabFromLlama2c } from '../src/export/gguf-vocab.js';
import type { LoraConfig } from '../src/models/build.js';
import { type Checkpoint, openCheckpoint } from '../src/io/checkpoint.js';
import { configFromHf } from '../src/io/config.js';
import { syntheticSource } from '../src/models/synthetic.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level-bpe.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { Llama2cTokenizer } from '../src/tokenizer/llama2c-tokenizer.js';
import {
  FIXTURES,
  llamaCppNextTokens,
  logProbDiff,
  ourNextTokens,
  STORIES,
  writeRandomPeftAdapter,
  writeSyntheticHfFolder,
  type NextTokenResult,
} from './export-support.js';

const STEPS = 20;
let llama: Llama;
let tmp: string;

before(async () => {
  llama = await getLlama({
    gpu: false,
    build: 'never',
    logLevel: 'error' as never,
    // node-llama-cpp probes a vocabOnly model with a full load first, which logs these two lines
    // even for llama.cpp's own vocabulary files; everything else still shows.
    logger: (level, message) => {
      if (/missing tensor 'token_embd\.weight'|failed to load model/.test(message)) return;
      console.error(`[llama.cpp ${level}] ${message.trim()}`);
    },
  });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-export-'));
});

after(async () => {
  await llama?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function assertSame(
  what: string,
  ours: NextTokenResult,
  theirs: NextTokenResult,
  vocab: number,
): number {
  assert.equal(theirs.logProbs.length, vocab, `${what}: llama.cpp vocabulary size`);
  const d = logProbDiff(ours.logProbs, theirs.logProbs);
  assert.ok(
    d.compared >= 0.99 * vocab,
    `${what}: only ${d.compared} of ${vocab} probabilities comparable`,
  );
  assert.ok(d.max <= 1e-4, `${what}: next-token log-probabilities differ by ${d.max}`);
  assert.deepEqual(theirs.greedy, ours.greedy, `${what}: greedy continuation`);
  return d.max;
}

/** Largest log-probability change a LoRA makes (so we know it matters). */
function effect(a: NextTokenResult, b: NextTokenResult): number {
  let m = 0;
  for (let i = 0; i < a.logProbs.length; i++)
    m = Math.max(m, Math.abs(a.logProbs[i]! - b.logProbs[i]!));
  return m;
}

async function checkModel(
  name: string,
  ck: Checkpoint,
  vocabEntries: ReturnType<typeof vocabFromLlama2c>,
  lora: LoraConfig,
  bScale: number,
  promptText: string,
  encode: (t: string) => number[],
  thirdPartyBase?: string,
): Promise<void> {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const basePath = path.join(dir, 'base.gguf');
  const loraPath = path.join(dir, 'adapter.gguf');
  const mergedPath = path.join(dir, 'merged.gguf');
  exportGgufModel(ck, basePath, { dtype: 'f32', vocab: vocabEntries });
  const adapter = await writeRandomPeftAdapter(
    path.join(dir, 'peft'),
    ck.config,
    ck,
    lora,
    99,
    bScale,
  );
  exportGgufLora(adapter, ck.config, loraPath);
  exportGgufModel(ck, mergedPath, { dtype: 'f32', vocab: vocabEntries, adapter });

  const base = await llama.loadModel({ modelPath: basePath });
  const merged = await llama.loadModel({ modelPath: mergedPath });
  try {
    // The exported vocabulary tokenizes the prompt as our tokenizer does.
    const bos = ck.config.bosTokenId;
    const prompt = [...(bos !== null ? [bos] : []), ...base.tokenize(promptText)];
    assert.deepEqual(
      prompt.slice(bos !== null ? 1 : 0),
      encode(promptText),
      `${name}: llama.cpp tokenization of the prompt`,
    );
    const V = ck.config.vocabSize;

    const oursBase = await ourNextTokens(ck.config, ck, null, prompt, STEPS);
    const oursLora = await ourNextTokens(ck.config, ck, adapter, prompt, STEPS);
    assert.ok(
      effect(oursBase, oursLora) > 0.05,
      `${name}: the LoRA barely changes the output (${effect(oursBase, oursLora)})`,
    );

    const a = assertSame(
      `${name} (a) base`,
      oursBase,
      await llamaCppNextTokens(base, prompt, STEPS, null),
      V,
    );
    const b = assertSame(
      `${name} (b) base + GGUF LoRA`,
      oursLora,
      await llamaCppNextTokens(base, prompt, STEPS, loraPath),
      V,
    );
    const c = assertSame(
      `${name} (c) merged`,
      oursLora,
      await llamaCppNextTokens(merged, prompt, STEPS, null),
      V,
    );
    console.log(
      `# ${name}: max |Δ log p| base ${a.toExponential(2)}, lora ${b.toExponential(2)}, merged ${c.toExponential(2)}; LoRA effect ${effect(oursBase, oursLora).toFixed(3)}`,
    );
    if (thirdPartyBase) {
      // The same adapter on a GGUF that llama.cpp's own converter wrote (what users pull from hubs).
      const other = await llama.loadModel({ modelPath: thirdPartyBase });
      try {
        assertSame(
          `${name} (b') ${path.basename(thirdPartyBase)} + GGUF LoRA`,
          oursLora,
          await llamaCppNextTokens(other, prompt, STEPS, loraPath),
          V,
        );
      } finally {
        await other.dispose();
      }
    }
  } finally {
    await base.dispose();
    await merged.dispose();
  }
}

test("stories260K (llama2.c source): base, base + GGUF LoRA (also on llama.cpp's own stories260K.gguf) and merged GGUF match our forward in llama.cpp", async () => {
  const ck = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  try {
    const tok = Llama2cTokenizer.fromFile(path.join(STORIES, 'tok512.bin'), 512);
    const lora: LoraConfig = {
      r: 4,
      alpha: 8,
      dropout: 0,
      useRslora: false,
      init: 'kaiming',
      seed: 5,
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'down_proj'],
      layers: [0, 2, 4],
    };
    await checkModel(
      'stories',
      ck,
      vocabFromLlama2c(path.join(STORIES, 'tok512.bin'), 512),
      lora,
      0.2,
      'Once upon a time, there was a little girl',
      (t) => tok.encode(t, { addSpecialTokens: false }),
      path.join(STORIES, 'stories260K.gguf'),
    );
  } finally {
    ck.close();
  }
});

test('random GQA Llama from an HF folder (biases, untied head, Llama-3 rope scaling, rsLoRA): base, LoRA and merged match in llama.cpp', async () => {
  const hfConfig = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_act: 'silu',
    vocab_size: 32000,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
    attention_bias: true,
    mlp_bias: true,
    rope_scaling: {
      rope_type: 'llama3',
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 32,
    },
    bos_token_id: 1,
    eos_token_id: 2,
  };
  const dir = path.join(tmp, 'hf-random');
  writeSyntheticHfFolder(dir, hfConfig, configFromHf(hfConfig), 4242);
  const ck = openCheckpoint(dir);
  try {
    const tok = HfTokenizer.fromDirectory(dir);
    const lora: LoraConfig = {
      r: 8,
      alpha: 4,
      dropout: 0,
      useRslora: true,
      init: 'kaiming',
      seed: 11,
      targets: 'all-linear',
      layers: null,
    };
    await checkModel(
      'hf-random',
      ck,
      vocabFromHfFolder(dir, 32000),
      lora,
      0.2,
      'The quick brown fox jumps over the lazy dog.',
      (t) => tok.encode(t, { addSpecialTokens: false }),
    );
  } finally {
    ck.close();
  }
});

// The families' real configs shrunk by `qlora init-random --tiny` (same structure: Qwen3's q/k
// norms and head_dim ≠ hidden/heads, Llama 3.2's tied head and Llama-3 rope scaling, SmolLM2's
// GQA and rope theta; Phi-3's fused attn_qkv / ffn_up and their fused LoRA, LongRoPE's factor
// tensors and attn_factor (the prompt passes the tiny original context of 8, and llama.cpp's
// context of 256 does too: both take the long factors), Phi-4-mini's partial rotary, GQA and tied
// head), with the byte-level tokenizer init-random writes.
for (const shape of [
  'qwen3-0.6b',
  'llama-3.2-1b',
  'smollm2-135m',
  'phi-3-mini',
  'phi-3.5-mini',
  'phi-4-mini',
]) {
  test(`${shape} (init-random --tiny): base, base + GGUF LoRA and merged GGUF match our forward in llama.cpp`, async () => {
    // Not named "phi-3…": llama.cpp would apply its name-keyed Phi-3 token fix-up, which needs
    // <unk> and <|endoftext|> in the vocabulary (the export warns; docs/formats.md § 5.4).
    const dir = path.join(tmp, `init-${shape.replace(/^phi-3/, 'p3')}`);
    initRandomModel({ config: shape, output: dir, tiny: true, seed: 21 });
    const ck = openCheckpoint(dir);
    try {
      const tok = HfTokenizer.fromDirectory(dir);
      const lora: LoraConfig = {
        r: 4,
        alpha: 8,
        dropout: 0,
        useRslora: false,
        init: 'kaiming',
        seed: 3,
        targets: 'all-linear',
        layers: null,
      };
      await checkModel(
        shape,
        ck,
        vocabFromHfFolder(dir, ck.config.vocabSize),
        lora,
        0.2,
        'the cat sat on the mat, and then it ran away!',
        (t) => tok.encode(t, { addSpecialTokens: false }),
      );
    } finally {
      ck.close();
    }
  });
}

const RANDOM_HF = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_act: 'silu',
  vocab_size: 32000,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 2,
};

test('qwen2 export (NEOX RoPE: Q/K not permuted; q/k/v biases) matches our forward in llama.cpp', async () => {
  const qwenHf = { ...RANDOM_HF, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' };
  const dir = path.join(tmp, 'hf-qwen2');
  writeSyntheticHfFolder(dir, qwenHf, configFromHf(qwenHf), 77);
  const prompt = [
    1,
    ...HfTokenizer.fromDirectory(dir).encode('Hello there, general Kenobi', {
      addSpecialTokens: false,
    }),
  ];
  const out = path.join(tmp, 'qwen2.gguf');
  const ck = openCheckpoint(dir);
  try {
    exportGgufModel(ck, out, { dtype: 'f32', vocab: vocabFromHfFolder(dir, 32000) });
    const model = await llama.loadModel({ modelPath: out });
    try {
      assertSame(
        'qwen2',
        await ourNextTokens(ck.config, ck, null, prompt, STEPS),
        await llamaCppNextTokens(model, prompt, STEPS, null),
        32000,
      );
    } finally {
      await model.dispose();
    }
  } finally {
    ck.close();
  }
});

test('q8_0 stories260K export: llama.cpp agrees with our forward over the same dequantized weights', async () => {
  const out = path.join(tmp, 'stories-q8_0.gguf');
  const src = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  try {
    exportGgufModel(src, out, {
      dtype: 'q8_0',
      vocab: vocabFromLlama2c(path.join(STORIES, 'tok512.bin'), 512),
    });
  } finally {
    src.close();
  }
  const ck = openCheckpoint(out);
  const model = await llama.loadModel({ modelPath: out });
  try {
    const prompt = [1, ...model.tokenize('Once upon a time, there was a little girl')];
    const ours = await ourNextTokens(ck.config, ck, null, prompt, STEPS);
    const theirs = await llamaCppNextTokens(model, prompt, STEPS, null);
    // llama.cpp's CPU Q8_0 matmul also quantizes the activations to 8 bits (≈0.3% relative error per
    // matmul input over 35 matmuls), so only closeness is expected; a wrong block scale or layout
    // would change the text.
    let likely = 0;
    for (let i = 0; i < ours.logProbs.length; i++)
      if (ours.logProbs[i]! > -6)
        likely = Math.max(likely, Math.abs(ours.logProbs[i]! - theirs.logProbs[i]!));
    console.log(
      `# stories q8_0: max |Δ log p| over tokens with log p > -6: ${likely.toExponential(2)}; greedy ${theirs.greedy.join(',')} vs ${ours.greedy.join(',')}`,
    );
    assert.ok(likely < 0.15, `q8_0: log-probabilities of likely tokens differ by ${likely}`);
    assert.deepEqual(theirs.greedy.slice(0, 10), ours.greedy.slice(0, 10));
  } finally {
    ck.close();
    await model.dispose();
  }
});

test('q4_k export (hidden 256, Q4_K matrices) runs in llama.cpp like our forward over its dequantized weights', async () => {
  // Untied head (std 1/√256): logits of order 1, so many tokens are plausible and errors show.
  const hf = {
    ...RANDOM_HF,
    vocab_size: 512,
    hidden_size: 256,
    intermediate_size: 512,
    tie_word_embeddings: false,
  };
  const dir = path.join(tmp, 'hf-256');
  writeSyntheticHfFolder(dir, hf, configFromHf(hf), 91);
  const out = path.join(tmp, 'q4_k.gguf');
  const src = openCheckpoint(dir);
  try {
    exportGgufModel(src, out, {
      dtype: 'q4_k',
      vocab: vocabFromLlama2c(path.join(STORIES, 'tok512.bin'), 512),
    });
  } finally {
    src.close();
  }
  const ck = openCheckpoint(out);
  const model = await llama.loadModel({ modelPath: out });
  try {
    const r = GgufReader.open(out);
    try {
      assert.equal(r.tensor('blk.0.attn_q.weight').typeName, 'Q4_K');
      assert.equal(r.tensor('token_embd.weight').typeName, 'Q4_K');
      assert.equal(r.metadata.get('general.file_type'), 14);
    } finally {
      r.close();
    }
    const prompt = [1, ...model.tokenize('Once upon a time')];
    const ours = await ourNextTokens(ck.config, ck, null, prompt, STEPS);
    const theirs = await llamaCppNextTokens(model, prompt, STEPS, null);
    let likely = 0;
    for (let i = 0; i < ours.logProbs.length; i++)
      if (ours.logProbs[i]! > -6)
        likely = Math.max(likely, Math.abs(ours.logProbs[i]! - theirs.logProbs[i]!));
    console.log(
      `# q4_k: max |Δ log p| over tokens with log p > -6: ${likely.toExponential(2)}; greedy ${theirs.greedy.join(',')} vs ${ours.greedy.join(',')}`,
    );
    // llama.cpp quantizes activations to Q8_K for Q4_K matmuls, so only closeness is expected.
    assert.ok(likely < 0.15, `q4_k: log-probabilities of likely tokens differ by ${likely}`);
    assert.deepEqual(theirs.greedy.slice(0, 10), ours.greedy.slice(0, 10));
  } finally {
    ck.close();
    await model.dispose();
  }
});

/** An HF folder holding phi-2's byte-level vocabulary behind the pre-tokenizer `pre` (llama-bpe, qwen2, …). */
function byteLevelFolder(dir: string, phi2Json: Record<string, unknown>, pre: string): void {
  const model = phi2Json.model as { vocab: Record<string, number>; merges: string[] };
  const added = phi2Json.added_tokens as { id: number; content: string; special: boolean }[];
  const tokens: string[] = [];
  for (const [t, id] of Object.entries(model.vocab)) tokens[id] = t;
  for (const t of added) tokens[t.id] = t.content;
  const json = byteLevelTokenizerJson({
    tokens,
    merges: model.merges,
    addedTokens: added,
    pre,
    bosToPrepend: null,
    eosToAppend: null,
  });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
}

test('exported vocabularies tokenize in llama.cpp as our tokenizers do (SentencePiece-BPE; byte-level BPE with gpt-2, llama-bpe, qwen2, smollm splits); chat template carried', async () => {
  const texts = [
    'Hello world',
    '  leading spaces and trailing  ',
    'numbers 12345 and 3.14159, dates 2024-01-31, 1234567890',
    'unicode: héllo wörld — 日本語 🦙 ñ',
    'tabs\tand\nnewlines\n\n end   three',
    "don't can't I'm we'll HOW'S",
  ];
  const phi2Gz = path.join(FIXTURES, 'tokenizers', 'phi-2', 'tokenizer.json.gz');
  const phi2Json = JSON.parse(zlib.gunzipSync(fs.readFileSync(phi2Gz)).toString('utf8')) as Record<
    string,
    unknown
  >;
  const cases: [
    name: string,
    vocabSize: number,
    model: 'llama' | 'gpt2',
    pre: string | undefined,
  ][] = [
    ['tinyllama', 32000, 'llama', undefined],
    ['phi-2', 51200, 'gpt2', 'gpt-2'],
    ['llama-bpe', 51200, 'gpt2', 'llama-bpe'],
    ['qwen2', 51200, 'gpt2', 'qwen2'],
    ['smollm', 51200, 'gpt2', 'smollm'],
  ];
  for (const [name, vocabSize, kind, pre] of cases) {
    const dir = path.join(tmp, `vocab-${name}`);
    if (name === 'tinyllama' || name === 'phi-2') {
      const fixture = path.join(FIXTURES, 'tokenizers', name);
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(
        path.join(dir, 'tokenizer.json'),
        zlib.gunzipSync(fs.readFileSync(path.join(fixture, 'tokenizer.json.gz'))),
      );
      fs.copyFileSync(
        path.join(fixture, 'tokenizer_config.json'),
        path.join(dir, 'tokenizer_config.json'),
      );
    } else {
      byteLevelFolder(dir, phi2Json, name);
    }
    const vocab = vocabFromHfFolder(dir, vocabSize);
    const meta = new Map(vocab.entries.map((e) => [e.key, e.value]));
    assert.equal(meta.get('tokenizer.ggml.model'), kind, name);
    assert.equal(meta.get('tokenizer.ggml.pre'), pre, name);
    const config = configFromHf({ ...RANDOM_HF, vocab_size: vocabSize });
    const file = path.join(tmp, `vocab-${name}.gguf`);
    writeGguf(file, [...hyperparameterMetadata(config, name), ...vocab.entries], []);
    const ours = HfTokenizer.fromDirectory(dir);
    const model = await llama.loadModel({ modelPath: file, vocabOnly: true });
    try {
      for (const t of texts)
        assert.deepEqual(
          Array.from(model.tokenize(t)),
          ours.encode(t, { addSpecialTokens: false }),
          `${name}: ${JSON.stringify(t)}`,
        );
      if (ours.chatTemplate)
        assert.equal(model.fileInfo.metadata.tokenizer.chat_template, ours.chatTemplate);
    } finally {
      await model.dispose();
    }
  }
});

test('llama.cpp refuses the adapters our loader refuses: other architecture, other shapes', async () => {
  const ck = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  const dir = path.join(tmp, 'refuse');
  fs.mkdirSync(dir, { recursive: true });
  try {
    const base = path.join(dir, 'base.gguf');
    exportGgufModel(ck, base, {
      dtype: 'f32',
      vocab: vocabFromLlama2c(path.join(STORIES, 'tok512.bin'), 512),
    });
    const lora: LoraConfig = {
      r: 2,
      alpha: 2,
      dropout: 0,
      useRslora: false,
      init: 'kaiming',
      seed: 1,
      targets: ['q_proj'],
      layers: null,
    };
    const adapter = await writeRandomPeftAdapter(
      path.join(dir, 'peft'),
      ck.config,
      ck,
      lora,
      3,
      0.1,
    );
    const qwenFile = path.join(dir, 'qwen2-adapter.gguf');
    exportGgufLora(adapter, { ...ck.config, architecture: 'qwen2', attentionBias: true }, qwenFile);
    const otherHf = {
      model_type: 'llama',
      vocab_size: 512,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 5,
      num_attention_heads: 4,
      num_key_value_heads: 2,
    };
    const other = configFromHf(otherHf);
    const otherAdapter = await writeRandomPeftAdapter(
      path.join(dir, 'other-peft'),
      other,
      syntheticSource(other, 1),
      lora,
      3,
      0.1,
    );
    const otherFile = path.join(dir, 'other-adapter.gguf');
    exportGgufLora(otherAdapter, other, otherFile);

    assert.throws(
      () => loadGgufLoraAdapter(qwenFile, ck.config),
      /adapter is for architecture "qwen2" but the model is "llama"/,
    );
    assert.throws(
      () => loadGgufLoraAdapter(otherFile, ck.config),
      /do not fit the model's \[64, 64\] weight/,
    );
    const model = await llama.loadModel({ modelPath: base });
    try {
      for (const file of [qwenFile, otherFile]) {
        await assert.rejects(
          llamaCppNextTokens(model, [1, 2], 1, file),
          Error,
          `llama.cpp accepted ${path.basename(file)}`,
        );
      }
    } finally {
      await model.dispose();
    }
  } finally {
    ck.close();
  }
});
