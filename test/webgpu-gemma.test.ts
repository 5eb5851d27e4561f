// Gemma 2 and Gemma 3 train on webgpu as on cpu and ref: tiny models of the real configs
// (`qlora init-random --tiny`: (1 + w) norms, pre/post norms, GeGLU, sqrt(hidden) embedding scale,
// a 16-token window on the local layers, Gemma 2's attention and final soft-caps, Gemma 3's q/k
// norms, two rope bases and 5:1 local/global pattern), 4-bit base, LoRA on every projection with
// dropout, 32-token sequences (so the local layers slide). Each run's per-step losses equal cpu's
// and ref's within 1e-4 relative (all f32; the webgpu run of stories260K is held to the same bound
// in test/webgpu-train.test.ts), and the loss falls.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { initRandomModel } from '../src/export/init-random.js';
import { loadModel } from '../src/load/load-model.js';
import { Batcher } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import type { LoraConfig } from '../src/models/build.js';
import { Trainer, type TrainOptions } from '../src/train/trainer.js';
import { webgpuBackend } from './backends-under-test.js';
import { compareLossCurves } from './loss-curve.js';

const gpu = await webgpuBackend();
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');
const STEPS = 8;
const SEQ = 32;

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-webgpu-gemma-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const lora: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0.05,
  useRslora: false,
  init: 'kaiming',
  seed: 3,
  targets: 'all-linear',
  layers: null,
};

async function losses(model: string, backend: 'cpu' | 'ref' | 'webgpu'): Promise<number[]> {
  const loaded = await loadModel({
    model,
    backend,
    computeDtype: 'f32',
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora,
    maxPositions: SEQ,
  });
  try {
    const data = await loadDataset(DATA, loaded.tokenizer, {
      maxSeqLen: SEQ,
      validFraction: 0.1,
      seed: 1,
    });
    const batches = new Batcher(data.train, {
      batchSize: 2,
      seqLen: SEQ,
      seed: 1,
      padId: loaded.tokenizer.eosId ?? 0,
    });
    const options: TrainOptions = {
      maxSteps: STEPS,
      lr: 1e-2,
      schedule: 'constant',
      warmupSteps: 0,
      gradAccum: 1,
      maxGradNorm: 1,
      weightDecay: 0,
      optimizer: 'adamw',
      seed: 9,
      gradientCheckpointing: true,
      lossChunkRows: 32,
      evalEvery: 0,
      saveEvery: 0,
      keepCheckpoints: 1,
      earlyStoppingPatience: 0,
      onNonFinite: 'stop',
      resume: false,
      baseModel: path.basename(model),
      outputDir: path.join(tmp, `${path.basename(model)}-${backend}`),
    };
    const out: number[] = [];
    await new Trainer(loaded.model, options, batches.source(), null, {
      onStep: (m) => void out.push(m.loss),
    }).run();
    return out;
  } finally {
    loaded.model.dispose();
  }
}

for (const family of ['gemma2', 'gemma3'] as const) {
  test(
    `webgpu: a tiny ${family} (real config, init-random --tiny) trains with cpu's and ref's per-step losses within 1e-4 relative`,
    { skip: !gpu },
    async () => {
      const dir = path.join(tmp, family);
      const r = initRandomModel({ config: family, output: dir, tiny: true, seed: 11 });
      assert.ok(r.config.slidingLayers?.includes(true) && r.config.slidingLayers.includes(false));
      assert.ok(r.config.slidingWindow! < SEQ, 'the local layers slide within a sequence');
      const web = await losses(dir, 'webgpu');
      const cpu = await losses(dir, 'cpu');
      const ref = await losses(dir, 'ref');
      assert.equal(web.length, STEPS);
      compareLossCurves(`${family} webgpu vs cpu`, cpu, web, { tolerance: 1e-4 });
      compareLossCurves(`${family} webgpu vs ref`, ref, web, { tolerance: 1e-4 });
      assert.ok(web.at(-1)! < web[0]!, `the loss falls: ${web.join(', ')}`);
    },
  );
}
