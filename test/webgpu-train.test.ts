// The whole model and trainer on the webgpu backend: LoRA gradients through a 4-bit Llama (GQA,
// packed segments, dropout) equal ref's float64 gradients (which test/model-gradcheck.test.ts ties
// to finite differences); 40 QLoRA steps of stories260K give cpu's per-step losses within 1e-4
// relative; a resumed webgpu run is bit-identical to the uninterrupted one.
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
import {
  type BuildConfig,
  buildLlama,
  expectedTensorNames,
  type LoraConfig,
} from '../src/models/build.js';
import type { LlamaModel, ModelBatch, StepOptions } from '../src/models/llama.js';
import type { Backend } from '../src/tensor/backend.js';
import { Trainer, type TrainOptions } from '../src/train/trainer.js';
import { webgpuBackend } from './backends-under-test.js';
import { compareLossCurves } from './loss-curve.js';
import { randn } from './util.js';

const gpu = await webgpuBackend();
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');

const config: BuildConfig = {
  vocabSize: 37,
  hiddenSize: 24,
  intermediateSize: 40,
  numLayers: 2,
  numHeads: 6,
  numKvHeads: 2,
  headDim: 4,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 64,
  tieWordEmbeddings: false,
  attentionBias: false,
};

function randomSource(seed: number) {
  const c = config;
  const values = new Map<string, Float32Array>();
  let k = 0;
  for (const name of expectedTensorNames(c)) {
    let size = c.hiddenSize;
    if (name.includes('embed_tokens') || name.startsWith('lm_head'))
      size = c.vocabSize * c.hiddenSize;
    else if (name.includes('q_proj') || name.includes('o_proj'))
      size = c.numHeads * c.headDim * c.hiddenSize;
    else if (name.includes('k_proj') || name.includes('v_proj'))
      size = c.numKvHeads * c.headDim * c.hiddenSize;
    else if (name.includes('_proj')) size = c.intermediateSize * c.hiddenSize;
    const isNorm = name.includes('norm');
    const v = randn(size, seed + 101 * k++, isNorm ? 0.1 : 0.5);
    values.set(
      name,
      Float32Array.from(v, (x) => (isNorm ? 1 + x : x)),
    );
  }
  return { has: (n: string) => values.has(n), load: (n: string) => values.get(n)! };
}

const batch: ModelBatch = {
  batchSize: 2,
  seqLen: 9,
  inputIds: Int32Array.from([1, 4, 7, 2, 9, 3, 30, 12, 0, 5, 8, 13, 21, 34, 2, 1, 36, 17]),
  labels: Int32Array.from([4, 7, -100, 9, 11, -100, 12, 0, 5, -100, -100, 21, 34, 2, 1, 36, 17, 6]),
  positions: Int32Array.from([0, 1, 2, 0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
  segmentIds: Int32Array.from([0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
};

async function build(be: Backend, dropout: number, quantizeHead: boolean): Promise<LlamaModel> {
  const model = await buildLlama(config, randomSource(7), {
    backend: be,
    dtype: be.name === 'ref' ? 'f64' : 'f32',
    quantization: { quantType: 'nf4', blocksize: 32, doubleQuant: true },
    quantizeHead,
    quantizeEmbedding: quantizeHead,
    lora: {
      r: 3,
      alpha: 5,
      dropout,
      useRslora: false,
      init: 'kaiming',
      seed: 5,
      targets: 'all-linear',
      layers: null,
    },
  });
  model.parameters().forEach((p, i) => {
    if (p.name.endsWith('lora_B.weight')) p.value.write(randn(p.value.size, 900 + i, 0.3));
  });
  return model;
}

async function gradients(
  be: Backend,
  dropout: number,
  quantizeHead: boolean,
  checkpointing: boolean,
) {
  const model = await build(be, dropout, quantizeHead);
  const arena = be.createArena(1 << 16, 'step');
  const layerArena = be.createArena(1 << 16, 'layer');
  const opts: StepOptions = {
    training: true,
    stepSeed: 77,
    gradientCheckpointing: checkpointing,
    lossChunkRows: 5,
    gradScale: 1,
  };
  for (const p of model.parameters()) p.zeroGrad();
  const res = await model.lossAndGradients(batch, arena, layerArena, opts, true);
  const grads = new Map<string, Float64Array>();
  for (const p of model.parameters()) grads.set(p.name, Float64Array.from(await p.grad!.read()));
  arena.dispose();
  layerArena.dispose();
  model.dispose();
  return { loss: res.lossSum / res.tokens, grads };
}

for (const [dropout, quantizeHead] of [
  [0, false],
  [0.3, true],
] as const) {
  test(
    `webgpu: whole-model LoRA gradients equal ref's float64 gradients (dropout ${dropout}, ${quantizeHead ? '4-bit' : 'f32'} head and embedding)`,
    { skip: !gpu },
    async () => {
      const ref = await getBackend('ref');
      const want = await gradients(ref, dropout, quantizeHead, false);
      for (const checkpointing of [false, true]) {
        const got = await gradients(gpu!, dropout, quantizeHead, checkpointing);
        assert.ok(
          Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss),
          `loss ${got.loss} vs ${want.loss}`,
        );
        let scale = 0;
        for (const g of want.grads.values())
          for (const x of g) scale = Math.max(scale, Math.abs(x));
        assert.ok(scale > 1e-3, 'gradients are not all ~0');
        for (const [name, g] of want.grads) {
          const h = got.grads.get(name)!;
          for (let i = 0; i < g.length; i++) {
            assert.ok(
              Math.abs(h[i]! - g[i]!) <= 1e-4 * scale,
              `${name}[${i}] ${h[i]} vs ${g[i]} (checkpointing ${checkpointing})`,
            );
          }
        }
      }
    },
  );
}

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

async function run(
  backend: 'cpu' | 'webgpu',
  extra: Partial<TrainOptions>,
  outputDir: string,
  stopAfter = 0,
  computeDtype: 'f32' | 'f16' = 'f32',
) {
  const { model, tokenizer } = await loadModel({
    model: MODEL,
    backend,
    computeDtype,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora,
    maxPositions: 32,
  });
  const data = await loadDataset(DATA, tokenizer, { maxSeqLen: 32, validFraction: 0.1, seed: 1 });
  const train = new Batcher(data.train, {
    batchSize: 4,
    seqLen: 32,
    seed: 1,
    padId: tokenizer.eosId ?? 0,
  });
  const options: TrainOptions = {
    maxSteps: 40,
    lr: 3e-3,
    schedule: 'cosine',
    warmupSteps: 2,
    gradAccum: 1,
    maxGradNorm: 1,
    weightDecay: 0.01,
    optimizer: 'adamw',
    seed: 9,
    gradientCheckpointing: false,
    lossChunkRows: 64,
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
  const losses: number[] = [];
  // stopAfter: interrupted after that step (as Ctrl-C would), keeping the full run's LR schedule.
  const trainer: Trainer = new Trainer(model, options, train.source(), null, {
    onStep: (m) => {
      if (losses.push(m.loss) === stopAfter) trainer.interrupt();
    },
  });
  await trainer.run();
  model.dispose();
  return losses;
}

test(
  "webgpu: 40 QLoRA steps of stories260K give cpu's per-step losses within 1e-4 relative",
  { skip: !gpu },
  async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-webgpu-'));
    try {
      const cpu = await run('cpu', {}, path.join(tmp, 'cpu'));
      const web = await run('webgpu', {}, path.join(tmp, 'webgpu'));
      assert.equal(web.length, 40);
      compareLossCurves('stories260K webgpu vs cpu', cpu, web, { tolerance: 1e-4 });
      assert.ok(web[39]! < web[0]!, 'the loss falls');
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
);

test(
  'webgpu: a run resumed from a checkpoint equals the uninterrupted run bit for bit (8-bit AdamW)',
  { skip: !gpu },
  async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-webgpu-resume-'));
    try {
      const whole = path.join(tmp, 'whole');
      const parts = path.join(tmp, 'parts');
      await run('webgpu', { maxSteps: 8, optimizer: 'adamw8bit' }, whole);
      await run('webgpu', { maxSteps: 8, saveEvery: 4, optimizer: 'adamw8bit' }, parts, 4);
      await run(
        'webgpu',
        { maxSteps: 8, saveEvery: 4, optimizer: 'adamw8bit', resume: true },
        parts,
      );
      const a = fs.readFileSync(path.join(whole, 'adapter_model.safetensors'));
      const b = fs.readFileSync(path.join(parts, 'adapter_model.safetensors'));
      assert.ok(a.equals(b), 'resumed adapter differs from the uninterrupted one');
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
);

test(
  'webgpu: `qlora generate --backend webgpu` prints the same greedy text as cpu',
  { skip: !gpu },
  async () => {
    const { spawnSync } = await import('node:child_process');
    const out = (backend: string) => {
      const r = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          path.join(root, 'src', 'cli', 'run.ts'),
          'generate',
          '-m',
          MODEL,
          '-p',
          'Once upon a time',
          '-t',
          '0',
          '--max-tokens',
          '24',
          '--backend',
          backend,
        ],
        { cwd: root, encoding: 'utf8' },
      );
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const cpu = out('cpu');
    assert.match(cpu, /Once upon a time/);
    assert.equal(out('webgpu'), cpu);
  },
);

const hasF16 = Boolean(gpu && (gpu as { hasF16?: boolean }).hasF16);
test(
  'webgpu: --compute-dtype f16 (4-bit matmuls on f16 tiles) follows the f32 loss curve within 1% over 40 steps',
  { skip: !hasF16 },
  async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-webgpu-f16-'));
    try {
      const f32 = await run('webgpu', {}, path.join(tmp, 'f32'));
      const f16 = await run('webgpu', {}, path.join(tmp, 'f16'), 0, 'f16');
      assert.equal(f16.length, 40);
      compareLossCurves('f16 vs f32 compute on webgpu', f32, f16, {
        tolerance: 1e-2,
        mustDiffer: true,
      });
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
);

test('--compute-dtype f16 is refused on a backend without f16 compute, naming the backend', async () => {
  await assert.rejects(
    loadModel({ model: MODEL, backend: 'cpu', computeDtype: 'f16' }),
    /--compute-dtype f16 needs the webgpu backend .*'cpu' computes in f32/,
  );
});

test(
  'webgpu: `qlora plan --backend webgpu` reports device memory, the binding limits and a measured speed',
  { skip: !gpu },
  async () => {
    const { spawnSync } = await import('node:child_process');
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(root, 'src', 'cli', 'run.ts'),
        'plan',
        '-m',
        MODEL,
        '--seq-len',
        '64',
        '--batch-size',
        '2',
        '--backend',
        'webgpu',
      ],
      { cwd: root, encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^on webgpu: .*$/m);
    assert.match(r.stdout, /device memory +[\d.]+ (KiB|MiB|GiB) +at peak/);
    assert.match(
      r.stdout,
      /speed +[\d.]+ tok\/s +at most: model FLOPs at the measured f32 GEMM rate of [\d.]+ GFLOP\/s/,
    );
    assert.match(r.stdout, /fits this GPU's buffer and binding limits/);
  },
);
