/**
 * How far the memory plan is from a real run: for each shape, a child process builds the model on
 * the cpu backend (random weights, NF4 + double quant, LoRA r=16 on all linear layers, AdamW), runs
 * what `qlora train` runs — two optimizer steps (Trainer.computeGradients + update) and an
 * evaluation, on arenas created at the plan's arenaBytes — and reports its peak RSS, the addon
 * allocator's high-water mark and the arenas' capacities. The table compares them with the plan.
 *
 *   node --import tsx bench/plan-error.ts                      # all shapes, checkpointing off and on
 *   node --import tsx bench/plan-error.ts --only 260k,15m
 *   node --import tsx bench/plan-error.ts --planner OTHER/src/train/plan.ts   # another planner (e.g. an older checkout)
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { buildLlama, type LoraConfig } from '../src/models/build.js';
import { syntheticBatch, syntheticSource } from '../src/models/synthetic.js';
import { releaseBuildGarbage } from '../src/train/build-garbage.js';
import type { PlanOptions } from '../src/train/plan.js';
import { resolvePlanModel } from '../src/train/plan-shapes.js';
import { Trainer } from '../src/train/trainer.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

const SHAPES: Record<string, { model: string; label: string }> = {
  '260k': {
    model: path.join(ROOT, 'fixtures', 'stories260K', 'stories260K.bin'),
    label: 'stories260K',
  },
  '15m': { model: 'stories15m', label: 'stories15M' },
  '110m': { model: 'stories110m', label: 'stories110M' },
};

const BATCH = 4;
const SEQ = 256;
const LORA: LoraConfig = {
  r: 16,
  alpha: 32,
  dropout: 0,
  useRslora: false,
  init: 'kaiming',
  seed: 1,
  targets: 'all-linear',
  layers: null,
};

function planOptions(gradientCheckpointing: boolean): PlanOptions {
  return {
    seqLen: SEQ,
    batchSize: BATCH,
    rank: LORA.r,
    targets: 'all-linear',
    gradientCheckpointing,
    optimizer: 'adamw',
    lossChunkRows: 256,
    quantization: { blocksize: 64, doubleQuant: true },
    loraDropout: 0,
    presizedArenas: true,
  };
}

interface Measured {
  peakRssBytes: number;
  nativePeakBytes: number;
  arenas: { step: number; layer: number };
}

/** The child: one real run of `shape` with the Trainer's arenas at `arenaBytes`. */
async function child(
  shape: string,
  ckpt: boolean,
  arenaBytes: { step: number; layer: number },
): Promise<Measured> {
  const { config } = resolvePlanModel(SHAPES[shape]!.model);
  const be = await getBackend('cpu');
  const o = planOptions(ckpt);
  const model = await buildLlama(config, syntheticSource(config, 1234), {
    backend: be,
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora: LORA,
    maxPositions: o.seqLen,
  });
  await releaseBuildGarbage(be);
  // Batches as the Batcher packs them (segment ids included).
  const batch = {
    ...syntheticBatch(BATCH, SEQ, config.vocabSize, 1),
    segmentIds: new Int32Array(BATCH * SEQ),
  };
  const trainer = new Trainer(
    model,
    {
      outputDir: '',
      maxSteps: 2,
      lr: 1e-4,
      schedule: 'constant',
      warmupSteps: 0,
      gradAccum: 1,
      maxGradNorm: 1,
      weightDecay: 0,
      optimizer: 'adamw',
      seed: 1,
      gradientCheckpointing: ckpt,
      lossChunkRows: o.lossChunkRows,
      evalEvery: 0,
      saveEvery: 0,
      keepCheckpoints: 1,
      earlyStoppingPatience: 0,
      onNonFinite: 'stop',
      resume: false,
      baseModel: null,
      arenaBytes,
    },
    { next: () => batch, cursor: () => 0, restore: () => {} },
    () => [batch],
  );
  const optimizer = trainer.createOptimizer();
  for (let step = 0; step < 2; step++) {
    const g = await trainer.computeGradients(step);
    trainer.update(optimizer, g.gradNorm, 1e-4);
  }
  await trainer.evaluate();
  const a = trainer.arenaStats();
  return {
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    nativePeakBytes: be.memoryStats().peakBytes,
    arenas: { step: a.step.capacity, layer: a.layer.capacity },
  };
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
const pct = (predicted: number, measured: number) =>
  `${(((predicted - measured) / measured) * 100).toFixed(1)}%`;

async function main(argv: string[]): Promise<void> {
  const arg = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? (argv[i + 1] ?? null) : null;
  };
  const childSpec = arg('--child');
  if (childSpec) {
    const { shape, ckpt, arenaBytes } = JSON.parse(childSpec) as {
      shape: string;
      ckpt: boolean;
      arenaBytes: { step: number; layer: number };
    };
    process.stdout.write(`RESULT ${JSON.stringify(await child(shape, ckpt, arenaBytes))}\n`);
    return;
  }
  const plannerPath = arg('--planner');
  const planner = (await import(
    plannerPath ? pathToFileURL(path.resolve(plannerPath)).href : '../src/train/plan.js'
  )) as {
    planTraining: (m: unknown, o: PlanOptions) => unknown;
  };
  const only = arg('--only')?.split(',') ?? Object.keys(SHAPES);
  const rows: string[][] = [];
  for (const shape of only) {
    if (!SHAPES[shape])
      throw new Error(`--only: unknown shape ${shape} (${Object.keys(SHAPES).join(', ')})`);
    for (const ckpt of [false, true]) {
      const { config } = resolvePlanModel(SHAPES[shape]!.model);
      const plan = (await planner.planTraining(config, planOptions(ckpt))) as {
        peakBytes: number;
        backendPeakBytes?: number;
        memory: { runtime: number };
        arenaBytes: { step: number; layer: number };
      };
      // Older planners have no backendPeakBytes: their peak less the runtime and kernel scratch.
      const backend =
        plan.backendPeakBytes ??
        plan.peakBytes - plan.memory.runtime - os.cpus().length * 2 * 2 ** 20;
      const r = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          fileURLToPath(import.meta.url),
          '--child',
          JSON.stringify({ shape, ckpt, arenaBytes: plan.arenaBytes }),
        ],
        { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
      if (!line) throw new Error(`${shape}: child exited with ${r.status ?? r.signal}`);
      const m = JSON.parse(line.slice('RESULT '.length)) as Measured;
      rows.push([
        SHAPES[shape]!.label,
        `${BATCH}×${SEQ}`,
        ckpt ? 'on' : 'off',
        mib(m.peakRssBytes),
        mib(plan.peakBytes),
        pct(plan.peakBytes, m.peakRssBytes),
        mib(m.nativePeakBytes),
        mib(backend),
        `${pct(backend, m.nativePeakBytes)} (${backend - m.nativePeakBytes >= 0 ? '+' : ''}${backend - m.nativePeakBytes} B)`,
        `${mib(m.arenas.step)} / ${mib(plan.arenaBytes.step)}`,
      ]);
      console.error(`  ${rows.at(-1)!.join('  ')}`);
    }
  }
  const head = [
    'shape',
    'batch',
    'ckpt',
    'peak RSS',
    'plan peak',
    'error',
    'addon peak',
    'plan (backend)',
    'error',
    'step arena reached / planned',
  ];
  console.log(`| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

await main(process.argv.slice(2));
