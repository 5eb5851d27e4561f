/**
 * The training planner: predicts the peak resident memory of a QLoRA run and its throughput from
 * the model shape and the training options, before any weight is loaded. Memory is measured by
 * running the real training step on a backend that counts bytes (plan-memory.ts); speed by timing
 * that step's kernels on the run's backend (plan-speed.ts); named shapes and parameter counts live in
 * plan-shapes.ts, the printed report in plan-report.ts.
 */
import type { GgmlQuantType } from '../quant/ggml-blocks.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { ProjectionName } from '../models/llama.js';
import { measureTrainingMemory, type MemoryBreakdown } from './plan-memory.js';
import { formatBytes, formatPlan } from './plan-report.js';
import { parameterCounts, type ParameterCounts, type PlanModel } from './plan-shapes.js';
import type { Backend } from '../tensor/backend.js';
import { hostProcess } from '../io/host.js';
import {
  type FlopsPerToken,
  flopsPerToken,
  predictSpeed,
  type RecordedStep,
  type SpeedOptions,
  type SpeedPlan,
} from './plan-speed.js';

export { releaseBuildGarbage } from './build-garbage.js';
export {
  type MemoryBreakdown,
  measureTrainingMemory,
  RUNTIME_BYTES,
  WORKSPACE_PER_THREAD_BYTES,
} from './plan-memory.js';
export { formatBytes, formatPlan } from './plan-report.js';
export {
  NAMED_SHAPES,
  namedShape,
  parameterCounts,
  type ParameterCounts,
  type PlanModel,
  resolvePlanModel,
} from './plan-shapes.js';
export {
  type FlopsPerToken,
  flopsPerToken,
  kernelTimesFor,
  predictSpeed,
  type RecordedStep,
  type SpeedOptions,
  type SpeedPlan,
} from './plan-speed.js';

export interface PlanOptions {
  readonly seqLen: number;
  readonly batchSize: number;
  /** LoRA rank; 0 plans inference-only memory for the base. */
  readonly rank: number;
  readonly targets: readonly ProjectionName[] | 'all-linear';
  readonly gradientCheckpointing: boolean;
  readonly optimizer: 'adamw' | 'adamw8bit';
  /** Rows of logits alive at once in the loss (StepOptions.lossChunkRows). */
  readonly lossChunkRows: number;
  /** 4-bit NF4/FP4 base (with or without double quantization), or a full-precision f32 base. */
  readonly quantization: { readonly blocksize: number; readonly doubleQuant: boolean } | null;
  /** LoRA dropout > 0 keeps a dropped-out copy of every adapted input. */
  readonly loraDropout: number;
  /** Micro-batches per optimizer step (does not change peak memory; shown for tokens/step). */
  readonly gradAccum?: number;
  /** The step arenas are created at plan.arenaBytes (true) or grow from 1 MiB (false). */
  readonly presizedArenas: boolean;
  /** An untied lm_head stored in 4-bit too (BuildOptions.quantizeHead). */
  readonly quantizeHead?: boolean;
  /** The embedding table stored in 4-bit too (BuildOptions.quantizeEmbedding). */
  readonly quantizeEmbedding?: boolean;
  /**
   * A GGUF base kept in its own blocks (`--quant keep`, with `quantization` null): one block type for
   * every projection (a named shape: Q4_K), or each weight's stored type by HF name (null: stored
   * unquantized) as the file says.
   */
  readonly keptGguf?: GgmlQuantType | ((hfName: string) => GgmlQuantType | null) | null;
}

/** What `--quant keep` keeps of a GGUF file: each weight's stored block type (nothing is read but the header). */
export function keptGgufTypes(ggufPath: string): (hfName: string) => GgmlQuantType | null {
  const ck = openCheckpoint(ggufPath);
  try {
    if (!ck.ggmlTypeOf)
      throw new Error(
        `--quant keep trains on a GGUF file's own quantization; ${ggufPath} is not a GGUF file`,
      );
    const types = new Map<string, GgmlQuantType | null>();
    for (const name of ck.tensorNames) types.set(name, ck.ggmlTypeOf(name));
    return (name) => types.get(name) ?? null;
  } finally {
    ck.close();
  }
}

export const PLAN_DEFAULTS: PlanOptions = {
  seqLen: 512,
  batchSize: 1,
  rank: 16,
  targets: 'all-linear',
  gradientCheckpointing: true,
  optimizer: 'adamw',
  lossChunkRows: 256,
  quantization: { blocksize: 64, doubleQuant: true },
  loraDropout: 0,
  presizedArenas: true,
};

export interface TrainingPlan {
  readonly options: PlanOptions;
  readonly params: ParameterCounts;
  readonly memory: MemoryBreakdown;
  readonly peakBytes: number;
  /** Of the peak, what the backend holds (weights, adapters, gradients, states, arenas): no runtime, no kernel scratch. */
  readonly backendPeakBytes: number;
  /** Bits per parameter of the resident base weights: all of them, and the quantized projections alone. */
  readonly baseBitsPerParam: number;
  readonly projectionBitsPerParam: number;
  readonly flopsPerToken: FlopsPerToken;
  /** The step's kernels timed on the run's backend (plan-speed.ts), or why the speed is not known. */
  readonly speed: SpeedPlan | { readonly unmeasured: string };
  readonly fits: boolean;
  /** Bytes each Trainer arena needs at its peak: create them this size (createArena) so they never grow. */
  readonly arenaBytes: { readonly step: number; readonly layer: number };
  /** The RAM the plan is held against. */
  readonly totalMemoryBytes: number;
  readonly warnings: string[];
}

/** Where a plan's speed is measured: the backend the run will use (without one, no speed). */
export interface PlanOn extends SpeedOptions {
  readonly backend?: Backend | null;
  /** The RAM to plan against (default: this machine's). */
  readonly totalMemoryBytes?: number;
  /** Time no kernels, and say this instead of a speed (e.g. planning for another machine). */
  readonly noSpeed?: string;
}

/**
 * Predicts peak memory and speed of QLoRA training of model `m` with options `o`: memory by running
 * the step on the counting backend, speed by timing that step's kernels on `on.backend`.
 */
export async function planTraining(
  m: PlanModel,
  options: Partial<PlanOptions> = {},
  on: PlanOn = {},
): Promise<TrainingPlan> {
  const o: PlanOptions = { ...PLAN_DEFAULTS, ...options };
  for (const [k, v] of [
    ['seqLen', o.seqLen],
    ['batchSize', o.batchSize],
    ['lossChunkRows', o.lossChunkRows],
  ] as const) {
    if (!Number.isInteger(v) || v < 1)
      throw new Error(`plan: ${k} must be a positive integer, got ${v}`);
  }
  if (!Number.isInteger(o.rank) || o.rank < 0)
    throw new Error(`plan: rank must be a non-negative integer, got ${o.rank}`);
  const params = parameterCounts(m, o);
  const measured = await measureTrainingMemory(m, o);
  const { peakBytes } = measured;
  const totalMemoryBytes = on.totalMemoryBytes ?? hostProcess.totalMemoryBytes();
  const fitsMemory = peakBytes <= totalMemoryBytes && !measured.refusal;
  const speed = on.noSpeed
    ? { unmeasured: on.noSpeed }
    : !on.backend
      ? { unmeasured: 'no backend to time the kernels on' }
      : !fitsMemory
        ? { unmeasured: 'the run does not fit, so its kernels were not timed' }
        : await timeStep(m, o, measured, on.backend, on);

  const warnings: string[] = [];
  const fits = fitsMemory;
  if (measured.refusal) warnings.push(`this run cannot start: ${measured.refusal}`);
  if (peakBytes > totalMemoryBytes) {
    warnings.push(
      `predicted peak ${formatBytes(peakBytes)} exceeds this machine's ${formatBytes(totalMemoryBytes)} of RAM: ` +
        `${o.gradientCheckpointing ? '' : 'enable gradient checkpointing, '}lower --batch-size or --seq-len, or use --optimizer adamw8bit`,
    );
  } else if (peakBytes > 0.85 * totalMemoryBytes) {
    warnings.push(
      `predicted peak ${formatBytes(peakBytes)} is within 15% of this machine's ${formatBytes(totalMemoryBytes)} of RAM`,
    );
  }
  if (!o.quantization && !o.keptGguf)
    warnings.push('the base is full precision (f32): 8× the memory of a 4-bit base');
  return {
    options: o,
    params,
    memory: measured.memory,
    peakBytes,
    backendPeakBytes: measured.backendPeakBytes,
    baseBitsPerParam: (8 * measured.payloadBytes.base) / params.base,
    projectionBitsPerParam: (8 * measured.payloadBytes.projections) / params.projections,
    flopsPerToken: flopsPerToken(m, o),
    speed,
    fits,
    arenaBytes: measured.arenaBytes,
    totalMemoryBytes,
    warnings,
  };
}

/**
 * Tokens the speed plan times at once: a larger batch is timed as fewer sequences of the same length
 * (the per-token cost of a sequence does not depend on how many are batched, once the products have
 * a few thousand rows), so a big batch costs no more to plan than this.
 */
const SPEED_TOKENS = 2048;

async function timeStep(
  m: PlanModel,
  o: PlanOptions,
  measured: RecordedStep & { readonly backendPeakBytes: number },
  backend: Backend,
  options: SpeedOptions,
) {
  let step: RecordedStep = measured;
  const batch = Math.max(1, Math.floor(SPEED_TOKENS / o.seqLen));
  if (step.stepTokens > SPEED_TOKENS && batch < o.batchSize) {
    step = await measureTrainingMemory(m, { ...o, batchSize: batch });
  }
  // Timing allocates its own tensors before the run loads anything: half the run's peak at most, so
  // the plan never raises the peak it predicts.
  const timingBytes = Math.min(
    options.timingBytes ?? Infinity,
    Math.max(1, Math.floor(measured.backendPeakBytes / 2)),
  );
  return predictSpeed(m, o, step, backend, { ...options, timingBytes });
}

/**
 * What `qlora train` calls before loading weights: prints the plan and returns it (callers may
 * stop when `fits` is false).
 */
export async function printTrainingPlan(
  m: PlanModel,
  options: Partial<PlanOptions>,
  label: string,
  log: (line: string) => void = console.log,
  on: PlanOn = {},
): Promise<TrainingPlan> {
  const plan = await planTraining(m, options, on);
  for (const line of formatPlan(plan, label)) log(line);
  return plan;
}
