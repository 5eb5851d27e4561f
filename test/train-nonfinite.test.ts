// Non-finite values never end in exit 0 with a broken adapter (issue 11.9): skipping stops when it
// runs away (consecutive and total budgets), a non-finite evaluation stops the run, the stop
// message only promises a checkpoint that exists, and an adapter with a NaN/Inf weight is neither
// written nor loaded (the error names the tensor and the file).
//
// NaN is injected the way it arrives in practice, through the weights: the batch source writes NaN
// into one LoRA B matrix before chosen steps (and puts the old values back before the others; a
// skipped step changes no weight, so that restores the exact state).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Batcher, type DataCursor } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { loadLoraAdapter } from '../src/io/gguf-lora.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { GgufReader } from '../src/io/gguf.js';
import { loadPeftAdapter, savePeftAdapter } from '../src/io/peft.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import type { LoraConfig } from '../src/models/build.js';
import type { LlamaModel, ModelBatch } from '../src/models/llama.js';
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
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const POISONED = 'base_model.model.model.layers.2.mlp.down_proj.lora_B.weight';

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

/** Batches from a Batcher; before step k (1-based) it poisons POISONED when poison(k), else restores it. */
class PoisoningSource implements BatchSource {
  private c: DataCursor = { epoch: 0, index: 0 };
  private calls = 0;
  private saved: Float32Array | null = null;
  constructor(
    private readonly b: Batcher,
    private readonly model: LlamaModel,
    private readonly poison: (step: number) => boolean,
  ) {}
  next(): ModelBatch {
    this.calls++;
    const p = this.model.parameters().find((q) => q.name === POISONED)!;
    if (this.poison(this.calls)) {
      if (!this.saved) this.saved = Float32Array.from(p.value.data as Float32Array);
      p.value.write(new Float32Array(p.value.size).fill(Number.NaN));
    } else if (this.saved) {
      p.value.write(this.saved);
      this.saved = null;
    }
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

async function setup(
  poison: (step: number) => boolean,
  extra: Partial<TrainOptions> = {},
  evalHook?: (model: LlamaModel) => void,
) {
  const { model, tokenizer } = await loadModel({
    model: MODEL,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora,
    maxPositions: 32,
  });
  const data = await loadDataset(DATA, tokenizer, { maxSeqLen: 32, validFraction: 0.1, seed: 1 });
  const padId = tokenizer.eosId ?? 0;
  const train = new Batcher(data.train, { batchSize: 2, seqLen: 32, seed: 1, padId });
  const valid = new Batcher(data.valid, { batchSize: 2, seqLen: 32, shuffle: false, padId });
  const outputDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-nonfinite-'));
  const options: TrainOptions = {
    maxSteps: 20,
    lr: 1e-3,
    schedule: 'constant',
    warmupSteps: 0,
    gradAccum: 1,
    maxGradNorm: 1,
    weightDecay: 0,
    optimizer: 'adamw',
    seed: 9,
    gradientCheckpointing: false,
    lossChunkRows: 64,
    evalEvery: 0,
    saveEvery: 0,
    keepCheckpoints: 2,
    earlyStoppingPatience: 0,
    onNonFinite: 'skip',
    resume: false,
    baseModel: 'stories260K',
    ...extra,
    outputDir,
  };
  const evalBatches = () => {
    evalHook?.(model);
    return [...valid.epoch(0)].slice(0, 1);
  };
  const trainer = new Trainer(
    model,
    options,
    new PoisoningSource(train, model, poison),
    evalBatches,
  );
  const cleanup = () => {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  };
  return { model, trainer, outputDir, cleanup };
}

const adapterWritten = (dir: string) => fs.existsSync(path.join(dir, 'adapter_model.safetensors'));

test('--skip-nonfinite stops after 5 skipped steps in a row and writes no adapter (not even a checkpoint of NaN weights)', async () => {
  const { trainer, outputDir, cleanup } = await setup(() => true);
  try {
    await assert.rejects(trainer.run(), (e: unknown) => {
      assert.ok(e instanceof NonFiniteError);
      assert.match(
        e.message,
        /^step 5: loss NaN is not finite and 5 steps in a row were skipped \(limit 5\): training has diverged; stopping/,
      );
      // The trainer tries to checkpoint the last finished step; its weights are NaN, so nothing is written.
      assert.match(
        e.message,
        new RegExp(
          `could not save a checkpoint of step 4 either: .*tensor '${POISONED.replaceAll('.', '\\.')}' has a non-finite value \\(NaN\\)`,
        ),
      );
      assert.doesNotMatch(e.message, /is intact/);
      return true;
    });
    assert.ok(!adapterWritten(outputDir));
    assert.deepEqual(
      fs.readdirSync(outputDir).filter((f) => f.includes('checkpoint')),
      [],
    );
  } finally {
    cleanup();
  }
});

test('--skip-nonfinite stops when the total skip budget runs out, naming the checkpoint that exists', async () => {
  // Every other step is non-finite: never 2 in a row, but 5 of the first 9 (the default budget for
  // 20 steps is max(5, 10%) = 5). Checkpoints every 4 steps hold finite weights.
  const { trainer, outputDir, cleanup } = await setup((k) => k % 2 === 1, { saveEvery: 4 });
  try {
    await assert.rejects(trainer.run(), (e: unknown) => {
      assert.ok(e instanceof NonFiniteError);
      assert.match(
        e.message,
        /^step 9: loss NaN is not finite and 5 steps were skipped in all \(limit 5\)/,
      );
      assert.match(
        e.message,
        /\(checkpoint-8 holds the last finished step; continue with --resume\)$/,
      );
      return true;
    });
    assert.ok(!adapterWritten(outputDir));
    // The checkpoint it names loads (its adapter is finite).
    assert.equal(loadPeftAdapter(path.join(outputDir, 'checkpoint-8')).tensors.size, 5 * 7 * 2);
  } finally {
    cleanup();
  }
});

test('the skip limits are options: a larger budget lets the same run finish', async () => {
  const { trainer, outputDir, cleanup } = await setup((k) => k % 4 === 1, {
    maxSteps: 12,
    maxSkippedSteps: 3,
    maxConsecutiveSkips: 2,
  });
  try {
    // Skips at steps 1, 5, 9: exactly the budget of 3 → stopped at step 9.
    await assert.rejects(trainer.run(), /step 9: .*3 steps were skipped in all \(limit 3\)/);
  } finally {
    cleanup();
  }
  const again = await setup((k) => k % 4 === 1, { maxSteps: 12, maxSkippedSteps: 4 });
  try {
    const summary = await again.trainer.run();
    assert.equal(summary.steps, 12);
    assert.ok(adapterWritten(again.outputDir));
  } finally {
    again.cleanup();
  }
  assert.ok(!fs.existsSync(outputDir));
});

test('stopping on a non-finite loss claims no checkpoint that does not exist', async () => {
  const late = await setup((k) => k >= 3, { onNonFinite: 'stop', saveEvery: 2 });
  try {
    await assert.rejects(late.trainer.run(), (e: unknown) => {
      assert.match(
        (e as Error).message,
        /^step 3: loss NaN is not finite; stopping: lower --lr, or use --skip-nonfinite to skip such steps \(checkpoint-2 holds the last finished step/,
      );
      return true;
    });
  } finally {
    late.cleanup();
  }
  const early = await setup(() => true, { onNonFinite: 'stop', saveEvery: 2 });
  try {
    await assert.rejects(
      early.trainer.run(),
      /step 1: loss NaN is not finite; stopping: lower --lr, or use --skip-nonfinite to skip such steps \(no step had finished, nothing to checkpoint\)/,
    );
  } finally {
    early.cleanup();
  }
});

test('a non-finite evaluation loss stops the run instead of saving the adapter', async () => {
  // Training steps are clean; the final evaluation (the only one) sees NaN weights.
  const { trainer, outputDir, cleanup } = await setup(
    () => false,
    { maxSteps: 2, evalEvery: 0 },
    (model) => {
      const p = model.parameters().find((q) => q.name === POISONED)!;
      p.value.write(new Float32Array(p.value.size).fill(Number.NaN));
    },
  );
  try {
    await assert.rejects(
      trainer.run(),
      /evaluation at step 2: loss NaN is not finite: the adapter produces NaN\/Inf; stopping \(could not save a checkpoint of step 2 either: .*non-finite value \(NaN\)/,
    );
    assert.ok(!adapterWritten(outputDir));
  } finally {
    cleanup();
  }
});

test('a non-finite adapter is never written, and refused at load naming the tensor and the file', async () => {
  const { model, outputDir, cleanup } = await setup(() => false);
  try {
    const good = path.join(outputDir, 'good');
    await savePeftAdapter(good, model, lora, null);
    const p = model.parameters().find((q) => q.name === POISONED)!;
    const values = Float32Array.from(p.value.data as Float32Array);
    values[5] = Number.POSITIVE_INFINITY;
    p.value.write(values);
    const bad = path.join(outputDir, 'bad');
    await assert.rejects(
      savePeftAdapter(bad, model, lora, null),
      new RegExp(
        `${bad}: tensor '${POISONED.replaceAll('.', '\\.')}' has a non-finite value \\(Infinity\\) at element 5; refusing to write`,
      ),
    );
    assert.ok(!adapterWritten(bad) && !fs.existsSync(path.join(bad, 'adapter_config.json')));

    // PEFT folder with a NaN in one tensor.
    const weights = path.join(good, 'adapter_model.safetensors');
    const f = SafetensorsFile.open(weights);
    const tensors = [...f.tensors].map(([name, info]) => ({
      name,
      dtype: 'F32' as const,
      shape: info.shape,
      data: f.readF32(name),
    }));
    f.close();
    const victim = tensors.find((t) => t.name.endsWith('layers.1.self_attn.v_proj.lora_A.weight'))!;
    victim.data[3] = Number.NaN;
    writeSafetensors(weights, tensors, { format: 'pt' });
    assert.throws(
      () => loadPeftAdapter(good),
      new RegExp(
        `${weights}: tensor '${victim.name.replaceAll('.', '\\.')}' has a non-finite value \\(NaN\\) at element 3; refusing a non-finite adapter`,
      ),
    );

    // GGUF LoRA with a NaN: exported from a finite adapter, then one float overwritten in place.
    victim.data[3] = 0.25;
    writeSafetensors(weights, tensors, { format: 'pt' });
    const ck = openCheckpoint(MODEL);
    const config = ck.config;
    ck.close();
    const gguf = path.join(outputDir, 'lora.gguf');
    exportGgufLora(loadPeftAdapter(good), config, gguf);
    const reader = GgufReader.open(gguf);
    const info = reader.tensors.find((t) => t.name.endsWith('.lora_a'))!;
    reader.close();
    const fd = fs.openSync(gguf, 'r+');
    fs.writeSync(fd, Buffer.from(new Float32Array([Number.NaN]).buffer), 0, 4, info.offset + 4 * 7);
    fs.closeSync(fd);
    assert.throws(
      () => loadLoraAdapter(gguf, config),
      new RegExp(
        `${gguf}: tensor '${info.name.replaceAll('.', '\\.')}' has a non-finite value \\(NaN\\) at element 7; refusing a non-finite adapter`,
      ),
    );
  } finally {
    cleanup();
  }
});

test('qlora train --lr 1e6 --skip-nonfinite exits 1 with a clear message and no adapter', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-nonfinite-cli-'));
  try {
    const out = path.join(dir, 'out');
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        TSX,
        cli,
        'train',
        '--output',
        out,
        '--lr',
        '1e6',
        '--skip-nonfinite',
        '--max-steps',
        '30',
        '--seq-len',
        '32',
        '--batch-size',
        '2',
        '--eval-every',
        '0',
      ],
      { cwd: dir, encoding: 'utf8', timeout: 240_000 },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr,
      /qlora: step \d+: .* is not finite and \d+ steps (in a row were skipped|were skipped in all) \(limit \d+\): training has diverged/,
    );
    assert.doesNotMatch(r.stderr, /is intact/);
    assert.ok(!adapterWritten(out));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
