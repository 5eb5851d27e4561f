/**
 * The training planner: predicts the peak resident memory of a QLoRA run and its throughput from
 * the model shape and the training options, before any weight is loaded. Memory is measured by
 * running the real training step on a backend that counts bytes (plan-memory.ts); speed is FLOP
 * accounting over calibrated rates (plan-speed.ts); named shapes and parameter counts live in
 * plan-shapes.ts, the printed report in plan-report.ts.
 */
import type { ProjectionName } from '../models/llama.js';
import { measureTrainingMemory, type MemoryBreakdown } from './plan-memory.js';
import { formatBytes, formatPlan } from './plan-report.js';
import { parameterCounts, type ParameterCounts, type PlanModel } from './plan-shapes.js';
import {
  defaultMachine,
  type FlopsPerToken,
  type MachineModel,
  predictSpeed,
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
  defaultMachine,
  type FlopsPerToken,
  flopsPerToken,
  type MachineModel,
  predictSpeed,
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
  readonly tokensPerSecond: number;
  /** Model-FLOP utilisation the predicted speed implies (forward + backward, not recompute). */
  readonly mfu: number;
  readonly fits: boolean;
  /** Bytes each Trainer arena needs at its peak: create them this size (createArena) so they never grow. */
  readonly arenaBytes: { readonly step: number; readonly layer: number };
  readonly machine: MachineModel;
  readonly warnings: string[];
}

/** Predicts peak memory and speed of QLoRA training of model `m` with options `o` on `machine`. */
export async function planTraining(
  m: PlanModel,
  options: Partial<PlanOptions> = {},
  machine: MachineModel = defaultMachine(),
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
  const speed = predictSpeed(m, o, machine);

  const warnings: string[] = [];
  const fits = peakBytes <= machine.totalMemoryBytes && !measured.refusal;
  if (measured.refusal) warnings.push(`this run cannot start: ${measured.refusal}`);
  if (peakBytes > machine.totalMemoryBytes) {
    warnings.push(
      `predicted peak ${formatBytes(peakBytes)} exceeds this machine's ${formatBytes(machine.totalMemoryBytes)} of RAM: ` +
        `${o.gradientCheckpointing ? '' : 'enable gradient checkpointing, '}lower --batch-size or --seq-len, or use --optimizer adamw8bit`,
    );
  } else if (peakBytes > 0.85 * machine.totalMemoryBytes) {
    warnings.push(
      `predicted peak ${formatBytes(peakBytes)} is within 15% of this machine's ${formatBytes(machine.totalMemoryBytes)} of RAM`,
    );
  }
  if (!o.quantization)
    warnings.push('the base is full precision (f32): 8× the memory of a 4-bit base');
  return {
    options: o,
    params,
    memory: measured.memory,
    peakBytes,
    backendPeakBytes: measured.backendPeakBytes,
    baseBitsPerParam: (8 * measured.payloadBytes.base) / params.base,
    projectionBitsPerParam: (8 * measured.payloadBytes.projections) / params.projections,
    flopsPerToken: speed.flopsPerToken,
    tokensPerSecond: speed.tokensPerSecond,
    mfu: speed.mfu,
    fits,
    arenaBytes: measured.arenaBytes,
    machine,
    warnings,
  };
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
  machine: MachineModel = defaultMachine(),
): Promise<TrainingPlan> {
  const plan = await planTraining(m, options, machine);
  for (const line of formatPlan(plan, label)) log(line);
  return plan;
}
