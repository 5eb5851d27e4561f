// --load-best (Hugging Face's load_best_model_at_end): the final adapter holds the weights of the
// lowest evaluation loss, the checkpoints the last step's, and a resumed run still knows the best.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Batcher, type DataCursor } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import type { LoraConfig } from '../src/models/build.js';
import { loadModel } from '../src/load/load-model.js';
import { Trainer, type TrainOptions } from '../src/train/trainer.js';

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

/** A constant, unclipped lr of 0.03 on ViGGO: eval loss falls to step 4, then rises a little at step 6. */
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
  const train = new Batcher(data.train, { batchSize: 2, seqLen: 256, seed: 4, padId: 0 });
  const valid = new Batcher(data.valid, { batchSize: 2, seqLen: 256, shuffle: false, padId: 0 });
  let c: DataCursor = { epoch: 0, index: 0 };
  const source = {
    next: () => {
      const r = train.next(c);
      c = r.cursor;
      return r.batch;
    },
    cursor: () => c,
    restore: (x: unknown) => {
      c = x as DataCursor;
    },
  };
  const outputDir = extra.outputDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-best-'));
  const options: TrainOptions = {
    maxSteps: 6,
    lr: 0.03,
    schedule: 'constant',
    warmupSteps: 0,
    gradAccum: 1,
    maxGradNorm: 0,
    weightDecay: 0,
    optimizer: 'adamw',
    seed: 3,
    gradientCheckpointing: false,
    lossChunkRows: 100,
    evalEvery: 2,
    saveEvery: 3,
    keepCheckpoints: 3,
    earlyStoppingPatience: 0,
    onNonFinite: 'stop',
    resume: false,
    baseModel: 'stories260K',
    loadBest: true,
    ...extra,
    outputDir,
  };
  const trainer = new Trainer(model, options, source, () => [...valid.epoch(0)].slice(0, 2));
  return { model, trainer, outputDir };
}

function adapterTensors(file: string): Map<string, Float32Array> {
  const f = SafetensorsFile.open(file);
  try {
    return new Map(
      [...f.tensors.keys()].map((name) => [name, new Float32Array(f.readRaw(name).slice().buffer)]),
    );
  } finally {
    f.close();
  }
}

test("--load-best: the final adapter holds the best evaluation's weights, also after a resume", async () => {
  const full = await setup({});
  const evals: { step: number; loss: number }[] = [];
  const weightsAt = new Map<number, Promise<Float32Array[]>>();
  let announced: number | null = null;
  full.trainer.events.onEval = (m) => {
    evals.push({ step: m.step, loss: m.evalLoss });
    weightsAt.set(
      m.step,
      Promise.all(
        full.model.parameters().map(async (p) => Float32Array.from(await p.value.read())),
      ),
    );
  };
  full.trainer.events.onLoadBest = (step) => {
    announced = step;
  };
  const names = full.model.parameters().map((p) => p.name);
  const summary = await full.trainer.run();
  full.trainer.dispose();
  full.model.dispose();
  const best = evals.reduce((a, b) => (b.loss < a.loss ? b : a));
  assert.notEqual(
    best.step,
    6,
    `the case of interest: the last evaluation is not the best (${JSON.stringify(evals)})`,
  );
  assert.equal(summary.bestStep, best.step);
  assert.equal(summary.bestEvalLoss, best.loss);
  assert.equal(announced, best.step, 'the run says which step the adapter comes from');
  const final = adapterTensors(path.join(full.outputDir, 'adapter_model.safetensors'));
  const bestWeights = await weightsAt.get(best.step)!;
  const lastWeights = await weightsAt.get(6)!;
  names.forEach((name, i) =>
    assert.deepEqual(final.get(name), bestWeights[i], `${name} is the best step's`),
  );
  // The checkpoint continues the run: it holds the last step's weights.
  const ckpt = adapterTensors(
    path.join(full.outputDir, 'checkpoint-6', 'adapter_model.safetensors'),
  );
  names.forEach((name, i) => assert.deepEqual(ckpt.get(name), lastWeights[i]));

  // Stopped after the best evaluation, resumed: the same final adapter.
  const first = await setup({});
  let steps = 0;
  first.trainer.events.onStep = () => {
    if (++steps === best.step + 1) first.trainer.interrupt();
  };
  await first.trainer.run();
  first.trainer.dispose();
  first.model.dispose();
  const second = await setup({ resume: true, outputDir: first.outputDir });
  const resumed = await second.trainer.run();
  second.trainer.dispose();
  second.model.dispose();
  assert.equal(resumed.bestStep, best.step);
  const again = adapterTensors(path.join(first.outputDir, 'adapter_model.safetensors'));
  for (const name of names)
    assert.deepEqual(again.get(name), final.get(name), `${name} after resume`);
  for (const d of [full.outputDir, first.outputDir]) fs.rmSync(d, { recursive: true, force: true });
});
