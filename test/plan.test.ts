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
  defaultMachine,
  namedShape,
  parameterCounts,
  planArenas,
  planTraining,
} from '../src/train/plan.js';
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

test('NF4 + double quant costs 4 + 8/64 + 32/(64·256) bits per projection weight', () => {
  const plan = planTraining(namedShape('llama2-7b')!, {
    quantization: { blocksize: 64, doubleQuant: true },
  });
  assert.ok(
    Math.abs(plan.projectionBitsPerParam - (4 + 8 / 64 + 32 / (64 * 256))) < 1e-6,
    String(plan.projectionBitsPerParam),
  );
  const single = planTraining(namedShape('llama2-7b')!, {
    quantization: { blocksize: 64, doubleQuant: false },
  });
  assert.ok(Math.abs(single.projectionBitsPerParam - (4 + 32 / 64)) < 1e-6);
  // f32 embedding and lm_head (2 × 32000 × 4096) dominate the rest of the 7B base.
  const f32Bits = (2 * 32000 * 4096 * 32) / 6_738_415_616;
  assert.ok(plan.baseBitsPerParam > f32Bits && plan.baseBitsPerParam < f32Bits + 4.2);
});

function batchFor(batchSize: number, seqLen: number, vocab: number, seed: number): ModelBatch {
  const r = rng(seed);
  const n = batchSize * seqLen;
  const inputIds = new Int32Array(n);
  const labels = new Int32Array(n);
  const positions = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    inputIds[i] = Math.floor(r() * vocab);
    labels[i] = Math.floor(r() * vocab);
    positions[i] = i % seqLen;
  }
  return { batchSize, seqLen, inputIds, labels, positions, segmentIds: null };
}

test('the planned arenas match the capacities a real training step reaches (GQA, dropout, checkpointing on and off)', async () => {
  const be = await getBackend('cpu');
  const config = configFromHf({
    model_type: 'llama',
    hidden_size: 64,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 176,
    vocab_size: 1000,
    max_position_embeddings: 256,
  });
  for (const gradientCheckpointing of [false, true]) {
    const lora = {
      r: 4,
      alpha: 8,
      dropout: 0.1,
      useRslora: false,
      init: 'kaiming' as const,
      seed: 3,
      targets: ['q_proj', 'v_proj', 'down_proj'] as const,
      layers: null,
    };
    const model = await buildLlama(config, syntheticSource(config, 7), {
      backend: be,
      quantization: null,
      lora: { ...lora, targets: [...lora.targets] },
    });
    const arena = be.createArena(1 << 20, 'step');
    const layerArena = be.createArena(1 << 20, 'layer');
    const opts = {
      training: true,
      stepSeed: 1,
      gradientCheckpointing,
      lossChunkRows: 200,
      gradScale: 1,
    };
    // Two training steps, then an evaluation forward on the same arenas (as the Trainer does).
    for (const backward of [true, true, false]) {
      for (const p of model.parameters()) p.zeroGrad();
      arena.reset();
      await model.lossAndGradients(
        batchFor(3, 128, config.vocabSize, 1),
        arena,
        layerArena,
        opts,
        backward,
      );
      arena.reset();
    }
    const planned = planArenas(config, {
      batchSize: 3,
      seqLen: 128,
      rank: 4,
      targets: [...lora.targets],
      gradientCheckpointing,
      lossChunkRows: 200,
      loraDropout: 0.1,
    });
    assert.ok(
      arena.capacity > 1 << 20,
      'the step must outgrow the first chunk for the check to mean something',
    );
    assert.equal(
      planned.step.capacity,
      arena.capacity,
      `step arena (checkpointing ${gradientCheckpointing})`,
    );
    assert.equal(
      planned.layer.capacity,
      layerArena.capacity,
      `layer arena (checkpointing ${gradientCheckpointing})`,
    );
    arena.dispose();
    layerArena.dispose();
    model.dispose();
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
    trainTokensPerSecond: number;
  };
  const error = (result.predictedPeakBytes - result.peakRssBytes) / result.peakRssBytes;
  assert.ok(
    Math.abs(error) <= 0.1,
    `predicted ${result.predictedPeakBytes} vs measured ${result.peakRssBytes} (${(error * 100).toFixed(1)}%)`,
  );
  assert.ok(result.trainTokensPerSecond > 0);
});

test('a run that would not fit is flagged with a warning', () => {
  const seven = namedShape('llama2-7b')!;
  const small = planTraining(
    seven,
    { batchSize: 1, seqLen: 512, gradientCheckpointing: true },
    defaultMachine({ totalMemoryBytes: 4 * 2 ** 30 }),
  );
  assert.equal(small.fits, false);
  assert.match(small.warnings.join('\n'), /exceeds this machine's 4\.00 GiB/);
  const big = planTraining(
    seven,
    { batchSize: 1, seqLen: 512, gradientCheckpointing: true },
    defaultMachine({ totalMemoryBytes: 64 * 2 ** 30 }),
  );
  assert.equal(big.fits, true);
  assert.equal(big.warnings.length, 0);
  // Checkpointing keeps one layer's activations instead of all of them.
  const noCkpt = planTraining(seven, { batchSize: 1, seqLen: 512, gradientCheckpointing: false });
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
