// The QLoRA trainer on the bundled stories260K + tiny-shakespeare excerpt: the eval loss drops,
// a resumed run equals the uninterrupted one bit for bit, PEFT files are exact, bad adapters and
// non-finite losses fail clearly.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Batcher, type DataCursor } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import { applyPeftAdapter, loadPeftAdapter } from '../src/io/peft.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import type { LoraConfig } from '../src/models/build.js';
import type { ModelBatch } from '../src/models/llama.js';
import { loadModel } from '../src/cli/load-model.js';
import { type BatchSource, NonFiniteError, Trainer, type TrainOptions } from '../src/train/trainer.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');

const lora: LoraConfig = { r: 8, alpha: 16, dropout: 0.05, useRslora: false, init: 'kaiming', seed: 3, targets: 'all-linear', layers: null };

class Source implements BatchSource {
  private c: DataCursor = { epoch: 0, index: 0 };
  constructor(private readonly b: Batcher) {}
  next(): ModelBatch {
    const r = this.b.next(this.c);
    this.c = r.cursor;
    return r.batch;
  }
  cursor(): unknown {
    return this.c;
  }
  restore(c: unknown): void {
    this.c = c as DataCursor;
  }
}

async function setup(extra: Partial<TrainOptions> = {}) {
  const { model, tokenizer } = await loadModel({ model: MODEL, quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true }, lora, maxPositions: 64 });
  const data = await loadDataset(DATA, tokenizer, { maxSeqLen: 64, validFraction: 0.1, seed: 1 });
  const padId = tokenizer.eosId ?? 0;
  const train = new Batcher(data.train, { batchSize: 8, seqLen: 64, seed: 1, padId });
  const valid = new Batcher(data.valid, { batchSize: 8, seqLen: 64, shuffle: false, padId });
  const outputDir = extra.outputDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-train-'));
  const options: TrainOptions = {
    maxSteps: 40, lr: 3e-3, schedule: 'cosine', warmupSteps: 2, gradAccum: 2, maxGradNorm: 1, weightDecay: 0.01,
    optimizer: 'adamw', seed: 9, gradientCheckpointing: false, lossChunkRows: 100, evalEvery: 0, saveEvery: 0, keepCheckpoints: 2,
    earlyStoppingPatience: 0, onNonFinite: 'stop', resume: false, baseModel: 'stories260K', ...extra, outputDir,
  };
  const trainer = new Trainer(model, lora, options, new Source(train), () => [...valid.epoch(0)]);
  return { model, trainer, outputDir, options, train, valid };
}

test('QLoRA on stories260K: eval loss drops ≥ 20%; the adapter is a valid PEFT folder', async () => {
  const { model, trainer, outputDir } = await setup();
  try {
    const before = (await trainer.evaluate())!.loss;
    const summary = await trainer.run();
    assert.equal(summary.steps, 40);
    assert.ok(summary.finalEvalLoss! <= 0.8 * before, `eval loss ${before} → ${summary.finalEvalLoss}`);

    // PEFT files: exact keys, shapes and config fields.
    const cfg = JSON.parse(fs.readFileSync(path.join(outputDir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.r, 8);
    assert.equal(cfg.lora_alpha, 16);
    assert.equal(cfg.lora_dropout, 0.05);
    assert.deepEqual(cfg.target_modules, ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    assert.equal(cfg.bias, 'none');
    assert.deepEqual(Object.keys(cfg), [...Object.keys(cfg)].sort(), 'keys sorted like json.dumps(sort_keys=True)');
    const f = SafetensorsFile.open(path.join(outputDir, 'adapter_model.safetensors'));
    try {
      assert.deepEqual(f.metadata, { format: 'pt' });
      assert.equal(f.tensors.size, 5 * 7 * 2);
      assert.deepEqual(f.tensor('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight').shape, [8, 64]);
      assert.deepEqual(f.tensor('base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight').shape, [32, 8]);
      assert.deepEqual(f.tensor('base_model.model.model.layers.4.mlp.down_proj.lora_A.weight').shape, [8, 172]);
      assert.deepEqual(f.tensor('base_model.model.model.layers.4.mlp.up_proj.lora_B.weight').shape, [172, 8]);
    } finally {
      f.close();
    }
    for (const name of ['metrics.jsonl', 'loss.svg', 'checkpoint-40/trainer_state.json', 'checkpoint-40/optimizer.safetensors']) {
      assert.ok(fs.existsSync(path.join(outputDir, name)), `${name} written`);
    }
    assert.match(fs.readFileSync(path.join(outputDir, 'loss.svg'), 'utf8'), /^<svg[^]*eval loss[^]*<\/svg>\n$/);
    // The saved adapter loads back into a fresh model and gives the trained weights exactly.
    const adapter = loadPeftAdapter(outputDir);
    const fresh = await loadModel({ model: MODEL, quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true }, lora: adapter.lora });
    applyPeftAdapter(fresh.model, adapter);
    const a = model.parameters();
    const b = fresh.model.parameters();
    a.forEach((p, i) => assert.deepEqual(b[i]!.value.data, p.value.data));
    fresh.model.dispose();
  } finally {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  }
});

test('a run stopped at step k and resumed equals the uninterrupted run to the last bit', async () => {
  const full = await setup({ maxSteps: 12, saveEvery: 6, optimizer: 'adamw8bit', evalEvery: 4 });
  await full.trainer.run();
  const want = full.model.parameters().map((p) => Float32Array.from(p.value.data));
  full.trainer.dispose();
  full.model.dispose();

  // Same run, interrupted right after step 6 (as Ctrl-C would), then resumed from scratch objects.
  const first = await setup({ maxSteps: 12, saveEvery: 6, optimizer: 'adamw8bit', evalEvery: 4 });
  let steps = 0;
  (first.trainer.events as { onStep?: () => void }).onStep = () => {
    if (++steps === 6) first.trainer.interrupt();
  };
  const s1 = await first.trainer.run();
  assert.equal(s1.stoppedBy, 'interrupt');
  assert.equal(s1.steps, 6);
  first.trainer.dispose();
  first.model.dispose();

  const second = await setup({ maxSteps: 12, saveEvery: 6, optimizer: 'adamw8bit', evalEvery: 4, resume: true, outputDir: first.outputDir });
  const s2 = await second.trainer.run();
  assert.equal(s2.steps, 12);
  second.model.parameters().forEach((p, i) => assert.deepEqual(Float32Array.from(p.value.data), want[i], `${p.name} differs after resume`));
  second.trainer.dispose();
  second.model.dispose();
  for (const d of [full.outputDir, first.outputDir]) fs.rmSync(d, { recursive: true, force: true });
});

test('a non-finite loss stops training with a message naming the step', async () => {
  const { model, trainer, outputDir } = await setup({ maxSteps: 5, lr: 1e30, maxGradNorm: 0 });
  try {
    await assert.rejects(trainer.run(), (e: unknown) => e instanceof NonFiniteError && /^step \d+: (loss|gradient norm) .* not finite/.test((e as Error).message));
  } finally {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  }
});

test('corrupt or mismatched adapters are rejected with clear errors', async () => {
  const { model, trainer, outputDir } = await setup({ maxSteps: 1 });
  try {
    await trainer.run();
    const adapter = loadPeftAdapter(outputDir);
    // Wrong shape: an adapter for a different model.
    const key = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
    const bad = { ...adapter, tensors: new Map(adapter.tensors) };
    bad.tensors.set(key, { shape: [8, 65], values: new Float32Array(8 * 65) });
    assert.throws(() => applyPeftAdapter(model, bad), /q_proj\.lora_A\.weight' has shape \[8, 65\] but the model needs \[8, 64\]/);
    // Truncated weights file.
    const weights = path.join(outputDir, 'adapter_model.safetensors');
    const bytes = fs.readFileSync(weights);
    fs.writeFileSync(weights, bytes.subarray(0, bytes.length - 100));
    assert.throws(() => loadPeftAdapter(outputDir), /adapter_model\.safetensors/);
    // Rank in the config disagreeing with the tensors.
    fs.writeFileSync(weights, bytes);
    const cfgPath = path.join(outputDir, 'adapter_config.json');
    const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, r: 4 }));
    assert.throws(() => loadPeftAdapter(outputDir), /has rank 8 but adapter_config\.json says r=4/);
    fs.writeFileSync(cfgPath, JSON.stringify({ ...cfg, peft_type: 'IA3' }));
    assert.throws(() => loadPeftAdapter(outputDir), /only LoRA adapters are supported/);
    // A tensor that is not a LoRA weight.
    fs.writeFileSync(cfgPath, JSON.stringify(cfg));
    writeSafetensors(weights, [{ name: 'lm_head.weight', dtype: 'F32', shape: [2], data: new Float32Array(2) }]);
    assert.throws(() => loadPeftAdapter(outputDir), /unexpected tensor 'lm_head\.weight'/);
  } finally {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  }
});
