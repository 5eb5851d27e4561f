// Training, evaluation, checkpoints, PEFT saving, 8-bit AdamW and generation run unchanged on a
// backend whose tensors live on a "device" (test/device-backend.ts: `tensor.data` throws, reads are
// async), with ref's results to the last bit — so nothing above src/backends reads storage
// synchronously, and a step reads back from the device once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { loadModel } from '../src/load/load-model.js';
import { Batcher } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import { generate } from '../src/generate/generate.js';
import type { LoraConfig } from '../src/models/build.js';
import { Param } from '../src/nn/param.js';
import { AdamW8bit } from '../src/train/optimizer.js';
import { type StepMetrics, Trainer, type TrainOptions } from '../src/train/trainer.js';
import type { Backend } from '../src/tensor/backend.js';
import { DeviceLikeBackend } from './device-backend.js';
import { randn } from './util.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');
const lora: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0.1,
  useRslora: false,
  init: 'kaiming',
  seed: 3,
  targets: 'all-linear',
  layers: null,
};
const ref = await getBackend('ref');

interface Run {
  steps: StepMetrics[];
  evals: number[];
  params: Float32Array[];
  files: Map<string, Buffer>;
  text: string;
  /** Device reads made during each step that neither evaluated nor checkpointed. */
  plainStepReads: number[];
}

async function trainOn(backend: Backend): Promise<Run> {
  const { model, tokenizer } = await loadModel({
    model: MODEL,
    backend,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora,
    maxPositions: 32,
  });
  const data = await loadDataset(DATA, tokenizer, { maxSeqLen: 32, validFraction: 0.1, seed: 1 });
  const padId = tokenizer.eosId ?? 0;
  const train = new Batcher(data.train, { batchSize: 2, seqLen: 32, seed: 1, padId });
  const valid = new Batcher(data.valid.slice(0, 2), {
    batchSize: 2,
    seqLen: 32,
    shuffle: false,
    padId,
  });
  const outputDir = fs.mkdtempSync(path.join(os.tmpdir(), `qlora-device-${backend.name}-`));
  const options: TrainOptions = {
    outputDir,
    maxSteps: 5,
    lr: 3e-3,
    schedule: 'cosine',
    warmupSteps: 1,
    gradAccum: 2,
    maxGradNorm: 0.5,
    weightDecay: 0.01,
    optimizer: 'adamw',
    seed: 9,
    gradientCheckpointing: true,
    lossChunkRows: 20,
    evalEvery: 2,
    saveEvery: 2,
    keepCheckpoints: 5,
    earlyStoppingPatience: 0,
    onNonFinite: 'stop',
    resume: false,
    baseModel: 'stories260K',
  };
  const run: Run = {
    steps: [],
    evals: [],
    params: [],
    files: new Map(),
    text: '',
    plainStepReads: [],
  };
  const device = backend instanceof DeviceLikeBackend ? backend : null;
  let readsBefore = device?.reads ?? 0;
  const trainer = new Trainer(model, options, train.source(), () => [...valid.epoch(0)], {
    onStep: (m) => {
      run.steps.push(m);
      // Evaluations and checkpoints follow steps 2 and 4 (and the baseline eval precedes step 1):
      // the reads between the events of steps 1 and 2, and of 3 and 4, are the steps' own.
      if (device && m.step % 2 === 0 && m.step < options.maxSteps)
        run.plainStepReads.push(device.reads - readsBefore);
      readsBefore = device?.reads ?? 0;
    },
    onEval: (m) => run.evals.push(m.evalLoss),
  });
  try {
    await trainer.run();
    for (const p of model.parameters()) run.params.push(Float32Array.from(await p.value.read()));
    for (const rel of [
      'adapter_model.safetensors',
      'checkpoint-4/optimizer.safetensors',
      'checkpoint-4/adapter_model.safetensors',
    ]) {
      run.files.set(rel, fs.readFileSync(path.join(outputDir, rel)));
    }
    const arena = backend.createArena();
    const ids = tokenizer.encode('ROMEO:', { addSpecialTokens: true });
    run.text = (
      await generate(model, tokenizer, ids, arena, { maxTokens: 6, temperature: 0 })
    ).text;
    arena.dispose();
  } finally {
    trainer.dispose();
    model.dispose();
    fs.rmSync(outputDir, { recursive: true, force: true });
  }
  return run;
}

test('QLoRA training, eval, checkpoints, PEFT saving and generation on a device-resident backend equal ref bit for bit', async () => {
  const device = new DeviceLikeBackend();
  const want = await trainOn(ref);
  const got = await trainOn(device);
  assert.equal(got.steps.length, 5);
  assert.deepEqual(
    got.steps.map((m) => [m.loss, m.gradNorm]),
    want.steps.map((m) => [m.loss, m.gradNorm]),
  );
  assert.deepEqual(got.evals, want.evals);
  assert.equal(got.evals.length, 4, 'before the first step, after steps 2 and 4, at the end');
  got.params.forEach((p, i) => assert.deepEqual(p, want.params[i]));
  for (const [rel, bytes] of want.files)
    assert.ok(got.files.get(rel)!.equals(bytes), `${rel} differs`);
  assert.equal(got.text, want.text);
  // One transfer back per optimizer step: the loss and the gradient norm together.
  assert.deepEqual(got.plainStepReads, [1, 1]);
});

test("8-bit AdamW keeps its state on a device-resident backend; state() reads it back equal to ref's", async () => {
  const device = new DeviceLikeBackend();
  const states = [];
  for (const be of [ref, device]) {
    const params = [5000, 300, 4096 * 2 + 17].map(
      (n, i) => new Param(`p${i}`, be.fromArray(randn(n, i), [n])),
    );
    const opt = new AdamW8bit(params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    for (let step = 0; step < 3; step++) {
      params.forEach((p, i) => p.zeroGrad().write(randn(p.value.size, 10 * step + i, 0.1)));
      opt.step(1e-2);
    }
    const values = await Promise.all(
      params.map(async (p) => Float32Array.from(await p.value.read())),
    );
    states.push({ values, state: await opt.state() });
    opt.dispose();
    for (const p of params) p.dispose();
  }
  assert.deepEqual(states[1], states[0]);
  assert.deepEqual(
    Object.keys(states[1]!.state.arrays).filter((k) => k.endsWith('.state1')),
    ['p0.state1', 'p2.state1'],
  );
});

test('arenas work over device memory: zeros() clears recycled memory through the backend, reset invalidates, chunks merge', async () => {
  const device = new DeviceLikeBackend();
  const arena = device.createArena(256, 'device-step');
  const a = arena.alloc([40]);
  a.write(Array.from({ length: 40 }, (_, i) => i + 1));
  const big = arena.alloc([100]); // outgrows the first chunk
  assert.throws(() => a.data, /not host-resident; use read\(\)/);
  arena.reset();
  assert.throws(() => a.storage, /used after its arena was reset/);
  assert.equal(arena.capacity >= 4 * 140, true);
  const b = arena.alloc([40]); // the merged chunk's first bytes, now holding values
  b.write(Array.from({ length: 40 }, (_, i) => -i - 1));
  arena.reset();
  const z = arena.zeros([40]); // the same bytes b held
  assert.deepEqual(Array.from(await z.read()), new Array(40).fill(0));
  const ids = arena.zeros([3], 'i32');
  assert.deepEqual(Array.from(await ids.read()), [0, 0, 0]);
  assert.equal(big.alive, false);
  arena.dispose();
});
