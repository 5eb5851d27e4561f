// GGUF LoRA adapters: the exported file has llama.cpp's layout (docs/formats.md §5.6: names, ggml
// dims [in, r] / [r, out], alpha, B rows of attn_q/attn_k in interleaved order), re-importing it
// gives back the PEFT tensors and scale exactly, and adapters that do not fit the model are refused
// with errors naming the problem — the checks llama.cpp's loader makes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { loadGgufLoraAdapter, loadLoraAdapter } from '../src/io/gguf-lora.js';
import { loraScale } from '../src/export/lora-merge.js';
import { GgmlType } from '../src/io/ggml-types.js';
import { GgufReader, GgufValueType } from '../src/io/gguf.js';
import { writeGguf } from '../src/io/gguf-writer.js';
import type { PeftAdapter } from '../src/io/peft.js';
import type { LoraConfig } from '../src/models/build.js';
import { openCheckpoint, permuteToInterleavedRows } from '../src/io/checkpoint.js';
import { configFromHf, type LlamaConfig } from '../src/io/config.js';
import { syntheticSource } from '../src/models/synthetic.js';
import { getBackend } from '../src/backends/index.js';
import { applyPeftAdapter } from '../src/io/peft.js';
import { buildLlama } from '../src/models/build.js';
import { KvCache } from '../src/models/llama.js';
import { STORIES, writeRandomPeftAdapter } from './export-support.js';
import { maxAbsDiff } from './util.js';

let tmp: string;
let storiesConfig: LlamaConfig;
let adapter: PeftAdapter;
const LORA: LoraConfig = {
  r: 4,
  alpha: 6,
  dropout: 0,
  useRslora: true,
  init: 'kaiming',
  seed: 3,
  targets: ['q_proj', 'k_proj', 'down_proj'],
  layers: null,
};

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-lora-'));
  const ck = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  storiesConfig = ck.config;
  try {
    adapter = await writeRandomPeftAdapter(path.join(tmp, 'peft'), ck.config, ck, LORA, 21, 0.1);
  } finally {
    ck.close();
  }
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('exported GGUF LoRA: adapter metadata, lora_a [in, r], lora_b [r, out], B rows of attn_q/attn_k permuted, rsLoRA folded into alpha', () => {
  const file = path.join(tmp, 'a.gguf');
  exportGgufLora(adapter, storiesConfig, file);
  const r = GgufReader.open(file);
  try {
    assert.equal(r.metadata.get('general.type'), 'adapter');
    assert.equal(r.metadata.get('adapter.type'), 'lora');
    assert.equal(r.metadata.get('general.architecture'), 'llama');
    assert.equal(r.gguf.metadataTypes.get('adapter.lora.alpha'), GgufValueType.F32);
    // llama.cpp scales by alpha/r; rsLoRA's alpha/√r needs alpha·√r.
    const alpha = r.metadata.get('adapter.lora.alpha') as number;
    assert.ok(Math.abs(alpha / LORA.r - LORA.alpha / Math.sqrt(LORA.r)) < 1e-6, `alpha ${alpha}`);
    assert.equal(r.tensors.length, 5 * 3 * 2);
    const q = r.tensor('blk.1.attn_q.weight.lora_a');
    assert.deepEqual(q.ne, [64, 4]);
    assert.equal(q.type, GgmlType.F32);
    assert.deepEqual(r.tensor('blk.1.attn_k.weight.lora_b').ne, [4, 32]);
    assert.deepEqual(r.tensor('blk.4.ffn_down.weight.lora_a').ne, [172, 4]);
    assert.deepEqual(r.tensor('blk.4.ffn_down.weight.lora_b').ne, [4, 64]);
    const peft = (k: string) => adapter.tensors.get(`base_model.model.model.layers.1.${k}`)!.values;
    // A untouched; B of q (8 heads) and k (4 kv heads) permuted to interleaved rows; others as is.
    assert.deepEqual(
      r.readF32('blk.1.attn_q.weight.lora_a'),
      peft('self_attn.q_proj.lora_A.weight'),
    );
    assert.deepEqual(
      r.readF32('blk.1.attn_q.weight.lora_b'),
      permuteToInterleavedRows(peft('self_attn.q_proj.lora_B.weight'), 8, 4),
    );
    assert.deepEqual(
      r.readF32('blk.1.attn_k.weight.lora_b'),
      permuteToInterleavedRows(peft('self_attn.k_proj.lora_B.weight'), 4, 4),
    );
    assert.notDeepEqual(
      r.readF32('blk.1.attn_q.weight.lora_b'),
      peft('self_attn.q_proj.lora_B.weight'),
    );
    assert.deepEqual(
      r.readF32('blk.1.ffn_down.weight.lora_b'),
      peft('mlp.down_proj.lora_B.weight'),
    );
  } finally {
    r.close();
  }
});

test('re-imported GGUF LoRA equals the PEFT adapter (tensors, targets, scale); loadLoraAdapter takes either form', () => {
  const file = path.join(tmp, 'b.gguf');
  exportGgufLora(adapter, storiesConfig, file);
  const back = loadGgufLoraAdapter(file, storiesConfig);
  assert.equal(back.lora.r, 4);
  assert.deepEqual(back.lora.targets, ['q_proj', 'k_proj', 'down_proj']);
  assert.equal(back.lora.layers, null);
  assert.ok(
    Math.abs(loraScale(back) - loraScale(adapter)) < 1e-6,
    `scale ${loraScale(back)} vs ${loraScale(adapter)}`,
  );
  assert.deepEqual([...back.tensors.keys()].sort(), [...adapter.tensors.keys()].sort());
  for (const [k, t] of adapter.tensors) {
    assert.deepEqual(back.tensors.get(k)!.shape, t.shape, k);
    assert.deepEqual(back.tensors.get(k)!.values, t.values, k);
  }
  assert.equal(loadLoraAdapter(file, storiesConfig).tensors.size, adapter.tensors.size);
  assert.equal(
    loadLoraAdapter(path.join(tmp, 'peft'), storiesConfig).tensors.size,
    adapter.tensors.size,
  );
});

test('a model with the re-imported GGUF LoRA applied gives the same logits as with the PEFT adapter', async () => {
  const file = path.join(tmp, 'apply.gguf');
  exportGgufLora(adapter, storiesConfig, file);
  const be = await getBackend('ref');
  const ck = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  const logits = async (a: PeftAdapter): Promise<Float32Array> => {
    const model = await buildLlama(ck.config, ck, { backend: be, lora: a.lora, maxPositions: 16 });
    applyPeftAdapter(model, a);
    const arena = be.createArena(1 << 20);
    const cache = new KvCache(model, 8);
    try {
      return Float32Array.from(
        await model.forwardCached(Int32Array.of(1, 403, 407, 261), cache, arena, 1).read(),
      );
    } finally {
      cache.dispose();
      arena.dispose();
      model.dispose();
    }
  };
  try {
    const viaPeft = await logits(adapter);
    const viaGguf = await logits(loadGgufLoraAdapter(file, storiesConfig));
    const base = await logits({
      ...adapter,
      tensors: new Map(
        [...adapter.tensors].map(([k, t]) => [
          k,
          { ...t, values: new Float32Array(t.values.length) },
        ]),
      ),
    });
    assert.ok(
      maxAbsDiff(viaGguf, viaPeft) < 1e-5,
      `logits differ by ${maxAbsDiff(viaGguf, viaPeft)}`,
    );
    assert.ok(maxAbsDiff(viaPeft, base) > 1e-2, 'the adapter changes the logits');
  } finally {
    ck.close();
  }
});

test('a GGUF LoRA covering only some projections of a layer gets zero A/B for the rest; alpha 0 means scale 1', () => {
  const file = path.join(tmp, 'partial.gguf');
  const a = new Float32Array(64 * 2).fill(0.5);
  const b = new Float32Array(2 * 32).fill(0.25);
  writeGguf(
    file,
    [
      { key: 'general.architecture', type: GgufValueType.STRING, value: 'llama' },
      { key: 'general.type', type: GgufValueType.STRING, value: 'adapter' },
      { key: 'adapter.type', type: GgufValueType.STRING, value: 'lora' },
      { key: 'adapter.lora.alpha', type: GgufValueType.F32, value: 0 },
    ],
    [
      {
        name: 'blk.0.attn_v.weight.lora_a',
        shape: [2, 64],
        type: GgmlType.F32,
        data: new Uint8Array(a.buffer),
      },
      {
        name: 'blk.0.attn_v.weight.lora_b',
        shape: [32, 2],
        type: GgmlType.F32,
        data: new Uint8Array(b.buffer),
      },
      {
        name: 'blk.3.attn_q.weight.lora_a',
        shape: [2, 64],
        type: GgmlType.F32,
        data: new Uint8Array(a.buffer),
      },
      {
        name: 'blk.3.attn_q.weight.lora_b',
        shape: [64, 2],
        type: GgmlType.F32,
        data: new Uint8Array(new Float32Array(128).fill(1).buffer),
      },
    ],
  );
  const back = loadGgufLoraAdapter(file, storiesConfig);
  assert.deepEqual(back.lora.targets, ['q_proj', 'v_proj']);
  assert.deepEqual(back.lora.layers, [0, 3]);
  assert.equal(loraScale(back), 1);
  const zeros = back.tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight')!;
  assert.deepEqual(zeros.shape, [64, 2]);
  assert.ok(zeros.values.every((v) => v === 0));
  assert.ok(
    back.tensors
      .get('base_model.model.model.layers.3.self_attn.v_proj.lora_A.weight')!
      .values.every((v) => v === 0),
  );
});

test('adapters that do not fit are refused with a clear error', async () => {
  // Shapes: an adapter for a different (GQA, hidden 48) model against stories260K.
  const otherHf = {
    model_type: 'llama',
    vocab_size: 512,
    hidden_size: 48,
    intermediate_size: 96,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
  };
  const other = configFromHf(otherHf);
  const otherAdapter = await writeRandomPeftAdapter(
    path.join(tmp, 'other-peft'),
    other,
    syntheticSource(other, 1),
    { ...LORA, useRslora: false },
    5,
    0.1,
  );
  const otherFile = path.join(tmp, 'other.gguf');
  exportGgufLora(otherAdapter, other, otherFile);
  assert.throws(
    () => loadGgufLoraAdapter(otherFile, storiesConfig),
    /other\.gguf: 'blk\.0\.ffn_down\.weight' LoRA dims a \[96, 4\], b \[4, 48\] do not fit the model's \[64, 172\] weight \(needs a \[172, r\], b \[r, 64\]/,
  );
  assert.throws(
    () => loadLoraAdapter(path.join(tmp, 'other-peft'), storiesConfig),
    /'base_model\.model\.model\.layers\.0\.mlp\.down_proj\.lora_A\.weight' has shape \[4, 96\] but the model's 'model\.layers\.0\.mlp\.down_proj\.weight' \[64, 172\] needs \[4, 172\]/,
  );
  assert.throws(
    () => exportGgufLora(otherAdapter, storiesConfig, path.join(tmp, 'x.gguf')),
    /adapter for a different model/,
  );

  // Architecture: the same shapes exported for a qwen2 base.
  const qwen: LlamaConfig = { ...storiesConfig, architecture: 'qwen2', attentionBias: true };
  const qwenFile = path.join(tmp, 'qwen.gguf');
  exportGgufLora(adapter, qwen, qwenFile);
  assert.throws(
    () => loadGgufLoraAdapter(qwenFile, storiesConfig),
    /adapter is for architecture "qwen2" but the model is "llama"/,
  );

  // Not an adapter at all, and an adapter whose B is missing.
  assert.throws(
    () => loadGgufLoraAdapter(path.join(STORIES, 'stories260K.gguf'), storiesConfig),
    /not a LoRA adapter \(general\.type is null, expected "adapter"\)/,
  );
  const half = path.join(tmp, 'half.gguf');
  writeGguf(
    half,
    [
      { key: 'general.architecture', type: GgufValueType.STRING, value: 'llama' },
      { key: 'general.type', type: GgufValueType.STRING, value: 'adapter' },
      { key: 'adapter.type', type: GgufValueType.STRING, value: 'lora' },
    ],
    [
      {
        name: 'blk.0.attn_q.weight.lora_a',
        shape: [2, 64],
        type: GgmlType.F32,
        data: new Uint8Array(512),
      },
    ],
  );
  assert.throws(
    () => loadGgufLoraAdapter(half, storiesConfig),
    /'blk\.0\.attn_q\.weight' has lora_a but no lora_b/,
  );
  // A transposed A (rank mismatch between A and B).
  const transposed = path.join(tmp, 'transposed.gguf');
  writeGguf(
    transposed,
    [
      { key: 'general.architecture', type: GgufValueType.STRING, value: 'llama' },
      { key: 'general.type', type: GgufValueType.STRING, value: 'adapter' },
      { key: 'adapter.type', type: GgufValueType.STRING, value: 'lora' },
    ],
    [
      {
        name: 'blk.0.attn_q.weight.lora_a',
        shape: [64, 2],
        type: GgmlType.F32,
        data: new Uint8Array(512),
      },
      {
        name: 'blk.0.attn_q.weight.lora_b',
        shape: [64, 2],
        type: GgmlType.F32,
        data: new Uint8Array(512),
      },
    ],
  );
  assert.throws(
    () => loadGgufLoraAdapter(transposed, storiesConfig),
    /disagree on the rank \(lora_a tensor is not transposed\?\)/,
  );
});
