// Training on a GGUF's own quantization (issue 17.3, --quant keep): a mixed file (Q4_K, Q4_0, Q5_K,
// Q6_K, Q8_0 projections, an F16 one, F32 norms, a Q6_K head) keeps its blocks; our forward on it
// equals the dequantized-weight reference within 1e-5; the kept layers' input gradient equals float64
// finite differences through the dequantized weight; LoRA gradients through the kept model equal the
// reference's; a short run on Q4_K and Q8_0 models lowers the loss and records the base, and
// generate uses the recorded base.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { ggmlKernelsOf } from '../src/backends/capabilities.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { readAdapterRecipe } from '../src/io/adapter-recipe.js';
import { buildLlama, type LoraConfig } from '../src/models/build.js';
import { KvCache, type LlamaModel, type ModelBatch, PROJECTIONS } from '../src/models/llama.js';
import { DenseLinear, LinearGgml } from '../src/nn/linear.js';
import { LoraLinear } from '../src/nn/lora.js';
import { type GgmlQuantType, uploadGgml } from '../src/quant/ggml-blocks.js';
import type { Backend } from '../src/tensor/backend.js';
import { train } from '../src/train/run.js';
import { checkGradients } from './finite-diff.js';
import { randomGgmlWeight, type StoreAs, writeRandomGguf } from './ggml-support.js';
import { randn } from './util.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');
let tmp: string;
let mixed: string;

// Like llama.cpp's Q4_K_M and friends: most projections one type, some others, F32 norms.
const MIXED: Record<string, StoreAs> = {
  'blk.0.attn_q.weight': 'Q4_K',
  'blk.0.attn_k.weight': 'Q4_0',
  'blk.0.attn_v.weight': 'Q6_K',
  'blk.0.attn_output.weight': 'Q5_K',
  'blk.0.ffn_gate.weight': 'Q8_0',
  'blk.0.ffn_up.weight': 'Q4_K',
  'blk.0.ffn_down.weight': 'Q6_K',
  'blk.1.ffn_up.weight': 'F16',
  'blk.1.ffn_down.weight': 'Q6_K',
  'output.weight': 'Q6_K',
};

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-keep-'));
  mixed = path.join(tmp, 'mixed.gguf');
  writeRandomGguf(mixed, (name) => MIXED[name] ?? 'Q4_K');
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const LORA: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0,
  useRslora: false,
  init: 'kaiming',
  seed: 3,
  targets: 'all-linear',
  layers: null,
};

async function build(
  be: Backend,
  keep: boolean,
  dtype: 'f32' | 'f64' = 'f32',
): Promise<LlamaModel> {
  const ck = openCheckpoint(mixed);
  try {
    const model = await buildLlama(ck.config, ck, {
      backend: be,
      dtype,
      keepQuantized: keep,
      lora: LORA,
    });
    // B starts at zero (PEFT init): random B so the LoRA path and dA matter.
    model.parameters().forEach((p, i) => {
      if (p.name.endsWith('lora_B.weight')) p.value.write(randn(p.value.size, 50 + i, 0.05));
    });
    return model;
  } finally {
    ck.close();
  }
}

// 12 tokens: more than the GEMM's small-M path takes (M ≤ 8 sums in another order), so the kept and
// dense models run the same blocked driver and differ only in where the panels come from.
const PROMPT = Int32Array.from([1, 45, 300, 12, 7, 99, 410, 3, 250, 17, 88, 5]);

async function allLogits(model: LlamaModel): Promise<Float64Array> {
  const arena = model.backend.createArena(1 << 20);
  const cache = new KvCache(model, 32);
  try {
    return Float64Array.from(await model.forwardCached(PROMPT, cache, arena, PROMPT.length).read());
  } finally {
    cache.dispose();
    arena.dispose();
  }
}

test('--quant keep keeps each projection in its stored block type; the forward equals the dequantized-weight reference within 1e-5', async () => {
  const cpu = await getBackend('cpu');
  assert.equal(cpu.computeDtype ?? 'f32', 'f32');
  const kept = await build(cpu, true);
  const dense = await build(cpu, false);
  const reference = await build(await getBackend('ref'), false, 'f64');
  try {
    const typeOf = (l: number, name: (typeof PROJECTIONS)[number]) => {
      const p = kept.layers[l]!.proj[name];
      const base = p instanceof LoraLinear ? p.base : p;
      return base instanceof LinearGgml
        ? base.weight.type
        : base instanceof DenseLinear
          ? 'dense'
          : '?';
    };
    assert.deepEqual(
      PROJECTIONS.filter((n) => kept.layers[0]!.proj[n]).map((n) => typeOf(0, n)),
      ['q4_k', 'q4_0', 'q6_k', 'q5_k', 'q8_0', 'q4_k', 'q6_k'],
    );
    assert.deepEqual(
      PROJECTIONS.filter((n) => kept.layers[1]!.proj[n]).map((n) => typeOf(1, n)),
      ['q4_k', 'q4_k', 'q4_k', 'q4_k', 'q4_k', 'dense', 'q6_k'],
    );
    assert.ok(kept.lmHead instanceof LinearGgml && kept.lmHead.weight.type === 'q6_k');
    // Against the same model built from the dequantized weights (f32, DenseLinear): the kept
    // blocks are the only difference.
    const a = await allLogits(kept);
    const b = await allLogits(dense);
    const c = await allLogits(reference);
    const diff = (u: Float64Array, v: Float64Array) => {
      let max = 0;
      for (let i = 0; i < u.length; i++) max = Math.max(max, Math.abs(u[i]! - v[i]!));
      return max;
    };
    const scale = c.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(scale > 0.1, `logits too small to compare (${scale})`);
    assert.ok(
      diff(a, b) <= 1e-5,
      `kept-blocks forward differs from the dequantized-weight model by ${diff(a, b)}`,
    );
    // And the float64 reference backend on the dequantized weights: f32 rounding through the
    // whole model (norms, attention, 512-way softmax inputs) is the only difference left.
    assert.ok(
      diff(a, c) <= 1e-5 * scale,
      `kept-blocks forward differs from the float64 reference by ${diff(a, c)}`,
    );
  } finally {
    kept.dispose();
    dense.dispose();
    reference.dispose();
  }
});

test('kept layers: the input gradient equals float64 finite differences through the dequantized weight (ref exact, cpu within f32)', async () => {
  const ref = ggmlKernelsOf(await getBackend('ref'));
  const cpu = ggmlKernelsOf(await getBackend('cpu'));
  const shapes: [GgmlQuantType, number, number][] = [
    ['q4_0', 5, 64],
    ['q8_0', 3, 32],
    ['q4_k', 7, 256],
    ['q5_k', 3, 256],
    ['q6_k', 5, 256],
  ];
  let seed = 3;
  for (const [type, rows, cols] of shapes) {
    const host = randomGgmlWeight(type, rows, cols, seed++);
    const layer = new LinearGgml(uploadGgml(ref, host));
    const W = layer.dequantize();
    const Wd = ref.fromArray(await W.read(), [rows, cols], 'f64');
    const n = 3;
    const x = ref.fromArray(randn(n * cols, seed++), [n, cols], 'f64');
    const y = ref.zeros([n, rows], 'f64');
    const R = ref.fromArray(randn(n * rows, seed++), [n, rows], 'f64');
    const dx = ref.zeros([n, cols], 'f64');
    layer.inputGrad(R, dx, false);
    // Finite differences of L = Σ R∘(x·Wᵀ) through the dequantized weight, in float64.
    checkGradients(
      `${type} input gradient`,
      { x },
      y,
      () => ref.matmul(x, Wd, y, { transB: true }),
      { x: dx.data },
      R,
    );
    // The cpu kernel's f32 input gradient against the same float64 reference.
    const cpuLayer = new LinearGgml(uploadGgml(cpu, host));
    const dy32 = cpu.fromArray(R.data, [n, rows]);
    const dx32 = cpu.zeros([n, cols]);
    cpuLayer.inputGrad(dy32, dx32, false);
    const got = await dx32.read();
    for (let i = 0; i < got.length; i++)
      assert.ok(
        Math.abs(got[i]! - dx.data[i]!) <= 1e-5 * (1 + Math.abs(dx.data[i]!)),
        `${type} cpu dx[${i}]: ${got[i]} vs ${dx.data[i]}`,
      );
    for (const t of [W, Wd, x, y, R, dx, dy32, dx32]) t.dispose();
    layer.dispose();
    cpuLayer.dispose();
  }
});

test('LoRA gradients through the kept model equal the dequantized float64 reference', async () => {
  const batch: ModelBatch = {
    batchSize: 1,
    seqLen: 12,
    inputIds: PROMPT,
    labels: Int32Array.from([...PROMPT.slice(1), -100]),
    positions: Int32Array.from(PROMPT.keys()),
    segmentIds: null,
  } as unknown as ModelBatch;
  const grads = async (model: LlamaModel) => {
    const be = model.backend;
    const arena = be.createArena(1 << 20);
    const layerArena = be.createArena(1 << 20);
    try {
      for (const p of model.parameters()) p.zeroGrad();
      await model.lossAndGradients(batch, arena, layerArena, {
        training: true,
        stepSeed: 1,
        gradientCheckpointing: true,
        lossChunkRows: 4,
        gradScale: 1,
      });
      return Promise.all(
        model.parameters().map(async (p) => Float64Array.from(await p.grad!.read())),
      );
    } finally {
      arena.dispose();
      layerArena.dispose();
    }
  };
  const kept = await build(await getBackend('cpu'), true);
  const reference = await build(await getBackend('ref'), false, 'f64');
  try {
    const a = await grads(kept);
    const b = await grads(reference);
    let max = 0;
    let scale = 0;
    a.forEach((g, i) =>
      g.forEach((v, j) => {
        max = Math.max(max, Math.abs(v - b[i]![j]!));
        scale = Math.max(scale, Math.abs(b[i]![j]!));
      }),
    );
    assert.ok(scale > 1e-3, `gradients too small to compare (${scale})`);
    assert.ok(
      max <= 1e-5 * Math.max(1, scale),
      `LoRA gradients differ by ${max} (largest ${scale})`,
    );
  } finally {
    kept.dispose();
    reference.dispose();
  }
});

for (const type of ['Q4_K', 'Q8_0'] as const) {
  test(`a short --quant keep run on a ${type} model lowers the loss and records the GGUF base; generate uses it`, async () => {
    const file = path.join(tmp, `${type}.gguf`);
    writeRandomGguf(file, () => type, 11);
    const out = path.join(tmp, `run-${type}`);
    const losses: number[] = [];
    const lines: string[] = [];
    const result = await train({
      model: file,
      data: DATA,
      output: out,
      quant: 'keep',
      maxSteps: 16,
      seqLen: 32,
      batchSize: 2,
      lr: 1e-2,
      evalEvery: 0,
      saveEvery: 0,
      backend: 'cpu',
      computeDtype: 'f32',
      onLog: (l: string) => lines.push(l),
      onStep: (m) => losses.push(m.loss),
    } as Parameters<typeof train>[0]);
    assert.ok(result.adapterPath);
    const first = (losses[0]! + losses[1]! + losses[2]!) / 3;
    const last = (losses.at(-1)! + losses.at(-2)! + losses.at(-3)!) / 3;
    assert.ok(
      last < first - 0.3,
      `loss did not fall: ${losses.map((l) => l.toFixed(2)).join(' ')}`,
    );
    const recipe = readAdapterRecipe(out);
    assert.deepEqual(recipe?.quantization, { quantType: 'keep', tensorTypes: { [type]: 15 } });
    assert.ok(
      lines.some((l) => l.includes(`base the GGUF's own quantization as stored (${type} ×15)`)),
      lines.join('\n'),
    );
    const raw = JSON.parse(fs.readFileSync(path.join(out, 'qlora_config.json'), 'utf8'));
    assert.deepEqual(raw.quantization_config, {
      quant_method: 'gguf',
      kept_as_stored: true,
      tensor_types: { [type]: 15 },
    });
    if (type !== 'Q4_K') {
      // Without --quant keep (NF4, the default) train says in one line what happens to the blocks.
      const notes: string[] = [];
      await train({
        model: file,
        data: DATA,
        output: path.join(tmp, `run-${type}-nf4`),
        maxSteps: 1,
        seqLen: 32,
        evalEvery: 0,
        saveEvery: 0,
        backend: 'cpu',
        onLog: (l: string) => notes.push(l),
      } as Parameters<typeof train>[0]);
      assert.ok(
        notes.some((l) =>
          l.includes(
            `note: this GGUF stores its projections as ${type} ×15; --quant nf4 dequantizes and re-quantizes them to NF4, so the adapter learns other weights than llama.cpp serves: --quant keep trains on them as stored (recommended)`,
          ),
        ),
        notes.join('\n'),
      );
      return;
    }
    // generate with the adapter builds the same kept base and says so.
    const gen = spawnSync(
      process.execPath,
      [
        '--import',
        import.meta.resolve('tsx'),
        path.join(root, 'src', 'cli', 'run.ts'),
        'generate',
        '-m',
        file,
        '-a',
        out,
        '-p',
        'the',
        '-t',
        '0',
        '--max-tokens',
        '4',
        '--compute-dtype',
        'f32',
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(gen.status, 0, gen.stderr);
    assert.match(
      gen.stderr,
      /base: the GGUF's own quantization as stored \(Q4_K ×15\), as the adapter was trained/,
    );
  });
}

test('the memory plan counts kept blocks as stored: Q4_K 4.5 and Q8_0 8.5 bits per projection parameter on a 7B shape; a file by its own types', async () => {
  const { planTraining, keptGgufTypes } = await import('../src/train/plan.js');
  const { resolvePlanModel } = await import('../src/train/plan-shapes.js');
  const m = resolvePlanModel('llama2-7b').config;
  const opts = { seqLen: 64, batchSize: 1, quantization: null, gradientCheckpointing: true };
  const q4k = await planTraining(m, { ...opts, keptGguf: 'q4_k' });
  const q80 = await planTraining(m, { ...opts, keptGguf: 'q8_0' });
  const nf4 = await planTraining(m, {
    ...opts,
    quantization: { blocksize: 64, doubleQuant: true },
  });
  assert.equal(q4k.projectionBitsPerParam, 4.5);
  assert.equal(q80.projectionBitsPerParam, 8.5);
  assert.ok(Math.abs(nf4.projectionBitsPerParam - 4.127) < 0.01, `${nf4.projectionBitsPerParam}`);
  assert.ok(!q4k.warnings.some((w) => /full precision/.test(w)));
  // The mixed file: each projection at its own type's bits, the F16 one as f32 in memory.
  const ck = openCheckpoint(mixed);
  const config = ck.config;
  let bits = 0;
  let params = 0;
  const perType: Record<string, number> = {
    q4_k: 4.5,
    q4_0: 4.5,
    q5_k: 5.5,
    q6_k: 6.5625,
    q8_0: 8.5,
  };
  for (const name of ck.tensorNames) {
    if (!/_proj\.weight$/.test(name)) continue;
    const n = ck.shapeOf(name).reduce((a, b) => a * b, 1);
    const t = ck.ggmlTypeOf!(name);
    bits += n * (t ? perType[t]! : 32);
    params += n;
  }
  ck.close();
  const file = await planTraining(config, { ...opts, keptGguf: keptGgufTypes(mixed) });
  assert.ok(
    Math.abs(file.projectionBitsPerParam - bits / params) < 1e-9,
    `${file.projectionBitsPerParam} vs ${bits / params}`,
  );
});
