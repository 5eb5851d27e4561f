/**
 * QLoRA training benchmark at real model shapes (random weights generated in-process):
 * NF4 + double-quant base, LoRA r=16 on all linear layers, AdamW. For each shape it reports
 * training and forward-only tokens/s, the time split (forward / loss / backward / optimizer /
 * other), peak RSS against the planner's prediction, bits per base parameter and model-FLOP
 * utilisation against the fp32 FMA peak and, where the CPU has AVX512_BF16, the vdpbf16ps peak
 * (both measured on this machine). With bf16 available every shape runs twice, f32 and bf16 compute
 * of the frozen-base 4-bit matmuls, and the report gives the bf16 / f32 speedup.
 *
 *   npm run bench:train                      # all shapes (the 7B one takes many minutes)
 *   npm run bench:train -- --only 15m,110m   # some shapes
 *   npm run bench:train -- --steps 3         # measured training steps per shape
 *   npm run bench:train -- --threads 1       # kernel threads (default: the addon's, one per core)
 *   npm run bench:train -- --compute-dtype f32   # one compute dtype (default: f32 and, where the
 *                                                # CPU has AVX512_BF16, bf16 too, side by side)
 *   npm run bench:train -- --report          # rewrite the files from stored results with the current planner
 *
 * Each shape runs in a fresh child process so its peak RSS is its own. Results go to
 * bench/results/train-latest.json and .md; the table goes to stdout.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { bf16Available, native } from '../src/backends/cpu/native.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import { buildLlama } from '../src/models/build.js';
import { packedWeightBytes } from '../src/quant/upload.js';
import { Tensor } from '../src/tensor/tensor.js';
import { LlamaModel, PROJECTIONS, type StepTimings } from '../src/models/llama.js';
import { syntheticBatch, syntheticSource } from '../src/models/synthetic.js';
import { LoraLinear } from '../src/nn/lora.js';
import { AdamW } from '../src/train/optimizer.js';
import {
  flopsPerToken,
  namedShape,
  planTraining,
  type PlanOptions,
  releaseBuildGarbage,
  type TrainingPlan,
} from '../src/train/plan.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');

interface ShapeRun {
  readonly key: string;
  readonly shape: string;
  readonly label: string;
  readonly batchSize: number;
  readonly seqLen: number;
  readonly gradientCheckpointing: boolean;
  readonly warmupSteps: number;
  readonly steps: number;
  /** PyTorch 1.13 CPU QLoRA tokens/s measured in issue 7 (an earlier 2-core machine), where known. */
  readonly pytorchQlora: number | null;
}

const SHAPES: readonly ShapeRun[] = [
  {
    key: '15m',
    shape: 'stories15m',
    label: 'stories15M',
    batchSize: 4,
    seqLen: 256,
    gradientCheckpointing: false,
    warmupSteps: 1,
    steps: 4,
    pytorchQlora: 820,
  },
  {
    key: '110m',
    shape: 'stories110m',
    label: 'stories110M',
    batchSize: 4,
    seqLen: 256,
    gradientCheckpointing: false,
    warmupSteps: 1,
    steps: 3,
    pytorchQlora: 160,
  },
  {
    key: '1.1b',
    shape: 'tinyllama',
    label: 'TinyLlama-1.1B',
    batchSize: 4,
    seqLen: 256,
    gradientCheckpointing: true,
    warmupSteps: 0,
    steps: 1,
    pytorchQlora: null,
  },
  {
    key: '7b',
    shape: 'llama2-7b',
    label: 'Llama-2-7B',
    batchSize: 1,
    seqLen: 512,
    gradientCheckpointing: true,
    warmupSteps: 0,
    steps: 1,
    pytorchQlora: null,
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
const LOSS_CHUNK_ROWS = 256;

type Dtype = 'f32' | 'bf16';

export interface ShapeResult {
  readonly key: string;
  /** Precision of the frozen-base 4-bit matmuls (absent in results stored before it existed: f32). */
  readonly computeDtype?: Dtype;
  /** MFU against the bf16 (vdpbf16ps) peak, where measured. */
  readonly mfuBf16?: number | null;
  readonly bf16PeakGflops?: number | null;
  readonly label: string;
  readonly batchSize: number;
  readonly seqLen: number;
  readonly gradientCheckpointing: boolean;
  readonly steps: number;
  readonly buildSeconds: number;
  readonly trainTokensPerSecond: number;
  readonly forwardTokensPerSecond: number;
  /** Mean milliseconds per training step, by phase. */
  readonly split: {
    forward: number;
    loss: number;
    backward: number;
    recompute: number;
    optimizer: number;
    other: number;
    total: number;
  };
  readonly peakRssBytes: number;
  readonly predictedPeakBytes: number;
  /** High-water mark of the addon's allocator (tensors and arenas), and the plan's figure for it. */
  readonly nativePeakBytes?: number;
  readonly predictedBackendPeakBytes?: number;
  /** Arena capacities at the end, and what the plan created them at. */
  readonly arenaCapacity?: { readonly step: number; readonly layer: number };
  readonly plannedArenaBytes?: { readonly step: number; readonly layer: number };
  readonly predictedTokensPerSecond: number;
  readonly baseBitsPerParam: number;
  readonly projectionBitsPerParam: number;
  readonly modelGflopsPerToken: number;
  readonly achievedGflops: number;
  readonly mfu: number;
  readonly peakGflops: number;
  readonly pytorchQlora: number | null;
  readonly finalLoss: number;
  /** Kernel threads the shape ran with. */
  readonly threads: number;
  /** 1-minute load average when the shape finished (the machine may be shared: > threads means contention). */
  readonly loadAverage: number;
}

/** The planner's view of a shape's run (the same options the run uses). */
function planOptionsFor(
  run: Pick<ShapeRun, 'seqLen' | 'batchSize' | 'gradientCheckpointing'>,
): Partial<PlanOptions> {
  return {
    seqLen: run.seqLen,
    batchSize: run.batchSize,
    rank: LORA.r,
    targets: 'all-linear',
    gradientCheckpointing: run.gradientCheckpointing,
    optimizer: 'adamw',
    lossChunkRows: LOSS_CHUNK_ROWS,
    quantization: { blocksize: QUANT.blocksize, doubleQuant: QUANT.doubleQuant },
    loraDropout: 0,
    presizedArenas: true,
  };
}

// ---- child: one shape ----------------------------------------------------------------------------

/** Resident bytes of the frozen base (what the model actually holds) and of its projections alone. */
function baseWeightBytes(model: LlamaModel): {
  all: number;
  projections: number;
  params: number;
  projectionParams: number;
} {
  let projections = 0;
  let projectionParams = 0;
  const head = model.lmHead;
  const emb = model.embedding;
  // A 4-bit embedding is the tied head's own weight: count it through the head in that case.
  const embBytes = emb instanceof Tensor ? emb.size * 4 : packedWeightBytes(emb);
  const embParams = emb instanceof Tensor ? emb.size : emb.rows * emb.cols;
  let other = embBytes + model.finalNorm.size * 4 + (model.tiedEmbeddings ? 0 : head.weightBytes);
  let params =
    embParams +
    model.finalNorm.size +
    (model.tiedEmbeddings ? 0 : head.inFeatures * head.outFeatures);
  for (const layer of model.layers) {
    other += (layer.attnNorm.size + layer.ffnNorm.size) * 4;
    params += layer.attnNorm.size + layer.ffnNorm.size;
    for (const name of PROJECTIONS) {
      const p = layer.proj[name];
      if (!p) continue;
      const base = p instanceof LoraLinear ? p.base : p;
      projections += base.weightBytes;
      projectionParams += base.inFeatures * base.outFeatures;
    }
  }
  params += projectionParams;
  return { all: projections + other, projections, params, projectionParams };
}

async function runShape(
  run: ShapeRun,
  peakGflops: number,
  bf16PeakGflops: number | null,
  computeDtype: Dtype,
): Promise<ShapeResult> {
  const config = namedShape(run.shape);
  if (!config) throw new Error(`unknown shape ${run.shape}`);
  const be = ((await getBackend('cpu')) as CpuBackend).withComputeDtype(computeDtype);
  // As `qlora train` does: the plan (its speed timed on this backend) before anything is loaded.
  const plan = await planTraining(config, planOptionsFor(run), { backend: be });
  const t0 = performance.now();
  const model = await buildLlama(config, syntheticSource(config, 1234), {
    backend: be,
    quantization: QUANT,
    lora: LORA,
    onTensor: (name, index, total) => {
      if (index % Math.ceil(total / 8) === 0) {
        process.stderr.write(
          `  ${run.label} building: tensor ${index + 1}/${total} (${name}), rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB\n`,
        );
      }
    },
  });
  const buildSeconds = (performance.now() - t0) / 1000;
  // What `qlora train` does after loading (see releaseBuildGarbage): the dead full-precision copies go.
  await releaseBuildGarbage(model.backend);
  const weights = baseWeightBytes(model);
  const params = model.parameters();
  const optimizer = new AdamW(params);
  // The Trainer's two arenas, created at their planned size so they never grow.
  const arena = be.createArena(plan.arenaBytes.step, 'step');
  const layerArena = be.createArena(plan.arenaBytes.layer, 'layer');
  const normScratch = be.zeros([1]);
  const n = run.batchSize * run.seqLen;

  // Training steps, as Trainer.run does them (zero grads, loss + backward, grad norm + clip, AdamW).
  const split = {
    forward: 0,
    loss: 0,
    backward: 0,
    recompute: 0,
    optimizer: 0,
    other: 0,
    total: 0,
  };
  let finalLoss = NaN;
  for (let step = 0; step < run.warmupSteps + run.steps; step++) {
    const measured = step >= run.warmupSteps;
    const batch = syntheticBatch(run.batchSize, run.seqLen, config.vocabSize, step + 1);
    const timings: StepTimings = { forwardMs: 0, lossMs: 0, backwardMs: 0, recomputeMs: 0 };
    const stepStart = performance.now();
    for (const p of params) p.zeroGrad();
    arena.reset();
    const r = await model.lossAndGradients(batch, arena, layerArena, {
      training: true,
      stepSeed: step,
      gradientCheckpointing: run.gradientCheckpointing,
      lossChunkRows: LOSS_CHUNK_ROWS,
      gradScale: 1,
      timings,
    });
    arena.reset();
    let first = true;
    for (const p of params) {
      be.sumOfSquares(p.grad!, normScratch, !first);
      first = false;
    }
    const gradNorm = Math.sqrt((await normScratch.read())[0]!);
    if (gradNorm > 1) for (const p of params) be.scale(p.grad!, 1 / (gradNorm + 1e-6), p.grad!);
    const optStart = performance.now();
    optimizer.step(1e-4);
    const stepEnd = performance.now();
    finalLoss = r.lossSum / r.tokens;
    const total = stepEnd - stepStart;
    process.stderr.write(
      `  ${run.label} step ${step + 1}${measured ? '' : ' (warm-up)'}: ${(total / 1000).toFixed(2)} s, loss ${finalLoss.toFixed(3)}, ` +
        `rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB\n`,
    );
    if (!measured) continue;
    split.forward += timings.forwardMs;
    split.loss += timings.lossMs;
    split.backward += timings.backwardMs;
    split.recompute += timings.recomputeMs;
    split.optimizer += stepEnd - optStart;
    split.total += total;
  }
  // Forward only (evaluation, as Trainer.evaluate runs it after training steps: no dropout, no gradients).
  const evalBatch = syntheticBatch(run.batchSize, run.seqLen, config.vocabSize, 99);
  const forwardTimes: number[] = [];
  const forwardRuns = run.steps > 1 ? 2 : 1;
  for (let i = 0; i < forwardRuns; i++) {
    arena.reset();
    const s = performance.now();
    await model.lossAndGradients(
      evalBatch,
      arena,
      layerArena,
      {
        training: false,
        stepSeed: 0,
        gradientCheckpointing: false,
        lossChunkRows: LOSS_CHUNK_ROWS,
        gradScale: 1,
      },
      false,
    );
    forwardTimes.push(performance.now() - s);
  }
  arena.reset();

  if (arena.capacity > plan.arenaBytes.step || layerArena.capacity > plan.arenaBytes.layer) {
    process.stderr.write(
      `  warning: arenas grew past the plan (step ${arena.capacity} > ${plan.arenaBytes.step} or layer ${layerArena.capacity} > ${plan.arenaBytes.layer})\n`,
    );
  }
  split.other = split.total - split.forward - split.loss - split.backward - split.optimizer;
  for (const k of Object.keys(split) as (keyof typeof split)[]) split[k] /= run.steps;

  const flops = flopsPerToken(config, plan.options);
  const trainTokensPerSecond = (n * 1000) / split.total;
  const modelFlops = flops.forward + flops.backward;
  const achieved = modelFlops * trainTokensPerSecond;
  return {
    key: run.key,
    label: run.label,
    batchSize: run.batchSize,
    seqLen: run.seqLen,
    gradientCheckpointing: run.gradientCheckpointing,
    steps: run.steps,
    buildSeconds,
    trainTokensPerSecond,
    forwardTokensPerSecond: (n * 1000) / Math.min(...forwardTimes),
    split,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    predictedPeakBytes: plan.peakBytes,
    nativePeakBytes: be.memoryStats().peakBytes,
    predictedBackendPeakBytes: plan.backendPeakBytes,
    arenaCapacity: { step: arena.capacity, layer: layerArena.capacity },
    plannedArenaBytes: plan.arenaBytes,
    predictedTokensPerSecond: plannedSpeed(plan),
    baseBitsPerParam: (8 * weights.all) / weights.params,
    projectionBitsPerParam: (8 * weights.projections) / weights.projectionParams,
    modelGflopsPerToken: modelFlops / 1e9,
    achievedGflops: achieved / 1e9,
    mfu: achieved / (peakGflops * 1e9),
    peakGflops,
    computeDtype,
    mfuBf16: bf16PeakGflops ? achieved / (bf16PeakGflops * 1e9) : null,
    bf16PeakGflops,
    pytorchQlora: run.pytorchQlora,
    finalLoss,
    loadAverage: os.loadavg()[0]!,
    threads: native.getThreads(),
  };
}

// ---- parent: peak, children, report ------------------------------------------------------------------

/**
 * The FMA peak: the larger of the engine bench's figure (bench/results/latest.json) and the kernel
 * thread count × the best single-thread register-only FMA rate measured now. Other processes on a
 * shared machine only ever lower a measurement, and a single thread is the least disturbed, so
 * the larger figure is the better estimate of the machine's peak (and keeps MFU conservative).
 */
function fmaPeakGflops(dtype: Dtype = 'f32'): { gflops: number; source: string } {
  const candidates: { gflops: number; source: string }[] = [];
  const latest = path.join(RESULTS, 'latest.json');
  if (fs.existsSync(latest)) {
    const json = JSON.parse(fs.readFileSync(latest, 'utf8')) as {
      machine?: { cpu?: string };
      bf16PeakGflops?: number | null;
    };
    // Only a figure measured on this CPU model (the engine bench records it) counts.
    const sameCpu = json.machine?.cpu === cpuModelName();
    const found = dtype === 'f32' ? findPeak(json) : (json.bf16PeakGflops ?? null);
    if (found && sameCpu) candidates.push({ gflops: found, source: 'bench/results/latest.json' });
  }
  const bench = native.benchFmaPeak as
    ((iterations: number, dtype?: Dtype) => { flops: number; seconds: number }) | undefined;
  if (typeof bench === 'function') {
    const threads = native.getThreads();
    native.setThreads(1);
    let best = 0;
    for (let i = 0; i < 5; i++) {
      const r = bench(20_000_000, dtype);
      best = Math.max(best, r.flops / r.seconds / 1e9);
    }
    native.setThreads(threads);
    candidates.push({
      gflops: best * threads,
      source: `${threads} × single-thread benchFmaPeak${dtype === 'bf16' ? "(…, 'bf16')" : ''} (${best.toFixed(1)} GFLOP/s)`,
    });
  }
  if (candidates.length === 0)
    throw new Error('no FMA peak: the addon has no benchFmaPeak and no engine bench result');
  return candidates.reduce((a, b) => (b.gflops > a.gflops ? b : a));
}

/** The CPU model as the engine bench records it (/proc/cpuinfo's model name, else os.cpus()). */
function cpuModelName(): string {
  try {
    const line = fs
      .readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) return line.split(':')[1]!.trim();
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

/** The first numeric field whose key mentions the FMA peak, in GFLOP/s. */
function findPeak(json: unknown): number | null {
  if (!json || typeof json !== 'object') return null;
  for (const [k, v] of Object.entries(json as Record<string, unknown>)) {
    if (typeof v === 'number' && /peak/i.test(k) && /fma|flop/i.test(k))
      return /gflop/i.test(k) || v < 1e6 ? v : v / 1e9;
    const inner = findPeak(v);
    if (inner) return inner;
  }
  return null;
}

type StoredResult = ShapeResult & { measuredAt?: string };

/** The plan's tokens/s (NaN when it could not time the kernels: the report shows –). */
function plannedSpeed(plan: TrainingPlan): number {
  return 'unmeasured' in plan.speed ? Number.NaN : plan.speed.tokensPerSecond;
}

function runChild(
  run: ShapeRun,
  steps: number | null,
  peak: number,
  bf16Peak: number | null,
  threads: number | null,
  computeDtype: Dtype,
): ShapeResult {
  const args = [
    '--import',
    'tsx',
    fileURLToPath(import.meta.url),
    '--child',
    run.key,
    '--peak',
    String(peak),
    '--compute-dtype',
    computeDtype,
  ];
  if (bf16Peak !== null) args.push('--bf16-peak', String(bf16Peak));
  if (steps !== null) args.push('--steps', String(steps));
  if (threads !== null) args.push('--threads', String(threads));
  const r = spawnSync(process.execPath, args, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  if (r.status !== 0 || !line)
    throw new Error(`${run.label}: child exited with ${r.status ?? r.signal}\n${r.stdout}`);
  return JSON.parse(line.slice('RESULT '.length)) as ShapeResult;
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

function table(results: readonly ShapeResult[]): string[] {
  const head = [
    'shape',
    'compute',
    'batch',
    'ckpt',
    'train tok/s',
    'plan tok/s',
    'speed err',
    'vs PyTorch QLoRA',
    'fwd tok/s',
    'peak RSS',
    'plan',
    'plan err',
    'bits/param (proj)',
    'fwd / loss / bwd (recompute) / opt / other ms',
    'GFLOP/s',
    'MFU (fp32 peak)',
    'MFU (bf16 peak)',
    'threads',
    'load',
  ];
  const rows = results.map((r) => [
    r.label,
    r.computeDtype ?? 'f32',
    `${r.batchSize}×${r.seqLen}`,
    r.gradientCheckpointing ? 'on' : 'off',
    r.trainTokensPerSecond.toFixed(r.trainTokensPerSecond < 100 ? 1 : 0),
    Number.isFinite(r.predictedTokensPerSecond)
      ? r.predictedTokensPerSecond.toFixed(r.predictedTokensPerSecond < 100 ? 1 : 0)
      : '–',
    // The plan's error against the measured speed (the target is within ±15%: issue 17).
    Number.isFinite(r.predictedTokensPerSecond)
      ? `${(((r.predictedTokensPerSecond - r.trainTokensPerSecond) / r.trainTokensPerSecond) * 100).toFixed(1)}%`
      : '–',
    r.pytorchQlora
      ? `${(r.trainTokensPerSecond / r.pytorchQlora).toFixed(2)}× (${r.pytorchQlora})`
      : '–',
    r.forwardTokensPerSecond.toFixed(r.forwardTokensPerSecond < 10 ? 2 : 0),
    gib(r.peakRssBytes),
    gib(r.predictedPeakBytes),
    `${(((r.predictedPeakBytes - r.peakRssBytes) / r.peakRssBytes) * 100).toFixed(1)}%`,
    `${r.baseBitsPerParam.toFixed(2)} (${r.projectionBitsPerParam.toFixed(2)})`,
    `${r.split.forward.toFixed(0)} / ${r.split.loss.toFixed(0)} / ${r.split.backward.toFixed(0)} (${r.split.recompute.toFixed(0)}) / ` +
      `${r.split.optimizer.toFixed(0)} / ${r.split.other.toFixed(0)}`,
    r.achievedGflops.toFixed(1),
    `${(r.mfu * 100).toFixed(1)}%`,
    r.mfuBf16 ? `${(r.mfuBf16 * 100).toFixed(1)}%` : '–',
    String(r.threads ?? '?'),
    r.loadAverage?.toFixed(1) ?? '?',
  ]);
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...rows.map((c) => `| ${c.join(' | ')} |`),
  ];
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string): string | null => {
    const i = argv.indexOf(name);
    return i >= 0 ? (argv[i + 1] ?? null) : null;
  };
  const steps = arg('--steps') ? Number(arg('--steps')) : null;
  const threads = arg('--threads') ? Number(arg('--threads')) : null;
  if (threads !== null && !(Number.isInteger(threads) && threads >= 1))
    throw new Error(`--threads must be a positive integer`);
  const dtypeArg = arg('--compute-dtype');
  if (dtypeArg !== null && !['f32', 'bf16', 'f32,bf16', 'bf16,f32'].includes(dtypeArg))
    throw new Error(`--compute-dtype must be f32, bf16 or f32,bf16, got '${dtypeArg}'`);
  const child = arg('--child');
  if (child) {
    if (threads !== null) native.setThreads(threads);
    const run = SHAPES.find((s) => s.key === child);
    if (!run) throw new Error(`unknown shape ${child}`);
    const result = await runShape(
      steps ? { ...run, steps } : run,
      Number(arg('--peak')),
      arg('--bf16-peak') ? Number(arg('--bf16-peak')) : null,
      (dtypeArg ?? 'f32') as Dtype,
    );
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
    return;
  }
  if (argv.includes('--report')) {
    const stored = JSON.parse(fs.readFileSync(path.join(RESULTS, 'train-latest.json'), 'utf8')) as {
      peakGflops: number;
      peakSource: string;
      bf16PeakGflops?: number | null;
      bf16PeakSource?: string | null;
      results: StoredResult[];
    };
    const replanned = await Promise.all(
      stored.results.map(async (r) => {
        const config = namedShape(SHAPES.find((s) => s.key === r.key)!.shape)!;
        const cpu = (await getBackend('cpu')) as CpuBackend;
        const plan = await planTraining(config, planOptionsFor(r), {
          backend: cpu.withComputeDtype(r.computeDtype ?? 'f32'),
        });
        return {
          ...r,
          predictedPeakBytes: plan.peakBytes,
          predictedTokensPerSecond: plannedSpeed(plan),
        };
      }),
    );
    writeResults(
      replanned,
      { gflops: stored.peakGflops, source: stored.peakSource },
      [],
      stored.bf16PeakGflops
        ? { gflops: stored.bf16PeakGflops, source: stored.bf16PeakSource ?? '' }
        : null,
    );
    return;
  }
  const only = arg('--only')
    ?.split(',')
    .map((s) => s.trim().toLowerCase());
  const runs = only ? SHAPES.filter((s) => only.includes(s.key) || only.includes(s.shape)) : SHAPES;
  if (runs.length === 0)
    throw new Error(`--only matched no shape (choose from ${SHAPES.map((s) => s.key).join(', ')})`);
  const hasBf16 = bf16Available();
  const dtypes: Dtype[] = dtypeArg
    ? (dtypeArg.split(',') as Dtype[])
    : hasBf16
      ? ['f32', 'bf16']
      : ['f32'];
  if (dtypes.includes('bf16') && !hasBf16)
    throw new Error('--compute-dtype bf16: this CPU or addon build has no AVX512_BF16');
  const peak = fmaPeakGflops();
  const bf16Peak = hasBf16 ? fmaPeakGflops('bf16') : null;
  console.log(
    `FMA peak ${peak.gflops.toFixed(1)} GFLOP/s (${peak.source}); ${bf16Peak ? `bf16 peak ${bf16Peak.gflops.toFixed(1)} GFLOP/s (${bf16Peak.source}); ` : ''}${os.cpus().length} CPUs, ${native.getThreads()} kernel threads; load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  const results: ShapeResult[] = [];
  for (const run of runs) {
    // f32 and bf16 back to back per shape, so both see the same machine state.
    for (const dtype of dtypes) {
      console.log(
        `${run.label} (${dtype}): batch ${run.batchSize}×${run.seqLen}, gradient checkpointing ${run.gradientCheckpointing ? 'on' : 'off'} ...`,
      );
      results.push(runChild(run, steps, peak.gflops, bf16Peak?.gflops ?? null, threads, dtype));
    }
  }
  console.log(table(results).join('\n'));
  for (const line of speedups(results)) console.log(line);
  writeResults(results, peak, results, bf16Peak);
}

/** bf16 / f32 training speed per shape measured in this run (issue 17 target: ≥ 1.5× at 110M). */
function speedups(results: readonly ShapeResult[]): string[] {
  const lines: string[] = [];
  for (const r of results) {
    if (r.computeDtype !== 'bf16') continue;
    const base = results.find(
      (o) => o.key === r.key && o.threads === r.threads && (o.computeDtype ?? 'f32') === 'f32',
    );
    if (!base) continue;
    lines.push(
      `${r.label}: bf16 ${r.trainTokensPerSecond.toFixed(0)} vs f32 ${base.trainTokensPerSecond.toFixed(0)} tok/s = ${(r.trainTokensPerSecond / base.trainTokensPerSecond).toFixed(2)}× (forward ${(r.forwardTokensPerSecond / base.forwardTokensPerSecond).toFixed(2)}×)`,
    );
  }
  return lines;
}

/** Merges `fresh` (measured now) with the stored rows of other shapes/thread counts and writes both files. */
function writeResults(
  all: readonly StoredResult[],
  peak: { gflops: number; source: string },
  fresh: readonly ShapeResult[],
  bf16Peak: { gflops: number; source: string } | null = null,
): void {
  // Shapes run piecewise (--only) keep the other shapes' latest results in the files.
  fs.mkdirSync(RESULTS, { recursive: true });
  const jsonPath = path.join(RESULTS, 'train-latest.json');
  const earlier =
    fresh.length === 0
      ? [...all]
      : fs.existsSync(jsonPath)
        ? ((JSON.parse(fs.readFileSync(jsonPath, 'utf8')) as { results?: StoredResult[] })
            .results ?? [])
        : [];
  const now = new Date().toISOString();
  const same = (a: StoredResult, b: StoredResult) =>
    a.key === b.key &&
    a.threads === b.threads &&
    (a.computeDtype ?? 'f32') === (b.computeDtype ?? 'f32');
  const order = (r: StoredResult) =>
    SHAPES.findIndex((s) => s.key === r.key) * 1000 -
    (r.threads ?? 0) * 2 +
    (r.computeDtype === 'bf16' ? 1 : 0);
  const merged: StoredResult[] = [
    ...earlier.filter((e) => !fresh.some((r) => same(r, e))),
    ...fresh.map((r) => ({ ...r, measuredAt: now })),
  ].sort((a, b) => order(a) - order(b));
  const lines = table(merged);
  if (fresh.length === 0) console.log(lines.join('\n'));
  const meta = {
    date: now,
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? '',
    threads: native.getThreads(),
    simd: native.simdLevel(),
    peakGflops: peak.gflops,
    peakSource: peak.source,
    bf16PeakGflops: bf16Peak?.gflops ?? null,
    bf16PeakSource: bf16Peak?.source ?? null,
    loadAverage: os.loadavg(),
  };
  fs.writeFileSync(jsonPath, `${JSON.stringify({ ...meta, results: merged }, null, 2)}\n`);
  fs.writeFileSync(
    path.join(RESULTS, 'train-latest.md'),
    [
      `# QLoRA training benchmark (${meta.date})`,
      '',
      `NF4 + double quant base, LoRA r=16 on all linear layers, AdamW, loss chunk ${LOSS_CHUNK_ROWS} rows; random weights of real shapes.`,
      `${meta.cpus} CPUs (${meta.cpu}), ${meta.simd}; FMA peak ${peak.gflops.toFixed(1)} GFLOP/s (${peak.source})${bf16Peak ? `; bf16 (vdpbf16ps) peak ${bf16Peak.gflops.toFixed(1)} GFLOP/s (${bf16Peak.source})` : ''}.`,
      'compute: precision of the frozen-base products, the 4-bit projections and the frozen head (bf16: vdpbf16ps with fp32 accumulation; LoRA, norms, attention, softmax/loss and optimizer f32 in both). MFU counts the same model FLOPs against each peak.',
      ...speedups(merged).map((l) => `- ${l}`),
      "Rows may come from separate runs (`--only`, `--threads`); each row's time is in train-latest.json (measuredAt), its load average in the table.",
      "plan tok/s and speed err: `qlora plan`'s prediction (its kernels timed on this machine before the shape is built) and its error against the measured train tok/s. vs PyTorch QLoRA: the PyTorch 1.13 + OpenBLAS CPU QLoRA tokens/s measured in issue 7 on an earlier 2-core machine of this project, not here: a rough scale only.",
      '',
      ...lines,
      '',
    ].join('\n'),
  );
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exitCode = 1;
});
