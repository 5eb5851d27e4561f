// The QLoRA trainer on the bundled stories260K + tiny-shakespeare excerpt: the eval loss drops,
// a resumed run equals the uninterrupted one bit for bit, PEFT files are exact, bad adapters and
// non-finite losses fail clearly.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Batcher } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import { applyPeftAdapter, loadPeftAdapter } from '../src/io/peft.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import type { LoraConfig } from '../src/models/build.js';
import { loadModel } from '../src/load/load-model.js';
import {
  type BatchSource,
  NonFiniteError,
  Trainer,
  type TrainOptions,
} from '../src/train/trainer.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');

const lora: LoraConfig = {
  r: 8,
  alpha: 16,
  dropout: 0.05,
  useRslora: false,
  init: 'kaiming',
  seed: 3,
  targets: 'all-linear',
  layers: null,
};

async function setup(extra: Partial<TrainOptions> = {}) {
  const { model, tokenizer } = await loadModel({
    model: MODEL,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora,
    maxPositions: 64,
  });
  const data = await loadDataset(DATA, tokenizer, { maxSeqLen: 64, validFraction: 0.1, seed: 1 });
  const padId = tokenizer.eosId ?? 0;
  const train = new Batcher(data.train, { batchSize: 8, seqLen: 64, seed: 1, padId });
  const valid = new Batcher(data.valid, { batchSize: 8, seqLen: 64, shuffle: false, padId });
  const outputDir = extra.outputDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-train-'));
  const options: TrainOptions = {
    maxSteps: 40,
    lr: 3e-3,
    schedule: 'cosine',
    warmupSteps: 2,
    gradAccum: 2,
    maxGradNorm: 1,
    weightDecay: 0.01,
    optimizer: 'adamw',
    seed: 9,
    gradientCheckpointing: false,
    lossChunkRows: 100,
    evalEvery: 0,
    saveEvery: 0,
    keepCheckpoints: 2,
    earlyStoppingPatience: 0,
    onNonFinite: 'stop',
    resume: false,
    baseModel: 'stories260K',
    ...extra,
    outputDir,
  };
  const trainer = new Trainer(model, options, train.source(), () => [...valid.epoch(0)]);
  return { model, trainer, outputDir, options, train, valid };
}

test('QLoRA on stories260K: eval loss drops ≥ 20%; the adapter is a valid PEFT folder', async () => {
  const { model, trainer, outputDir } = await setup();
  try {
    const before = (await trainer.evaluate())!.loss;
    const summary = await trainer.run();
    assert.equal(summary.steps, 40);
    assert.ok(
      summary.finalEvalLoss! <= 0.8 * before,
      `eval loss ${before} → ${summary.finalEvalLoss}`,
    );

    // PEFT files: exact keys, shapes and config fields.
    const cfg = JSON.parse(fs.readFileSync(path.join(outputDir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.r, 8);
    assert.equal(cfg.lora_alpha, 16);
    assert.equal(cfg.lora_dropout, 0.05);
    assert.deepEqual(cfg.target_modules, [
      'down_proj',
      'gate_proj',
      'k_proj',
      'o_proj',
      'q_proj',
      'up_proj',
      'v_proj',
    ]);
    assert.equal(cfg.bias, 'none');
    assert.deepEqual(
      Object.keys(cfg),
      [...Object.keys(cfg)].sort(),
      'keys sorted like json.dumps(sort_keys=True)',
    );
    const f = SafetensorsFile.open(path.join(outputDir, 'adapter_model.safetensors'));
    try {
      assert.deepEqual(f.metadata, { format: 'pt' });
      assert.equal(f.tensors.size, 5 * 7 * 2);
      assert.deepEqual(
        f.tensor('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight').shape,
        [8, 64],
      );
      assert.deepEqual(
        f.tensor('base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight').shape,
        [32, 8],
      );
      assert.deepEqual(
        f.tensor('base_model.model.model.layers.4.mlp.down_proj.lora_A.weight').shape,
        [8, 172],
      );
      assert.deepEqual(
        f.tensor('base_model.model.model.layers.4.mlp.up_proj.lora_B.weight').shape,
        [172, 8],
      );
    } finally {
      f.close();
    }
    for (const name of [
      'metrics.jsonl',
      'loss.svg',
      'checkpoint-40/trainer_state.json',
      'checkpoint-40/optimizer.safetensors',
    ]) {
      assert.ok(fs.existsSync(path.join(outputDir, name)), `${name} written`);
    }
    assert.match(
      fs.readFileSync(path.join(outputDir, 'loss.svg'), 'utf8'),
      /^<svg[^]*eval loss[^]*<\/svg>\n$/,
    );
    // The saved adapter loads back into a fresh model and gives the trained weights exactly.
    const adapter = loadPeftAdapter(outputDir);
    const fresh = await loadModel({
      model: MODEL,
      quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
      lora: adapter.lora,
    });
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

  const second = await setup({
    maxSteps: 12,
    saveEvery: 6,
    optimizer: 'adamw8bit',
    evalEvery: 4,
    resume: true,
    outputDir: first.outputDir,
  });
  const s2 = await second.trainer.run();
  assert.equal(s2.steps, 12);
  second.model
    .parameters()
    .forEach((p, i) =>
      assert.deepEqual(Float32Array.from(p.value.data), want[i], `${p.name} differs after resume`),
    );
  second.trainer.dispose();
  second.model.dispose();
  for (const d of [full.outputDir, first.outputDir]) fs.rmSync(d, { recursive: true, force: true });
});

test('a non-finite loss stops training with a message naming the step', async () => {
  const { model, trainer, outputDir } = await setup({ maxSteps: 5, lr: 1e30, maxGradNorm: 0 });
  try {
    await assert.rejects(
      trainer.run(),
      (e: unknown) =>
        e instanceof NonFiniteError &&
        /^step \d+: (loss|gradient norm) .* not finite/.test((e as Error).message),
    );
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
    assert.throws(
      () => applyPeftAdapter(model, bad),
      /q_proj\.lora_A\.weight' has shape \[8, 65\] but the model needs \[8, 64\]/,
    );
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
    writeSafetensors(weights, [
      { name: 'lm_head.weight', dtype: 'F32', shape: [2], data: new Float32Array(2) },
    ]);
    assert.throws(() => loadPeftAdapter(outputDir), /unexpected tensor 'lm_head\.weight'/);
  } finally {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  }
});

const VIGGO = path.join(root, 'fixtures', 'datasets', 'viggo', 'train.csv');

/** The first `rows` ViGGO rows as a CSV of their own (a dataset size of our choosing). */
function viggoSubset(rows: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-viggo-'));
  const lines = fs.readFileSync(VIGGO, 'utf8').split('\n');
  fs.writeFileSync(path.join(dir, 'train.csv'), `${lines.slice(0, rows + 1).join('\n')}\n`);
  return path.join(dir, 'train.csv');
}

/** A packed, shuffled ViGGO run (prompt=mr, completion=ref) whose epochs are not all the same length. */
async function packedSetup(
  rows: number,
  extra: Partial<TrainOptions> & { wrap?: (s: BatchSource) => BatchSource } = {},
) {
  const { model, tokenizer } = await loadModel({
    model: MODEL,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora,
    maxPositions: 512,
  });
  const csv = viggoSubset(rows);
  const data = await loadDataset(csv, tokenizer, {
    maxSeqLen: 512,
    columns: { prompt: 'mr', completion: 'ref' },
    validFraction: 0,
  });
  fs.rmSync(path.dirname(csv), { recursive: true, force: true });
  const padId = tokenizer.eosId ?? 0;
  // The first seed whose epochs 0..2 do not all pack into the same number of batches (some sizes have none).
  const batcherFor = (s: number) =>
    new Batcher(data.train, { batchSize: 2, seqLen: 512, seed: s, padId });
  let seed = 0;
  while (seed < 20 && new Set([0, 1, 2].map((e) => batcherFor(seed).batchesInEpoch(e))).size === 1)
    seed++;
  const train = batcherFor(seed === 20 ? 0 : seed);
  const outputDir = extra.outputDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-train-'));
  const { wrap, ...rest } = extra;
  const options: TrainOptions = {
    maxSteps: Math.ceil(train.batchesInEpochs(3) / (rest.gradAccum ?? 1)),
    lr: 3e-3,
    schedule: 'cosine',
    warmupSteps: 1,
    gradAccum: 1,
    maxGradNorm: 1,
    weightDecay: 0,
    optimizer: 'adamw',
    seed: 5,
    gradientCheckpointing: false,
    lossChunkRows: 100,
    evalEvery: 0,
    saveEvery: 0,
    keepCheckpoints: 2,
    earlyStoppingPatience: 0,
    onNonFinite: 'stop',
    resume: false,
    baseModel: 'stories260K',
    ...rest,
    outputDir,
  };
  const source = train.source();
  const trainer = new Trainer(model, options, wrap ? wrap(source) : source, null);
  return { model, trainer, outputDir, options, train };
}

/** The uninterrupted 3-epoch run on 19 rows in steps of two batches (epochs pack into 4, 4 and 5 batches), shared by the resume tests. */
let packedReference: Promise<{ want: Float32Array[]; maxSteps: number; epoch0: number }> | null =
  null;
function packedReferenceRun() {
  packedReference ??= (async () => {
    const ref = await packedSetup(19, { gradAccum: 2 });
    await ref.trainer.run();
    const out = {
      want: weightsOf(ref.model),
      maxSteps: ref.options.maxSteps,
      epoch0: ref.train.batchesInEpoch(0),
    };
    ref.trainer.dispose();
    ref.model.dispose();
    fs.rmSync(ref.outputDir, { recursive: true, force: true });
    return out;
  })();
  return packedReference;
}

const weightsOf = (model: { parameters(): { value: { data: ArrayLike<number> } }[] }) =>
  model.parameters().map((p) => Float32Array.from(p.value.data));

test('multi-epoch packed runs over several dataset sizes finish every step of every epoch', async () => {
  let unequal = 0;
  for (const rows of [7, 19]) {
    const { model, trainer, outputDir, options, train } = await packedSetup(rows);
    if (new Set([0, 1, 2].map((e) => train.batchesInEpoch(e))).size > 1) unequal++;
    try {
      const summary = await trainer.run();
      assert.equal(summary.steps, options.maxSteps, `${rows} rows`);
      assert.equal(
        options.maxSteps,
        train.batchesInEpoch(0) + train.batchesInEpoch(1) + train.batchesInEpoch(2),
      );
      assert.ok(fs.existsSync(path.join(outputDir, 'adapter_model.safetensors')));
    } finally {
      trainer.dispose();
      model.dispose();
      fs.rmSync(outputDir, { recursive: true, force: true });
    }
  }
  assert.ok(unequal >= 1, 'epochs of unequal length (the case that crashed) are covered');
});

test('a packed run resumed across an epoch boundary equals the uninterrupted run to the last bit', async () => {
  const { want, maxSteps, epoch0 } = await packedReferenceRun();
  const boundary = Math.floor(epoch0 / 2); // the last step wholly inside epoch 0

  const first = await packedSetup(19, { gradAccum: 2, maxSteps });
  let steps = 0;
  (first.trainer.events as { onStep?: () => void }).onStep = () => {
    if (++steps === boundary) first.trainer.interrupt();
  };
  assert.equal((await first.trainer.run()).steps, boundary);
  first.trainer.dispose();
  first.model.dispose();
  const second = await packedSetup(19, {
    gradAccum: 2,
    maxSteps,
    resume: true,
    outputDir: first.outputDir,
  });
  assert.equal((await second.trainer.run()).steps, maxSteps);
  weightsOf(second.model).forEach((w, i) =>
    assert.deepEqual(w, want[i], `${second.model.parameters()[i]!.name} differs after resume`),
  );
  second.trainer.dispose();
  second.model.dispose();
  fs.rmSync(first.outputDir, { recursive: true, force: true });
});

test('an error inside a run saves the last finished step, and resuming from it equals the uninterrupted run', async () => {
  const { want, maxSteps, epoch0 } = await packedReferenceRun();

  // The data source fails on the second micro-batch of step k (in epoch 1): step k-1 is the last finished one.
  const k = Math.floor(epoch0 / 2) + 2;
  let calls = 0;
  const failing = await packedSetup(19, {
    gradAccum: 2,
    wrap: (s) => ({
      next: () => {
        if (++calls === 2 * k) throw new Error('disk read failed');
        return s.next();
      },
      cursor: () => s.cursor(),
      restore: (c) => s.restore(c),
    }),
  });
  await assert.rejects(failing.trainer.run(), (e: Error) => {
    assert.match(
      e.message,
      /^disk read failed \(saved a checkpoint of the last finished step \((\d+)\) in .*checkpoint-\1; continue with --resume\)$/,
    );
    assert.equal(Number(/step \((\d+)\)/.exec(e.message)![1]), k - 1);
    return true;
  });
  failing.trainer.dispose();
  failing.model.dispose();
  assert.ok(
    fs.existsSync(path.join(failing.outputDir, `checkpoint-${k - 1}`, 'trainer_state.json')),
  );

  const resumed = await packedSetup(19, {
    gradAccum: 2,
    resume: true,
    outputDir: failing.outputDir,
  });
  assert.equal((await resumed.trainer.run()).steps, maxSteps);
  weightsOf(resumed.model).forEach((w, i) =>
    assert.deepEqual(w, want[i], `${resumed.model.parameters()[i]!.name} differs after resume`),
  );
  resumed.trainer.dispose();
  resumed.model.dispose();
  fs.rmSync(failing.outputDir, { recursive: true, force: true });
});
