import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { main } from '../src/cli/main.js';
import { buildLlama } from '../src/models/build.js';
import { configFromHf } from '../src/io/config.js';
import type { ModelBatch } from '../src/models/llama.js';
import { syntheticSource } from '../src/models/synthetic.js';
import {
  namedShape,
  parameterCounts,
  PLAN_DEFAULTS,
  type PlanOptions,
  planTraining,
  WORKSPACE_PER_THREAD_BYTES,
} from '../src/train/plan.js';
import { hostProcess } from '../src/io/host.js';
import type { LoraConfig } from '../src/models/build.js';
import { Trainer } from '../src/train/trainer.js';
import { rng } from './util.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

test('parameter counts of the named shapes match the published model sizes', () => {
  // Llama-2-7b-hf: 6,738,415,616 parameters; TinyLlama-1.1B: 1,100,048,384 (Hugging Face model pages).
  assert.equal(
    parameterCounts(namedShape('llama2-7b')!, { rank: 16, targets: 'all-linear' }).base,
    6_738_415_616,
  );
  assert.equal(
    parameterCounts(namedShape('tinyllama')!, { rank: 16, targets: 'all-linear' }).base,
    1_100_048_384,
  );
  // Meta-Llama-3-8B: 8,030,261,248 (GQA: k/v are 1024 × 4096).
  assert.equal(
    parameterCounts(namedShape('llama3-8b')!, { rank: 16, targets: 'all-linear' }).base,
    8_030_261_248,
  );
  // The shapes of fixtures/model-configs: the parameter counts their Hugging Face pages publish
  // (exact where the page gives the safetensors total; else the model card's rounded figures:
  // total / non-embedding for Qwen).
  const base = (n: string) =>
    parameterCounts(namedShape(n)!, { rank: 16, targets: 'all-linear' }).base;
  assert.equal(base('llama-3.2-1b'), 1_235_814_400);
  assert.equal(base('llama-3.2-3b'), 3_212_749_824);
  assert.equal(base('llama-3.1-8b'), 8_030_261_248);
  assert.equal(base('smollm2-135m'), 134_515_008);
  assert.equal(base('mistral-7b'), 7_241_732_096);
  assert.equal(base('qwen2.5-0.5b'), 494_032_768, 'q/k/v biases included');
  // Within the last published digit (model cards round or truncate).
  const close = (n: string, billions: number, digits = 2) =>
    assert.ok(Math.abs(base(n) / 1e9 - billions) < 10 ** -digits, `${n}: ${base(n)}`);
  close('smollm2-360m', 0.36);
  close('smollm2-1.7b', 1.71);
  close('qwen3-0.6b', 0.6, 1);
  close('qwen3-1.7b', 1.7, 1);
  close('qwen3-4b', 4.0, 1);
  close('qwen3-8b', 8.2, 1);
  close('qwen2.5-1.5b', 1.54);
  close('qwen2.5-3b', 3.09);
  close('qwen2.5-7b', 7.61);
  const nonEmbedding = (n: string) => {
    const k = parameterCounts(namedShape(n)!, { rank: 16, targets: 'all-linear' });
    return (k.base - k.embedding - k.lmHead) / 1e9;
  };
  for (const [n, published] of [
    ['qwen3-0.6b', 0.44],
    ['qwen3-8b', 6.95],
    ['qwen2.5-0.5b', 0.36],
    ['qwen2.5-7b', 6.53],
  ] as const)
    assert.ok(Math.abs(nonEmbedding(n) - published) < 0.01, `${n}: ${nonEmbedding(n)}`);
  // Gemma: google/gemma-2-2b's safetensors total 2,614,341,888 and the Gemma 2 report's
  // non-embedding 2,024,517,888 (its embedding count pads the vocabulary to 256,128); the Gemma 3
  // report's 1B total 999,885,952 (302M embedding + 698M non-embedding) and the 4B text model's
  // 3,209M non-embedding (its 4.3B total includes the 417M vision encoder).
  assert.equal(base('gemma-2-2b'), 2_614_341_888);
  assert.equal(base('gemma-3-1b'), 999_885_952);
  const gemmaNonEmbedding = (n: string) => {
    const k = parameterCounts(namedShape(n)!, { rank: 16, targets: 'all-linear' });
    return k.base - k.embedding - k.lmHead;
  };
  assert.equal(gemmaNonEmbedding('gemma-2-2b'), 2_024_517_888);
  assert.equal(Math.round(gemmaNonEmbedding('gemma-3-1b') / 1e6), 698);
  assert.equal(Math.round(gemmaNonEmbedding('gemma-3-4b') / 1e6), 3209);
  // Phi-3 (fused qkv_proj and gate_up_proj): Phi-4-mini-instruct's safetensors total 3,836,021,760
  // (tied, GQA 24/8); Phi-3-mini-4k and Phi-3.5-mini: 3.82B on their pages. PEFT's "trainable
  // params" for all-linear r=16 on Phi-3-mini: 25,165,824 (one adapter per fused module).
  assert.equal(base('phi-4-mini'), 3_836_021_760);
  close('phi-3-mini', 3.82);
  close('phi-3.5-mini', 3.82);
  assert.equal(
    parameterCounts(namedShape('phi-3-mini')!, { rank: 16, targets: 'all-linear' }).lora,
    25_165_824,
  );
  // LoRA r on a [out, in] matrix adds r·(in + out): Llama-2-7B all-linear r=16 → 39,976,960 (the PEFT count).
  assert.equal(
    parameterCounts(namedShape('7b')!, { rank: 16, targets: 'all-linear' }).lora,
    39_976_960,
  );
  assert.equal(
    parameterCounts(namedShape('7b')!, { rank: 8, targets: ['q_proj', 'v_proj'] }).lora,
    4_194_304,
  );
});

// The shapes issue 16 asks `qlora plan` to know by name (Phi's come with the Phi family), plus the
// four it knew before: each resolves to its family and plans a run on the counting backend.
const ISSUE_16_SHAPES: readonly [string, string][] = [
  ['qwen3-0.6b', 'qwen3'],
  ['qwen3-1.7b', 'qwen3'],
  ['qwen3-4b', 'qwen3'],
  ['qwen3-8b', 'qwen3'],
  ['gemma-2-2b', 'gemma2'],
  ['gemma-3-1b', 'gemma3'],
  ['gemma-3-4b', 'gemma3'],
  ['smollm2-135m', 'llama'],
  ['smollm2-360m', 'llama'],
  ['smollm2-1.7b', 'llama'],
  ['llama-3.2-1b', 'llama'],
  ['llama-3.2-3b', 'llama'],
  ['llama-3.1-8b', 'llama'],
  ['mistral-7b', 'mistral'],
  ['qwen2.5-0.5b', 'qwen2'],
  ['qwen2.5-1.5b', 'qwen2'],
  ['qwen2.5-3b', 'qwen2'],
  ['qwen2.5-7b', 'qwen2'],
  ['stories15m', 'llama'],
  ['stories110m', 'llama'],
  ['tinyllama', 'llama'],
  ['llama2-7b', 'llama'],
];

test('qlora plan knows every shape of issue 16 by name (the Gemma ones planned end to end)', async () => {
  for (const [name, family] of ISSUE_16_SHAPES) {
    const shape = namedShape(name);
    assert.ok(shape, `${name}: not a named shape`);
    assert.equal(shape.architecture ?? 'llama', family, name);
    assert.ok(parameterCounts(shape, { rank: 16, targets: 'all-linear' }).base > 0, name);
  }
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(' '));
  try {
    // Memory only: timing a 256k-vocabulary head's kernels would take most of a minute here.
    for (const name of ['gemma-2-2b', 'gemma-3-4b'])
      assert.equal(
        await main(['plan', '--model', name, '--seq-len', '128', '--no-speed']),
        0,
        lines.join('\n'),
      );
  } finally {
    console.log = log;
  }
  process.exitCode = undefined;
  const text = lines.join('\n');
  for (const name of ['gemma-2-2b', 'gemma-3-4b'])
    assert.match(text, new RegExp(`plan for ${name}: batch`));
  assert.match(text, /not timed \(--no-speed\)/);
});

test('NF4 + double quant costs 4 + 8/64 + 32/(64·256) bits per projection weight', async () => {
  const plan = await planTraining(namedShape('llama2-7b')!, {
    quantization: { blocksize: 64, doubleQuant: true },
  });
  assert.ok(
    Math.abs(plan.projectionBitsPerParam - (4 + 8 / 64 + 32 / (64 * 256))) < 1e-6,
    String(plan.projectionBitsPerParam),
  );
  const single = await planTraining(namedShape('llama2-7b')!, {
    quantization: { blocksize: 64, doubleQuant: false },
  });
  assert.ok(Math.abs(single.projectionBitsPerParam - (4 + 32 / 64)) < 1e-6);
  // f32 embedding and lm_head (2 × 32000 × 4096) dominate the rest of the 7B base.
  const f32Bits = (2 * 32000 * 4096 * 32) / 6_738_415_616;
  assert.ok(plan.baseBitsPerParam > f32Bits && plan.baseBitsPerParam < f32Bits + 4.2);
});

/** A batch as the Batcher packs one: random ids and labels, positions and segment ids per row. */
function batchFor(batchSize: number, seqLen: number, vocab: number, seed: number): ModelBatch {
  const r = rng(seed);
  const n = batchSize * seqLen;
  const inputIds = new Int32Array(n);
  const labels = new Int32Array(n);
  const positions = new Int32Array(n);
  const segmentIds = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    inputIds[i] = Math.floor(r() * vocab);
    labels[i] = Math.floor(r() * vocab);
    positions[i] = i % seqLen;
  }
  return { batchSize, seqLen, inputIds, labels, positions, segmentIds };
}

const TINY_GQA = {
  model_type: 'llama',
  hidden_size: 64,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  intermediate_size: 176,
  vocab_size: 1000,
  max_position_embeddings: 256,
  tie_word_embeddings: false,
};

/**
 * What a real run holds on the cpu backend: builds the model, then does what Trainer.run does per
 * step (computeGradients + update) twice and evaluates, with the Trainer's arenas created at
 * `arenaBytes` (as `qlora train` creates them from the plan) or grown from 1 MiB. Returns the
 * arenas' capacities and the native bytes the run holds at the end (everything still alive).
 */
async function realRun(
  hf: Record<string, unknown>,
  o: PlanOptions,
  arenaBytes: { step: number; layer: number } | undefined,
): Promise<{ step: number; layer: number; stepPeak: number; nativeBytes: number }> {
  const be = await getBackend('cpu');
  const config = configFromHf(hf);
  const before = be.memoryStats().allocatedBytes;
  const lora: LoraConfig = {
    r: o.rank,
    alpha: 2 * o.rank,
    dropout: o.loraDropout,
    useRslora: false,
    init: 'kaiming',
    seed: 3,
    targets: o.targets,
    layers: null,
  };
  const model = await buildLlama(config, syntheticSource(config, 7), {
    backend: be,
    quantization: o.quantization ? { quantType: 'nf4', ...o.quantization } : null,
    quantizeHead: o.quantizeHead ?? false,
    quantizeEmbedding: o.quantizeEmbedding ?? false,
    lora,
    maxPositions: o.seqLen,
  });
  const batch = batchFor(o.batchSize, o.seqLen, config.vocabSize, 1);
  const trainer = new Trainer(
    model,
    {
      outputDir: '',
      maxSteps: 2,
      lr: 1e-3,
      schedule: 'constant',
      warmupSteps: 0,
      gradAccum: o.gradAccum ?? 1,
      maxGradNorm: 1,
      weightDecay: 0,
      optimizer: o.optimizer,
      seed: 1,
      gradientCheckpointing: o.gradientCheckpointing,
      lossChunkRows: o.lossChunkRows,
      evalEvery: 0,
      saveEvery: 0,
      keepCheckpoints: 1,
      earlyStoppingPatience: 0,
      onNonFinite: 'stop',
      resume: false,
      baseModel: null,
      ...(arenaBytes ? { arenaBytes } : {}),
    },
    { next: () => batch, cursor: () => 0, restore: () => {} },
    () => [batch],
  );
  const optimizer = trainer.createOptimizer();
  for (let step = 0; step < 2; step++) {
    const g = await trainer.computeGradients(step);
    assert.ok(Number.isFinite(g.loss) && g.loss > 0, 'a real step computes a loss');
    trainer.update(optimizer, g.gradNorm, 1e-3);
  }
  assert.ok((await trainer.evaluate())!.loss > 0);
  const arenas = trainer.arenaStats();
  const nativeBytes = be.memoryStats().allocatedBytes - before;
  optimizer.dispose();
  trainer.dispose();
  model.dispose();
  return {
    step: arenas.step.capacity,
    layer: arenas.layer.capacity,
    stepPeak: arenas.step.peakBytes,
    nativeBytes,
  };
}

test('the plan is what a real training step on the cpu backend holds: arenas and every native byte (GQA, dropout, checkpointing, 8-bit AdamW, 4-bit head and embeddings)', async () => {
  const cases: { hf: Record<string, unknown>; o: Partial<PlanOptions> }[] = [
    // Arenas growing from 1 MiB (the growth policy itself), an f32 base, dropout copies.
    {
      hf: TINY_GQA,
      o: {
        rank: 4,
        targets: ['q_proj', 'v_proj', 'down_proj'],
        gradientCheckpointing: false,
        loraDropout: 0.1,
        quantization: null,
        presizedArenas: false,
      },
    },
    {
      hf: TINY_GQA,
      o: {
        rank: 4,
        targets: ['q_proj', 'v_proj', 'down_proj'],
        gradientCheckpointing: true,
        loraDropout: 0.1,
        quantization: null,
        presizedArenas: false,
      },
    },
    // As `qlora train` runs: presized arenas, NF4 base with the head and embeddings in 4-bit too,
    // 8-bit AdamW (rank 32 on hidden 128 puts A over bnb's 4096-element threshold), accumulation.
    {
      hf: { ...TINY_GQA, hidden_size: 128, intermediate_size: 352 },
      o: {
        rank: 32,
        targets: 'all-linear',
        gradientCheckpointing: true,
        optimizer: 'adamw8bit',
        quantizeHead: true,
        quantizeEmbedding: true,
        gradAccum: 2,
        presizedArenas: true,
      },
    },
  ];
  for (const { hf, o: partial } of cases) {
    const o: PlanOptions = {
      ...PLAN_DEFAULTS,
      batchSize: 3,
      seqLen: 128,
      lossChunkRows: 200,
      ...partial,
    };
    const what = JSON.stringify(partial);
    const plan = await planTraining(configFromHf(hf), o);
    const real = await realRun(hf, o, o.presizedArenas ? plan.arenaBytes : undefined);
    assert.ok(
      real.stepPeak > 1 << 20,
      `the step must outgrow 1 MiB for the check to mean something (${what})`,
    );
    assert.equal(real.step, plan.memory.activations, `step arena (${what})`);
    const scratch = hostProcess.cpuCount() * WORKSPACE_PER_THREAD_BYTES;
    assert.equal(real.layer, plan.memory.workspace - scratch, `layer arena (${what})`);
    assert.equal(real.stepPeak, plan.arenaBytes.step, `step arena peak (${what})`);
    if (o.presizedArenas)
      assert.equal(real.step, plan.arenaBytes.step, `a presized arena never grows (${what})`);
    // Weights, adapters, gradients, optimizer state, arenas and the trainer's statistics: to the byte.
    assert.equal(real.nativeBytes, plan.backendPeakBytes, `native bytes held (${what})`);
    const { runtime, ...held } = plan.memory;
    assert.equal(
      Object.values(held).reduce((a, b) => a + b, 0) - scratch,
      real.nativeBytes,
      `the breakdown adds up to what the run holds (${what})`,
    );
  }
});

test('predicted peak RSS is within ±10% of a real stories15M-shaped QLoRA run (child process)', () => {
  const r = spawnSync(
    process.execPath,
    [
      '--import',
      'tsx',
      path.join(ROOT, 'bench', 'train.ts'),
      '--child',
      '15m',
      '--steps',
      '1',
      '--peak',
      '100',
    ],
    {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    },
  );
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  assert.ok(line, `child failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`);
  const result = JSON.parse(line.slice('RESULT '.length)) as {
    peakRssBytes: number;
    predictedPeakBytes: number;
    nativePeakBytes: number;
    predictedBackendPeakBytes: number;
    arenaCapacity: { step: number; layer: number };
    plannedArenaBytes: { step: number; layer: number };
  };
  const error = (result.predictedPeakBytes - result.peakRssBytes) / result.peakRssBytes;
  assert.ok(
    Math.abs(error) <= 0.1,
    `predicted ${result.predictedPeakBytes} vs measured ${result.peakRssBytes} (${(error * 100).toFixed(1)}%)`,
  );
  // The part of the peak the plan measures rather than estimates: the addon's own high-water mark
  // (weights, adapters, gradients, AdamW state, arenas). The bench loop keeps two one-element
  // tensors where the Trainer keeps its statistics (64 bytes each), hence the 1 KiB tolerance.
  assert.ok(
    Math.abs(result.nativePeakBytes - result.predictedBackendPeakBytes) <= 1024,
    `native peak ${result.nativePeakBytes} vs planned ${result.predictedBackendPeakBytes}`,
  );
  // The arenas were created at the plan's size and never grew.
  assert.deepEqual(result.arenaCapacity, result.plannedArenaBytes);
});

test('a run that would not fit is flagged with a warning', async () => {
  const seven = namedShape('llama2-7b')!;
  const small = await planTraining(
    seven,
    { batchSize: 1, seqLen: 512, gradientCheckpointing: true },
    { totalMemoryBytes: 4 * 2 ** 30 },
  );
  assert.equal(small.fits, false);
  assert.match(small.warnings.join('\n'), /exceeds this machine's 4\.00 GiB/);
  const big = await planTraining(
    seven,
    { batchSize: 1, seqLen: 512, gradientCheckpointing: true },
    { totalMemoryBytes: 64 * 2 ** 30 },
  );
  assert.equal(big.fits, true);
  assert.equal(big.warnings.length, 0);
  // Checkpointing keeps one layer's activations instead of all of them.
  const noCkpt = await planTraining(seven, {
    batchSize: 1,
    seqLen: 512,
    gradientCheckpointing: false,
  });
  assert.ok(noCkpt.memory.activations > 10 * big.memory.activations);
});

test('qlora plan prints the breakdown and exits 2 when the run cannot fit', async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(' '));
  let ok: number;
  let tooBig: number;
  try {
    ok = await main([
      'plan',
      '--model',
      'tinyllama',
      '--seq-len',
      '256',
      '--batch-size',
      '2',
      '--optimizer',
      'adamw8bit',
    ]);
    process.exitCode = undefined;
    tooBig = await main([
      'plan',
      '--model',
      'llama2-7b',
      '--seq-len',
      '4096',
      '--batch-size',
      '64',
      '--no-grad-checkpointing',
    ]);
  } finally {
    console.log = log;
  }
  const code = process.exitCode;
  process.exitCode = undefined;
  assert.equal(ok, 0, lines.join('\n'));
  // The command sets exit status 2; main() reports it (or leaves it in process.exitCode).
  assert.equal(tooBig === 0 ? code : tooBig, 2);
  const text = lines.join('\n');
  for (const what of [
    'base weights',
    'adapters',
    'gradients',
    'optimizer states',
    'activations',
    'workspace',
    'predicted peak',
    'predicted speed',
  ]) {
    assert.match(text, new RegExp(what));
  }
  assert.match(text, /plan for tinyllama: batch 2 × seq 256/);
  assert.match(text, /adamw8bit/);
  assert.match(text, /warning: predicted peak .* exceeds/);
});
