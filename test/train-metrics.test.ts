// What a run reports: token counts that compare with `qlora plan` (every processed position, loss
// tokens apart), metrics.jsonl under the Hugging Face Trainer's names, a loss curve redrawn at every
// evaluation with labelled axes and round ticks, and a stop that reports the latest evaluation.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Batcher, type DataCursor } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import type { LoraConfig } from '../src/models/build.js';
import { loadModel } from '../src/load/load-model.js';
import { niceTicks } from '../src/train/plot.js';
import { type EvalMetrics, Trainer, type TrainOptions } from '../src/train/trainer.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'viggo', 'train.csv');
const lora: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0,
  useRslora: false,
  init: 'kaiming',
  seed: 1,
  targets: 'all-linear',
  layers: null,
};

async function setup(extra: Partial<TrainOptions>) {
  const { model, tokenizer } = await loadModel({
    model: MODEL,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora,
    maxPositions: 256,
  });
  const data = await loadDataset(DATA, tokenizer, {
    maxSeqLen: 256,
    columns: { prompt: 'mr', completion: 'ref' },
    validFraction: 0.1,
    seed: 2,
  });
  const padId = tokenizer.eosId ?? 0;
  const train = new Batcher(data.train, { batchSize: 2, seqLen: 256, seed: 4, padId });
  const valid = new Batcher(data.valid, { batchSize: 2, seqLen: 256, shuffle: false, padId });
  const outputDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-metrics-'));
  const options: TrainOptions = {
    maxSteps: 6,
    lr: 3e-3,
    schedule: 'cosine',
    warmupSteps: 1,
    gradAccum: 2,
    maxGradNorm: 1,
    weightDecay: 0,
    optimizer: 'adamw',
    seed: 3,
    gradientCheckpointing: false,
    lossChunkRows: 100,
    evalEvery: 2,
    saveEvery: 0,
    keepCheckpoints: 1,
    earlyStoppingPatience: 0,
    onNonFinite: 'stop',
    resume: false,
    baseModel: 'stories260K',
    ...extra,
    outputDir,
  };
  const evalBatches = () => [...valid.epoch(0)].slice(0, 2);
  const trainer = new Trainer(model, options, train.source(), evalBatches);
  return { model, trainer, outputDir, train };
}

test('token counts, HF metric names, and a loss curve redrawn at every evaluation', async () => {
  const { model, trainer, outputDir, train } = await setup({});
  const curves: string[] = [];
  const evals: EvalMetrics[] = [];
  const stepTokens: { tokens: number; lossTokens: number }[] = [];
  trainer.events.onEval = (m) => {
    evals.push(m);
    curves.push(fs.readFileSync(path.join(outputDir, 'loss.svg'), 'utf8'));
  };
  trainer.events.onStep = (m) => stepTokens.push({ tokens: m.tokens, lossTokens: m.lossTokens });
  try {
    const summary = await trainer.run();
    // The batches the run took, replayed: 6 steps × 2 micro-batches from the start of the data.
    let cursor: DataCursor = { epoch: 0, index: 0 };
    let positions = 0;
    let lossTokens = 0;
    for (let i = 0; i < 12; i++) {
      const r = train.next(cursor);
      positions += r.batch.batchSize * r.batch.seqLen;
      lossTokens += r.batch.numLossTokens;
      cursor = r.cursor;
    }
    assert.equal(
      summary.tokensSeen,
      positions,
      'every processed position counts (2 × 256 per micro-batch), as plan does',
    );
    assert.equal(summary.lossTokensSeen, lossTokens);
    assert.ok(lossTokens < positions);
    assert.deepEqual(
      stepTokens.map((t) => t.tokens),
      Array(6).fill(2 * 2 * 256),
    );

    const records = fs
      .readFileSync(path.join(outputDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const trainRecords = records.filter((r) => 'loss' in r);
    const evalRecords = records.filter((r) => 'eval_loss' in r);
    assert.equal(trainRecords.length, 6);
    for (const r of trainRecords) {
      for (const key of [
        'step',
        'epoch',
        'loss',
        'grad_norm',
        'learning_rate',
        'num_input_tokens_seen',
      ])
        assert.ok(key in r, `train record has ${key}`);
    }
    assert.equal(trainRecords.at(-1).num_input_tokens_seen, positions);
    assert.equal(trainRecords.at(-1).num_loss_tokens_seen, lossTokens);
    assert.ok(
      trainRecords.at(-1).epoch > 0 && trainRecords.at(-1).epoch < 1,
      'epoch is the fraction of the data seen',
    );
    assert.deepEqual(
      evalRecords.map((r) => r.step),
      [0, 2, 4, 6],
    );
    for (const r of evalRecords) assert.ok('epoch' in r && typeof r.eval_loss === 'number');

    // loss.svg was on disk at every evaluation, holding every evaluation so far.
    assert.equal(curves.length, 4);
    curves.forEach((svg, i) =>
      assert.match(svg, new RegExp(`data-label="eval loss" data-points="${i + 1}"`)),
    );
    const svg = curves.at(-1)!;
    assert.match(svg, /class="x-label"[^>]*>step</);
    assert.match(svg, /class="y-label"[^>]*>loss/);
    for (const cls of ['x-tick', 'y-tick']) {
      const ticks = [...svg.matchAll(new RegExp(`class="${cls}"[^>]*>([^<]+)<`, 'g'))].map((m) =>
        Number(m[1]),
      );
      assert.ok(ticks.length >= 3, `${cls}: ${ticks}`);
      const step = ticks[1]! - ticks[0]!;
      ticks
        .slice(1)
        .forEach((t, i) =>
          assert.ok(Math.abs(t - ticks[i]! - step) < 1e-9, `${cls} evenly spaced: ${ticks}`),
        );
      const mantissa = step / 10 ** Math.floor(Math.log10(step));
      assert.ok(
        [1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-9),
        `${cls} step ${step} is 1, 2 or 5 × 10^k`,
      );
    }
  } finally {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  }
});

test('a stopped run reports the latest evaluation, taken where it stopped', async () => {
  const { model, trainer, outputDir } = await setup({ maxSteps: 50, evalEvery: 3 });
  let steps = 0;
  trainer.events.onStep = () => {
    if (++steps === 4) trainer.interrupt();
  };
  try {
    const summary = await trainer.run();
    assert.equal(summary.stoppedBy, 'interrupt');
    assert.equal(summary.finalEvalStep, 4);
    const records = fs
      .readFileSync(path.join(outputDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      records.filter((r) => 'eval_loss' in r).map((r) => r.step),
      [0, 3, 4],
    );
    assert.equal(summary.finalEvalLoss, records.at(-1).eval_loss);
  } finally {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  }
});

test('nice ticks: round steps that bracket the data', () => {
  assert.deepEqual(niceTicks(1.234, 4.56, 5), [1, 2, 3, 4, 5]);
  assert.deepEqual(niceTicks(0, 854, 6, true), [0, 200, 400, 600, 800, 1000]);
  assert.deepEqual(niceTicks(2.01, 2.09, 4), [2, 2.02, 2.04, 2.06, 2.08, 2.1]);
  assert.deepEqual(niceTicks(0, 3, 6, true), [0, 1, 2, 3]);
});
