/**
 * QLoRA training on the webgpu backend at real model shapes (random weights generated in-process):
 * NF4 + double-quant base, LoRA r=16 on all linear layers, AdamW — the same step the Trainer runs
 * (zero grads, loss + backward, one read-back of the grad norm, clip, AdamW). Reports train and
 * forward tokens/s, model FLOP/s and peak device memory, with the adapter named.
 *
 *   npm run bench:gpu-train                          # tinyllama and llama2-7b shapes
 *   npm run bench:gpu-train -- --only tinyllama      # some shapes (also: 15m, 110m)
 *   npm run bench:gpu-train -- --steps 5 --compute-dtype f16
 *
 * Results: bench/results/gpu-train-latest.{json,md}. On a software adapter use --only 15m.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WebGpuBackend } from '../src/backends/webgpu/index.js';
import { buildLlama } from '../src/models/build.js';
import { syntheticBatch, syntheticSource } from '../src/models/synthetic.js';
import { AdamW } from '../src/train/optimizer.js';
import { flopsPerToken, namedShape, planTraining } from '../src/train/plan.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');

interface Shape {
  readonly key: string;
  readonly shape: string;
  readonly label: string;
  readonly batchSize: number;
  readonly seqLen: number;
  readonly gradientCheckpointing: boolean;
}

const SHAPES: readonly Shape[] = [
  {
    key: '15m',
    shape: 'stories15m',
    label: 'stories15M',
    batchSize: 4,
    seqLen: 256,
    gradientCheckpointing: false,
  },
  {
    key: '110m',
    shape: 'stories110m',
    label: 'stories110M',
    batchSize: 4,
    seqLen: 256,
    gradientCheckpointing: false,
  },
  {
    key: 'tinyllama',
    shape: 'tinyllama',
    label: 'TinyLlama-1.1B',
    batchSize: 4,
    seqLen: 512,
    gradientCheckpointing: false,
  },
  {
    key: 'llama2-7b',
    shape: 'llama2-7b',
    label: 'Llama-2-7B',
    batchSize: 1,
    seqLen: 512,
    gradientCheckpointing: false,
  },
];

const LORA = {
  r: 16,
  alpha: 32,
  dropout: 0,
  useRslora: false,
  init: 'kaiming' as const,
  seed: 1,
  targets: 'all-linear' as const,
  layers: null,
};
const QUANT = { quantType: 'nf4' as const, blocksize: 64, doubleQuant: true };

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function runShape(be: WebGpuBackend, s: Shape, steps: number) {
  const config = namedShape(s.shape);
  if (!config) throw new Error(`unknown shape ${s.shape}`);
  const t0 = performance.now();
  const model = await buildLlama(config, syntheticSource(config, 1234), {
    backend: be,
    quantization: QUANT,
    lora: LORA,
  });
  await be.sync();
  const buildSeconds = (performance.now() - t0) / 1000;
  const params = model.parameters();
  const optimizer = new AdamW(params);
  const arena = be.createArena(1 << 24, 'step');
  const layerArena = be.createArena(1 << 22, 'layer');
  const normScratch = be.zeros([1]);
  const n = s.batchSize * s.seqLen;
  const stepOptions = {
    gradientCheckpointing: s.gradientCheckpointing,
    lossChunkRows: 512,
    gradScale: 1,
  };
  const times: number[] = [];
  let finalLoss = NaN;
  for (let step = 0; step < steps + 1; step++) {
    const batch = syntheticBatch(s.batchSize, s.seqLen, config.vocabSize, step + 1);
    const start = performance.now();
    for (const p of params) p.zeroGrad();
    arena.reset();
    const r = await model.lossAndGradients(batch, arena, layerArena, {
      training: true,
      stepSeed: step,
      ...stepOptions,
    });
    arena.reset();
    params.forEach((p, i) => be.sumOfSquares(p.grad!, normScratch, i > 0));
    const gradNorm = Math.sqrt((await normScratch.read())[0]!);
    if (gradNorm > 1) for (const p of params) be.scale(p.grad!, 1 / (gradNorm + 1e-6), p.grad!);
    optimizer.step(1e-4);
    await be.sync();
    const ms = performance.now() - start;
    finalLoss = r.lossSum / r.tokens;
    process.stderr.write(
      `  ${s.label} step ${step + 1}${step === 0 ? ' (warm-up: pipelines compile)' : ''}: ${(ms / 1000).toFixed(3)} s, loss ${finalLoss.toFixed(3)}\n`,
    );
    if (step > 0) times.push(ms);
  }
  const evalBatch = syntheticBatch(s.batchSize, s.seqLen, config.vocabSize, 99);
  const forward: number[] = [];
  for (let i = 0; i < 3; i++) {
    arena.reset();
    const start = performance.now();
    await model.lossAndGradients(
      evalBatch,
      arena,
      layerArena,
      { training: false, stepSeed: 0, ...stepOptions },
      false,
    );
    await be.sync();
    forward.push(performance.now() - start);
  }
  const meanMs = times.reduce((a, b) => a + b, 0) / times.length;
  const plan = await planTraining(config, {
    seqLen: s.seqLen,
    batchSize: s.batchSize,
    rank: LORA.r,
    targets: 'all-linear',
    gradientCheckpointing: s.gradientCheckpointing,
    optimizer: 'adamw',
    loraDropout: 0,
  });
  const flops = flopsPerToken(config, plan.options);
  const trainTokensPerSecond = (n * 1000) / meanMs;
  const result = {
    key: s.key,
    label: s.label,
    batchSize: s.batchSize,
    seqLen: s.seqLen,
    steps,
    buildSeconds,
    trainTokensPerSecond,
    forwardTokensPerSecond: (n * 1000) / Math.min(...forward),
    modelTflops: ((flops.forward + flops.backward) * trainTokensPerSecond) / 1e12,
    peakDeviceBytes: be.memoryStats().peakBytes,
    finalLoss,
  };
  normScratch.dispose();
  arena.dispose();
  layerArena.dispose();
  optimizer.dispose();
  model.dispose();
  await be.sync();
  return result;
}

async function main(): Promise<void> {
  const only = arg('--only')?.split(',');
  const steps = Number(arg('--steps') ?? 3);
  const computeDtype = (arg('--compute-dtype') ?? 'f32') as 'f32' | 'f16';
  const { createWebGpuBackend } = await import('../src/backends/webgpu/index.js');
  const be = await createWebGpuBackend({ computeDtype } as Parameters<
    typeof createWebGpuBackend
  >[0]);
  const a = be.adapter;
  const device = `${a.description || a.architecture || a.vendor} (${a.vendor}${a.isFallback ? ', software' : ''})`;
  process.stderr.write(`webgpu adapter: ${device}\n`);
  const rows = [];
  for (const s of SHAPES.filter((x) =>
    only ? only.includes(x.key) : x.key === 'tinyllama' || x.key === 'llama2-7b',
  )) {
    rows.push(await runShape(be, s, steps));
  }
  fs.mkdirSync(RESULTS, { recursive: true });
  const when = new Date().toISOString();
  fs.writeFileSync(
    path.join(RESULTS, 'gpu-train-latest.json'),
    `${JSON.stringify({ device, computeDtype, when, rows }, null, 2)}\n`,
  );
  const lines = [
    `# QLoRA training on webgpu — ${device}`,
    '',
    `${when}; NF4 + double quant base, LoRA r 16 on all linear layers, AdamW, compute ${computeDtype}.`,
    '',
    '| shape | batch × seq | train tok/s | forward tok/s | model TFLOP/s | peak device memory | build s |',
    '|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.label} | ${r.batchSize}×${r.seqLen} | ${r.trainTokensPerSecond.toFixed(1)} | ${r.forwardTokensPerSecond.toFixed(1)} | ${r.modelTflops.toFixed(2)} | ${(r.peakDeviceBytes / 2 ** 30).toFixed(2)} GiB | ${r.buildSeconds.toFixed(1)} |`,
    ),
    '',
  ];
  fs.writeFileSync(path.join(RESULTS, 'gpu-train-latest.md'), lines.join('\n'));
  console.log(lines.join('\n'));
}

await main();
