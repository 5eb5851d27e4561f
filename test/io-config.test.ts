// LlamaConfig parsing: HF config.json (legacy rope_scaling and v5 rope_parameters), GGUF metadata
// (written with the GGUF writer, incl. Llama-3 rope_freqs and Qwen2 biases), and round trips.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ropeInverseFrequencies, type RopeScaling } from '../src/backends/rope-tables.js';
import { GgmlType } from '../src/io/ggml-types.js';
import { GgufValueType as T } from '../src/io/gguf.js';
import { writeGguf, type GgufMetadataEntry } from '../src/io/gguf-writer.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { configFromHf, configToHf, loadHfConfig } from '../src/io/config.js';
import { randn } from './util.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));

test('TinyLlama-1.1B config.json', () => {
  const c = loadHfConfig(here('../fixtures/tinyllama-config.json'));
  assert.deepEqual(c, {
    architecture: 'llama',
    vocabSize: 32000,
    hiddenSize: 2048,
    intermediateSize: 5632,
    numLayers: 22,
    numHeads: 32,
    numKvHeads: 4,
    headDim: 64,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    maxPositionEmbeddings: 2048,
    tieWordEmbeddings: false,
    attentionBias: false,
    attentionOutputBias: false,
    mlpBias: false,
    bosTokenId: 1,
    eosTokenId: 2,
    eosTokenIds: [2],
    slidingWindow: null,
    slidingLayers: null,
  });
});

const LLAMA32_3B = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 3072,
  intermediate_size: 8192,
  num_hidden_layers: 28,
  num_attention_heads: 24,
  num_key_value_heads: 8,
  vocab_size: 128256,
  tie_word_embeddings: true,
  rope_theta: 500000.0,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  head_dim: 128,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
  attention_bias: false,
  mlp_bias: false,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
};
const LLAMA3_SCALING: RopeScaling = {
  ropeType: 'llama3',
  factor: 32,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};

test('Llama-3.2 rope_scaling and the transformers v5 rope_parameters form parse the same', () => {
  const legacy = configFromHf(LLAMA32_3B);
  assert.deepEqual(legacy.ropeScaling, LLAMA3_SCALING);
  assert.equal(legacy.ropeTheta, 500000);
  assert.equal(legacy.headDim, 128);
  assert.equal(legacy.tieWordEmbeddings, true);
  assert.equal(legacy.bosTokenId, 128000);
  assert.equal(legacy.eosTokenId, 128001);
  assert.deepEqual(legacy.eosTokenIds, [128001, 128008, 128009]);
  const { rope_scaling: rs, rope_theta: _theta, ...rest } = LLAMA32_3B;
  const v5 = configFromHf({ ...rest, rope_parameters: { ...rs, rope_theta: 500000.0 } });
  assert.deepEqual(v5, legacy);
  // Legacy "type" key and a linear scaling.
  assert.deepEqual(
    configFromHf({ ...LLAMA32_3B, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling,
    { ropeType: 'linear', factor: 2 },
  );
  assert.equal(
    configFromHf({ ...rest, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } })
      .ropeScaling,
    null,
  );
});

test('defaults: missing num_key_value_heads and head_dim, architectures-only configs', () => {
  const c = configFromHf({
    architectures: ['LlamaForCausalLM'],
    hidden_size: 64,
    num_attention_heads: 4,
    num_hidden_layers: 2,
    intermediate_size: 128,
    vocab_size: 100,
  });
  assert.equal(c.architecture, 'llama');
  assert.equal(c.numKvHeads, 4);
  assert.equal(c.headDim, 16);
  assert.equal(c.rmsNormEps, 1e-6); // transformers LlamaConfig default
  assert.equal(c.maxPositionEmbeddings, 2048);
  const explicitHead = configFromHf({
    model_type: 'llama',
    hidden_size: 64,
    num_attention_heads: 4,
    head_dim: 32,
    vocab_size: 100,
  });
  assert.equal(explicitHead.headDim, 32);
  const biased = configFromHf({
    model_type: 'llama',
    attention_bias: true,
    mlp_bias: true,
    vocab_size: 100,
  });
  assert.deepEqual(
    [biased.attentionBias, biased.attentionOutputBias, biased.mlpBias],
    [true, true, true],
  );
});

test('qwen2 and mistral specifics', () => {
  const qwen = configFromHf({
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    rope_theta: 1000000.0,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: true,
    bos_token_id: 151643,
    eos_token_id: 151643,
    sliding_window: 32768,
    use_sliding_window: false,
    max_position_embeddings: 32768,
  });
  assert.equal(qwen.headDim, 64);
  assert.equal(qwen.attentionBias, true, 'Qwen2 q/k/v always have a bias');
  assert.equal(qwen.attentionOutputBias, false);
  assert.equal(qwen.slidingWindow, null);
  const mistral = configFromHf({ model_type: 'mistral', sliding_window: 4096 });
  assert.equal(mistral.numKvHeads, 8);
  assert.equal(mistral.slidingWindow, 4096);
  assert.equal(mistral.slidingLayers, null, 'every Mistral layer slides');
  assert.equal(mistral.intermediateSize, 14336);
});

test('which layers slide: Qwen2 from max_window_layers (default 28), layer_types when given', () => {
  const qwen2 = { model_type: 'qwen2', sliding_window: 64, use_sliding_window: true };
  const byDefault = configFromHf({ ...qwen2, num_hidden_layers: 30 });
  assert.equal(byDefault.slidingWindow, 64);
  assert.deepEqual(
    byDefault.slidingLayers,
    Array.from({ length: 30 }, (_, i) => i >= 28),
  );
  const explicit = configFromHf({ ...qwen2, num_hidden_layers: 3, max_window_layers: 1 });
  assert.deepEqual(explicit.slidingLayers, [false, true, true]);
  const typed = configFromHf({
    ...qwen2,
    num_hidden_layers: 3,
    max_window_layers: 1,
    layer_types: ['full_attention', 'sliding_attention', 'full_attention'],
  });
  assert.deepEqual(typed.slidingLayers, [false, true, false]);
  assert.equal(configFromHf({ ...qwen2, use_sliding_window: false }).slidingLayers, null);
  // Qwen3 follows the same rule: transformers 5.18's Qwen3Config(use_sliding_window=True,
  // sliding_window=64, num_hidden_layers=4, max_window_layers=2).layer_types is
  // [full, full, sliding, sliding] (printed here, not in CI).
  const qwen3 = configFromHf({
    ...qwen2,
    model_type: 'qwen3',
    head_dim: 16,
    num_hidden_layers: 4,
    max_window_layers: 2,
  });
  assert.deepEqual(qwen3.slidingLayers, [false, false, true, true]);
  assert.equal(configToHf(qwen3)['max_window_layers'], 2);
  for (const [json, pattern] of [
    [
      { ...qwen2, num_hidden_layers: 2, layer_types: ['full_attention'] },
      /layer_types lists 1 layers, expected 2/,
    ],
    [
      { ...qwen2, num_hidden_layers: 1, layer_types: ['chunked_attention'] },
      /layer_types\[0\] is 'chunked_attention'/,
    ],
    [{ ...qwen2, num_hidden_layers: 2, max_window_layers: 3 }, /max_window_layers 3 exceeds/],
  ] as const) {
    assert.throws(() => configFromHf(json), pattern);
  }
});

test('invalid configs fail with one clear line', () => {
  const cases: [unknown, RegExp][] = [
    [{ model_type: 'gpt2' }, /config\.json: unsupported model_type 'gpt2'/],
    [{ architectures: ['BertModel'] }, /unknown architecture/],
    [{ model_type: 'llama', num_attention_heads: '32' }, /invalid field 'num_attention_heads'/],
    [
      { model_type: 'llama', num_attention_heads: 32, num_key_value_heads: 5 },
      /not a multiple of num_key_value_heads 5/,
    ],
    [
      { model_type: 'llama', rope_scaling: { rope_type: 'yarn', factor: 4 } },
      /unsupported rope scaling type 'yarn'/,
    ],
    [
      { model_type: 'llama', rope_scaling: { rope_type: 'llama3', factor: 8 } },
      /needs factor, low_freq_factor/,
    ],
    [{ model_type: 'llama', hidden_size: 100, num_attention_heads: 3 }, /not divisible/],
    [{ model_type: 'llama', hidden_act: 'gelu' }, /hidden_act 'gelu'/],
    [{ model_type: 'llama', vocab_size: 10, eos_token_id: 12 }, /special token id 12 is outside/],
    [[1, 2], /config\.json: /],
  ];
  for (const [json, pattern] of cases) {
    assert.throws(
      () => configFromHf(json),
      (e: Error) => pattern.test(e.message) && !e.message.includes('\n'),
      JSON.stringify(json),
    );
  }
});

test('configToHf round trips through configFromHf', () => {
  for (const src of [
    LLAMA32_3B,
    { model_type: 'qwen2', vocab_size: 1000 },
    { model_type: 'mistral', sliding_window: 4096 },
    { model_type: 'llama', rope_scaling: { type: 'linear', factor: 4 } },
    {
      model_type: 'qwen2',
      num_hidden_layers: 4,
      sliding_window: 32,
      use_sliding_window: true,
      max_window_layers: 2,
    },
    {
      model_type: 'qwen2',
      num_hidden_layers: 3,
      sliding_window: 32,
      use_sliding_window: true,
      layer_types: ['sliding_attention', 'full_attention', 'sliding_attention'],
    },
  ]) {
    const c = configFromHf(src);
    assert.deepEqual(configFromHf(JSON.parse(JSON.stringify(configToHf(c)))), c);
  }
  const tiny = loadHfConfig(here('../fixtures/tinyllama-config.json'));
  assert.deepEqual(configFromHf(configToHf(tiny)), tiny);
});

// --- GGUF-sourced configs, written with the GGUF writer ---

interface TinyModel {
  arch: 'llama' | 'qwen2';
  scaling?: RopeScaling;
  linearFactor?: number;
}

/** A one-layer model GGUF: hidden 32, 2 heads of 16, 1 kv head, ffn 24, vocab 16, tied (no output). */
function writeTinyGguf(file: string, m: TinyModel): Map<string, Float32Array> {
  const arch = m.arch;
  const meta: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: T.STRING, value: arch },
    { key: `${arch}.context_length`, type: T.U32, value: 256 },
    { key: `${arch}.embedding_length`, type: T.U32, value: 32 },
    { key: `${arch}.block_count`, type: T.U32, value: 1 },
    { key: `${arch}.feed_forward_length`, type: T.U32, value: 24 },
    { key: `${arch}.attention.head_count`, type: T.U32, value: 2 },
    { key: `${arch}.attention.head_count_kv`, type: T.U64, value: 1 }, // u64 counts must be accepted too
    { key: `${arch}.rope.freq_base`, type: T.F32, value: 500000 },
    { key: `${arch}.attention.layer_norm_rms_epsilon`, type: T.F32, value: 1e-6 },
    { key: 'tokenizer.ggml.bos_token_id', type: T.U32, value: 1 },
    { key: 'tokenizer.ggml.eos_token_id', type: T.U32, value: 2 },
  ];
  if (m.linearFactor) {
    meta.push({ key: `${arch}.rope.scaling.type`, type: T.STRING, value: 'linear' });
    meta.push({ key: `${arch}.rope.scaling.factor`, type: T.F32, value: m.linearFactor });
  }
  const shapes: [string, number[]][] = [
    ['token_embd.weight', [16, 32]],
    ['output_norm.weight', [32]],
    ['blk.0.attn_norm.weight', [32]],
    ['blk.0.attn_q.weight', [32, 32]],
    ['blk.0.attn_k.weight', [16, 32]],
    ['blk.0.attn_v.weight', [16, 32]],
    ['blk.0.attn_output.weight', [32, 32]],
    ['blk.0.ffn_norm.weight', [32]],
    ['blk.0.ffn_gate.weight', [24, 32]],
    ['blk.0.ffn_up.weight', [24, 32]],
    ['blk.0.ffn_down.weight', [32, 24]],
  ];
  if (arch === 'qwen2')
    shapes.push(
      ['blk.0.attn_q.bias', [32]],
      ['blk.0.attn_k.bias', [16]],
      ['blk.0.attn_v.bias', [16]],
    );
  const values = new Map<string, Float32Array>();
  shapes.forEach(([name, shape], i) =>
    values.set(
      name,
      Float32Array.from(
        randn(
          shape.reduce((a, b) => a * b, 1),
          100 + i,
        ),
      ),
    ),
  );
  if (m.scaling) {
    const base = ropeInverseFrequencies(16, 500000, null, 'f64');
    const scaled = ropeInverseFrequencies(16, 500000, m.scaling, 'f64');
    values.set(
      'rope_freqs.weight',
      Float32Array.from(base, (b, i) => b / scaled[i]!),
    );
    shapes.push(['rope_freqs.weight', [8]]);
  }
  writeGguf(
    file,
    meta,
    shapes.map(([name, shape]) => ({
      name,
      shape,
      type: GgmlType.F32,
      data: new Uint8Array(values.get(name)!.buffer),
    })),
  );
  return values;
}

test('GGUF configs: Llama-3 rope_freqs recovered, linear scaling, tied when output is absent, u64 counts', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-cfg-'));
  try {
    const scaling: RopeScaling = {
      ropeType: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    };
    const f1 = path.join(dir, 'llama3.gguf');
    writeTinyGguf(f1, { arch: 'llama', scaling });
    const ck = openCheckpoint(f1);
    try {
      assert.deepEqual(ck.config.ropeScaling, scaling);
      assert.equal(ck.config.tieWordEmbeddings, true);
      assert.equal(ck.config.numKvHeads, 1);
      assert.equal(ck.config.headDim, 16);
      assert.equal(
        ck.config.vocabSize,
        16,
        'vocab from the embedding rows when no vocab_size/tokens',
      );
      assert.equal(ck.config.rmsNormEps, 1e-6);
      assert.equal(ck.config.ropeTheta, 500000);
      assert.ok(!ck.has('lm_head.weight'));
    } finally {
      ck.close();
    }
    const f2 = path.join(dir, 'linear.gguf');
    writeTinyGguf(f2, { arch: 'llama', linearFactor: 4 });
    const ck2 = openCheckpoint(f2);
    assert.deepEqual(ck2.config.ropeScaling, { ropeType: 'linear', factor: 4 });
    ck2.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('Qwen2 GGUF: q/k/v biases loaded, Q/K rows not permuted (NEOX rope); llama Q/K are', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-cfg-'));
  try {
    const fq = path.join(dir, 'qwen.gguf');
    const stored = writeTinyGguf(fq, { arch: 'qwen2' });
    const ck = openCheckpoint(fq);
    try {
      assert.equal(ck.config.architecture, 'qwen2');
      assert.equal(ck.config.attentionBias, true);
      assert.deepEqual(
        ck.loadTensor('model.layers.0.self_attn.q_proj.weight'),
        stored.get('blk.0.attn_q.weight'),
      );
      assert.deepEqual(
        ck.loadTensor('model.layers.0.self_attn.k_proj.bias'),
        stored.get('blk.0.attn_k.bias'),
      );
      assert.ok(!ck.has('model.layers.0.self_attn.o_proj.bias'));
    } finally {
      ck.close();
    }
    const fl = path.join(dir, 'llama.gguf');
    const ls = writeTinyGguf(fl, { arch: 'llama' });
    const cl = openCheckpoint(fl);
    try {
      const q = cl.loadTensor('model.layers.0.self_attn.q_proj.weight');
      const raw = ls.get('blk.0.attn_q.weight')!;
      // head 1, HF row j·8 + i ← stored row 2i + j (hd 16): HF row 16+8+3 = stored row 16+7.
      assert.deepEqual(q.subarray(27 * 32, 28 * 32), raw.subarray(23 * 32, 24 * 32));
      assert.notDeepEqual(q, raw);
    } finally {
      cl.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('GGUF with an unsupported architecture names it', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-cfg-'));
  try {
    const f = path.join(dir, 'phi.gguf');
    writeGguf(
      f,
      [{ key: 'general.architecture', type: T.STRING, value: 'phi2' }],
      [{ name: 'token_embd.weight', shape: [2, 8], type: GgmlType.F32, data: new Uint8Array(64) }],
    );
    assert.throws(
      () => openCheckpoint(f),
      /^FileFormatError: phi\.gguf: unsupported general\.architecture 'phi2'/,
    );
    const v = here('../fixtures/gguf-vocab/ggml-vocab-llama-spm.gguf');
    assert.throws(
      () => openCheckpoint(v),
      /ggml-vocab-llama-spm\.gguf: no 'token_embd\.weight' tensor \(vocabulary-only GGUF\?\)/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
