// Phi-3 / Phi-3.5 / Phi-4-mini through the family descriptor: the real config.json files
// (fixtures/model-configs) parse to fused qkv_proj / gate_up_proj (GGUF attn_qkv, ffn_up), plain
// rope (Phi-3-mini-4k), LongRoPE (Phi-3.5-mini, Phi-4-mini) and partial rotary (Phi-4-mini); LoRA
// targets naming a fused role select the fused module; the whole model's LoRA gradients equal
// float64 finite differences through the fused split, LongRoPE's long tables and partial rotary;
// the cpu backend agrees with ref; the forward equals transformers' Phi3ForCausalLM on the same
// random weights for all three (fixtures/families/phi-*-tiny.reference.json, from
// scripts/family-reference.py), on the long factors and on the short ones; PEFT keys, shapes and
// target_modules are what HF PEFT writes; a short training run's eval loss falls.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { longropeAttentionFactor, type RopeScaling } from '../src/backends/rope-tables.js';
import { initRandomModel } from '../src/export/init-random.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { configFromHf, configToHf, type LlamaConfig, loadHfConfig } from '../src/io/config.js';
import { adapterConfigJson, loadPeftAdapter, savePeftAdapter } from '../src/io/peft.js';
import { tinyHfConfig } from '../src/io/tiny-config.js';
import { type BuildConfig, buildLlama, type LoraConfig } from '../src/models/build.js';
import { type LlamaModel, type ModelBatch, type StepOptions } from '../src/models/llama.js';
import { familyTargets, tensorTable } from '../src/models/registry.js';
import { syntheticSource } from '../src/models/synthetic.js';
import { train } from '../src/train/run.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { materialize } from './tokenizer-fixtures.js';
import { logitsOf, maxDiff } from './family-support.js';
import { randn } from './util.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const CONFIG = (n: string): string => here(`../fixtures/model-configs/${n}.json`);
const SHAPES = ['phi-3-mini', 'phi-3.5-mini', 'phi-4-mini'] as const;
let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-phi3-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const LORA: LoraConfig = {
  r: 2,
  alpha: 3,
  dropout: 0,
  useRslora: false,
  init: 'kaiming',
  seed: 5,
  targets: 'all-linear',
  layers: null,
};

test('Phi-3 config.json files: fused projections, plain rope / LongRoPE / partial rotary, as the model cards have them', () => {
  const mini = loadHfConfig(CONFIG('phi-3-mini'));
  assert.equal(mini.architecture, 'phi3');
  assert.equal(mini.ropeScaling, null);
  assert.equal(mini.rotaryDim, undefined);
  assert.equal(mini.slidingWindow, 2047);
  assert.equal(mini.numKvHeads, 32);
  assert.equal(mini.tieWordEmbeddings, false);

  const p35 = loadHfConfig(CONFIG('phi-3.5-mini'));
  const s = p35.ropeScaling as Extract<RopeScaling, { ropeType: 'longrope' }>;
  assert.equal(s.ropeType, 'longrope');
  assert.equal(s.factor, 32, '131072 / 4096');
  assert.equal(s.originalMaxPositionEmbeddings, 4096);
  // transformers: sqrt(1 + ln(32) / ln(4096)).
  assert.ok(Math.abs(s.attentionFactor - 1.1902380714238083) < 1e-12, `${s.attentionFactor}`);
  assert.equal(s.shortFactor.length, 48);
  assert.ok(Math.abs(s.longFactor[47]! - 64.84) < 1e-4, 'the last long factor');

  const p4 = loadHfConfig(CONFIG('phi-4-mini'));
  assert.equal(p4.headDim, 128);
  assert.equal(p4.rotaryDim, 96, 'partial_rotary_factor 0.75');
  assert.equal(p4.numHeads / p4.numKvHeads, 3);
  assert.equal(p4.tieWordEmbeddings, true);
  assert.equal((p4.ropeScaling as { longFactor: readonly number[] }).longFactor.length, 48);
  // Written back, the same config.
  assert.deepEqual(configFromHf(configToHf(p4)), p4);
  assert.deepEqual(configFromHf(configToHf(p35)), p35);

  const layer0 = tensorTable(p4).filter((e) => e.hf.startsWith('model.layers.0.'));
  assert.deepEqual(
    layer0.map((e) => [e.hf.slice('model.layers.0.'.length), e.gguf, e.shape]),
    [
      ['input_layernorm.weight', 'blk.0.attn_norm.weight', [3072]],
      ['self_attn.qkv_proj.weight', 'blk.0.attn_qkv.weight', [5120, 3072]],
      ['self_attn.o_proj.weight', 'blk.0.attn_output.weight', [3072, 3072]],
      ['post_attention_layernorm.weight', 'blk.0.ffn_norm.weight', [3072]],
      ['mlp.gate_up_proj.weight', 'blk.0.ffn_up.weight', [16384, 3072]],
      ['mlp.down_proj.weight', 'blk.0.ffn_down.weight', [3072, 8192]],
    ],
  );
  // LongRoPE factors of the wrong length are refused with the field named.
  const bad = JSON.parse(fs.readFileSync(CONFIG('phi-4-mini'), 'utf8')) as {
    rope_scaling: { short_factor: number[] };
  };
  bad.rope_scaling.short_factor = bad.rope_scaling.short_factor.slice(1);
  assert.throws(() => configFromHf(bad), /short_factor has 47 values, expected 48/);
});

test('Phi-3 LoRA targets: a fused role selects its fused module, as PEFT names them', () => {
  assert.deepEqual([...familyTargets('phi3', ['q_proj', 'v_proj'])], ['qkv_proj']);
  assert.deepEqual([...familyTargets('phi3', ['gate_proj', 'down_proj', 'o_proj'])].sort(), [
    'down_proj',
    'gate_up_proj',
    'o_proj',
  ]);
  assert.deepEqual(
    [...familyTargets('phi3', 'all-linear')],
    ['qkv_proj', 'o_proj', 'gate_up_proj', 'down_proj'],
  );
  assert.throws(
    () => familyTargets('llama', ['qkv_proj']),
    /unknown LoRA target 'qkv_proj' for llama/,
  );
  const config = adapterConfigJson({ ...LORA, targets: ['q_proj', 'k_proj'] }, null, 'phi3');
  assert.deepEqual(config.target_modules, ['qkv_proj']);
});

/**
 * A tiny Phi-3 with everything at once: GQA, head_dim 6 with 4 rotated dims (partial rotary), and
 * LongRoPE with an original context of 3 so the batch below (positions up to 4) takes the long
 * factors.
 */
const tiny: BuildConfig = {
  architecture: 'phi3',
  vocabSize: 13,
  hiddenSize: 8,
  intermediateSize: 10,
  numLayers: 2,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 6,
  rotaryDim: 4,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: {
    ropeType: 'longrope',
    factor: 64 / 3,
    shortFactor: [1, 1.5],
    longFactor: [2.5, 7],
    originalMaxPositionEmbeddings: 3,
    attentionFactor: longropeAttentionFactor(64 / 3, 3),
  },
  maxPositionEmbeddings: 64,
  tieWordEmbeddings: true,
  attentionBias: false,
};

const batch: ModelBatch = {
  batchSize: 2,
  seqLen: 5,
  inputIds: Int32Array.from([1, 4, 7, 2, 9, 3, 3, 12, 0, 5]),
  labels: Int32Array.from([4, 7, -100, 9, 11, -100, -100, 0, 5, 6]),
  positions: Int32Array.from([0, 1, 2, 0, 1, 0, 1, 2, 3, 4]),
  segmentIds: Int32Array.from([0, 0, 0, 1, 1, 0, 0, 0, 0, 0]),
};

const STEP: StepOptions = {
  training: true,
  stepSeed: 77,
  gradientCheckpointing: false,
  lossChunkRows: 3,
  gradScale: 1,
};

/** Random weights and random LoRA B (so every adapter's gradient flows). */
async function buildTiny(backendName: 'ref' | 'cpu'): Promise<LlamaModel> {
  const be = await getBackend(backendName);
  const values = new Map<string, Float32Array>();
  tensorTable(tiny).forEach((e, k) => {
    const n = e.shape.reduce((a, b) => a * b, 1);
    const isNorm = e.role.kind === 'norm' || e.role.kind === 'finalNorm';
    const v = randn(n, 31 + 101 * k, isNorm ? 0.4 : 0.5);
    values.set(
      e.hf,
      Float32Array.from(v, (x) => (isNorm ? 1 + x : x)),
    );
  });
  const model = await buildLlama(
    tiny,
    { has: (n) => values.has(n), load: (n) => values.get(n)! },
    { backend: be, dtype: backendName === 'ref' ? 'f64' : 'f32', lora: LORA },
  );
  model.parameters().forEach((p, i) => {
    if (p.name.endsWith('lora_B.weight')) p.value.write(randn(p.value.size, 900 + i, 0.3));
  });
  return model;
}

async function lossAndGrads(model: LlamaModel, checkpointing = false) {
  const be = model.backend;
  const arena = be.createArena(1 << 16, 'step');
  const layerArena = be.createArena(1 << 16, 'layer');
  const params = model.parameters();
  for (const p of params) p.zeroGrad();
  const r = await model.lossAndGradients(
    batch,
    arena,
    layerArena,
    { ...STEP, gradientCheckpointing: checkpointing },
    true,
  );
  const grads = await Promise.all(params.map(async (p) => Float64Array.from(await p.grad!.read())));
  arena.dispose();
  layerArena.dispose();
  return { loss: r.lossSum / r.tokens, grads, names: params.map((p) => p.name) };
}

test('Phi-3 LoRA gradients through the fused qkv/gate_up split, LongRoPE and partial rotary equal float64 finite differences', async () => {
  const model = await buildTiny('ref');
  assert.deepEqual(Object.keys(model.layers[0]!.proj), [
    'qkv_proj',
    'o_proj',
    'gate_up_proj',
    'down_proj',
  ]);
  assert.deepEqual(
    model
      .parameters()
      .slice(0, 2)
      .map((p) => [p.name, p.value.shape]),
    [
      ['base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight', [2, 8]],
      // One adapter over the fused output: q (2 heads) + k + v (1 head each) of 6.
      ['base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight', [24, 2]],
    ],
  );
  const { grads: analytic } = await lossAndGrads(model);
  const recomputed = await lossAndGrads(model, true);
  recomputed.grads.forEach((g, i) => assert.deepEqual(g, analytic[i], 'checkpointing'));
  const be = model.backend;
  const arena = be.createArena(1 << 16, 'step');
  const layerArena = be.createArena(1 << 16, 'layer');
  const loss = async (): Promise<number> => {
    arena.reset();
    const r = await model.lossAndGradients(batch, arena, layerArena, STEP, false);
    return r.lossSum / r.tokens;
  };
  const h = 1e-6;
  const params = model.parameters();
  for (const [pi, p] of params.entries()) {
    const data = p.value.data as Float64Array;
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
    }
  }
  assert.ok(analytic.some((g) => g.some((x) => Math.abs(x) > 1e-4)));
  arena.dispose();
  layerArena.dispose();
  model.dispose();
});

test('Phi-3 on the cpu backend: loss and every LoRA gradient match the ref backend', async () => {
  const ref = await buildTiny('ref');
  const cpu = await buildTiny('cpu');
  const a = await lossAndGrads(ref);
  const b = await lossAndGrads(cpu);
  assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(a.loss), `loss ${a.loss} vs ${b.loss}`);
  a.grads.forEach((g, i) => {
    let max = 0;
    let scale = 0;
    for (let j = 0; j < g.length; j++) {
      max = Math.max(max, Math.abs(g[j]! - b.grads[i]![j]!));
      scale = Math.max(scale, Math.abs(g[j]!));
    }
    assert.ok(max <= 1e-4 * scale + 1e-6, `${a.names[i]}: cpu differs by ${max} (scale ${scale})`);
  });
  ref.dispose();
  cpu.dispose();
});

for (const shape of SHAPES) {
  test(`${shape} forward equals transformers Phi3ForCausalLM on the same random weights (init-random --tiny, seed 7), long and short rope`, async () => {
    const ref = JSON.parse(
      fs.readFileSync(here(`../fixtures/families/${shape}-tiny.reference.json`), 'utf8'),
    ) as {
      config: string;
      seed: number;
      input_ids: number[];
      logits: number[][];
      prefix_logits: number[][];
    };
    const dir = path.join(tmp, `reference-${shape}`);
    const r = initRandomModel({ config: ref.config, output: dir, tiny: true, seed: ref.seed });
    const full = maxDiff(await logitsOf(dir, ref.input_ids), ref.logits);
    const prefix = maxDiff(await logitsOf(dir, ref.input_ids.slice(0, 8)), ref.prefix_logits);
    assert.ok(full.scale > 0.1 && prefix.scale > 0.1, 'reference logits are not all ~0');
    assert.ok(full.max <= 1e-4, `logits differ from transformers by ${full.max}`);
    assert.ok(prefix.max <= 1e-4, `prefix logits differ from transformers by ${prefix.max}`);
    if (r.config.ropeScaling?.ropeType === 'longrope') {
      // 16 tokens pass the tiny original context (8): long factors, so the first 8 rows differ
      // from the 8-token run's, which used the short ones.
      const V = ref.logits[0]!.length;
      const d = maxDiff(Float32Array.from(ref.logits.slice(0, 8).flat()), ref.prefix_logits);
      assert.ok(d.max > 1e-3, `long and short factors give the same logits (${d.max}, V ${V})`);
    }
    console.log(
      `# ${shape} tiny vs transformers: max |Δ logit| ${full.max.toExponential(2)} (16 tokens), ${prefix.max.toExponential(2)} (8 tokens)`,
    );
  });
}

test('Phi-3 written as an HF folder and as a GGUF (init-random, same seed) loads with identical logits and config', async () => {
  for (const shape of SHAPES) {
    const hfDir = path.join(tmp, `hf-${shape}`);
    const ggufDir = path.join(tmp, `gguf-${shape}`);
    initRandomModel({ config: shape, output: hfDir, tiny: true, seed: 3 });
    const g = initRandomModel({
      config: shape,
      output: ggufDir,
      tiny: true,
      seed: 3,
      format: 'gguf',
    });
    const ck = openCheckpoint(g.model);
    assert.equal(ck.config.architecture, 'phi3');
    // The same config, LongRoPE's factors as the f32 values both files compute with.
    const f32Factors = (c: LlamaConfig): LlamaConfig => {
      const s = c.ropeScaling;
      if (s?.ropeType !== 'longrope') return c;
      const r = (v: readonly number[]) => v.map(Math.fround);
      return {
        ...c,
        ropeScaling: { ...s, shortFactor: r(s.shortFactor), longFactor: r(s.longFactor) },
      };
    };
    assert.deepEqual(f32Factors(ck.config), f32Factors(openCheckpoint(hfDir).config), shape);
    assert.ok(ck.has('model.layers.1.self_attn.qkv_proj.weight'), shape);
    ck.close();
    // 12 tokens: past the tiny LongRoPE original context (8), so the long factors are read too.
    const ids = [256, 72, 101, 108, 108, 111, 33, 300, 400, 7, 8, 9];
    assert.deepEqual(await logitsOf(g.model, ids), await logitsOf(hfDir, ids), shape);
  }
});

test('Phi-3 PEFT adapter: keys, shapes and target_modules are what HF PEFT writes for Phi3ForCausalLM', async () => {
  for (const shape of SHAPES) {
    const expected = JSON.parse(
      fs.readFileSync(here(`../fixtures/families/${shape}-peft-keys.json`), 'utf8'),
    ) as { target_modules: string[]; keys: string[]; shapes: Record<string, number[]> };
    const hf = tinyHfConfig(
      JSON.parse(fs.readFileSync(CONFIG(shape), 'utf8')) as Record<string, unknown>,
    );
    const config = configFromHf(hf);
    const be = await getBackend('cpu');
    const model = await buildLlama(config, syntheticSource(config, 1), { backend: be, lora: LORA });
    const dir = path.join(tmp, `peft-${shape}`);
    await savePeftAdapter(dir, model, LORA, null);
    model.dispose();
    const adapter = loadPeftAdapter(dir);
    assert.deepEqual([...adapter.tensors.keys()].sort(), [...expected.keys].sort(), shape);
    for (const [k, t] of adapter.tensors)
      assert.deepEqual(t.shape, expected.shapes[k], `${shape} ${k}`);
    assert.deepEqual(adapter.config.target_modules, expected.target_modules, shape);
  }
});

test('Phi-4-mini trains: a short QLoRA run on a tiny init-random model lowers the eval loss', async () => {
  const dir = path.join(tmp, 'train-model');
  initRandomModel({ config: 'phi-4-mini', output: dir, tiny: true, seed: 11 });
  const rows = Array.from({ length: 48 }, (_, i) => ({
    text: `the cat sat on the mat ${i % 4}. the dog sat on the log ${i % 3}.`,
  }));
  const evals: number[] = [];
  await train({
    model: dir,
    data: { train: rows.slice(0, 40), valid: rows.slice(40) },
    output: path.join(tmp, 'train-out'),
    maxSteps: 30,
    seqLen: 32,
    batchSize: 4,
    lr: 1e-2,
    evalEvery: 30,
    backend: 'cpu',
    onEval: (m) => evals.push(m.evalLoss),
  });
  assert.ok(evals.length >= 2, `evaluations: ${evals.join(', ')}`);
  assert.ok(evals.at(-1)! < evals[0]! - 0.5, `eval loss ${evals[0]} → ${evals.at(-1)}`);
});

test('Phi-3-mini tokenizer.json loads and encodes a rendered chat to the ids onnxruntime-extensions expects', () => {
  const { dir, cleanup } = materialize({
    'phi-3-mini/tokenizer.json.gz': 'tokenizer.json',
    'phi-3-mini/tokenizer_config.json': 'tokenizer_config.json',
  });
  try {
    const tok = HfTokenizer.fromDirectory(dir);
    assert.equal(tok.vocabSize, 32011);
    // The chat as Phi-3-mini-4k-instruct's template renders it (onnxruntime-extensions'
    // OrtxTokenizerTest.Phi3MiniChatTemplate): special tokens strip the newline after them.
    const text =
      '<|system|>\nSystem message<|end|>\n<|user|>\nHello, can you call some tools for me?<|end|>\n' +
      '<|assistant|>\nSure, I can calculate the sum for you!<|end|>\n<|assistant|>\n';
    assert.deepEqual(
      Array.from(tok.encode(text)),
      [
        32006, 2184, 2643, 32007, 32010, 15043, 29892, 508, 366, 1246, 777, 8492, 363, 592, 29973,
        32007, 32001, 18585, 29892, 306, 508, 8147, 278, 2533, 363, 366, 29991, 32007, 32001,
      ],
    );
  } finally {
    cleanup();
  }
});
