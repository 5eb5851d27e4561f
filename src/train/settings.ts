/**
 * The settings of a training run and their defaults, defined once: the library's `train()` fills
 * what its caller leaves out from here, and `qlora train` / `qlora plan` build their flags, their
 * --config keys and their validation on the same schema (src/cli/train-config.ts), so the CLI and
 * the library cannot drift apart.
 */
import { z } from 'zod';
import { COMPUTE_DTYPE_CHOICES } from '../backends/index.js';
import { LORA_DEFAULTS, type LoraConfig } from '../models/build.js';
import { QLORA_DEFAULTS } from '../quant/quantize4bit.js';
import type { ProjectionName } from '../models/llama.js';
import type { PlanOptions } from './plan.js';
import { warmupSteps } from './schedule.js';
import type { TrainOptions } from './trainer.js';

/** Tokens per sequence unless told otherwise: train, plan and data inspect share it. */
export const DEFAULT_SEQ_LEN = 512;

/** Rows of logits alive at once in the loss. */
export const LOSS_CHUNK_ROWS = 256;

/** Every setting of a run but the model, the data and the output folder, with its default. */
export const trainSettingsShape = {
  tokenizer: z.string().optional(),
  maxSteps: z.number().int().positive().optional(),
  epochs: z.number().positive().optional(),
  lr: z.number().positive().default(2e-4),
  schedule: z.enum(['constant', 'linear', 'cosine']).default('cosine'),
  warmupSteps: z.number().int().min(0).optional(),
  warmupRatio: z.number().min(0).max(1).default(0.03),
  rank: z.number().int().positive().default(LORA_DEFAULTS.r),
  alpha: z.number().positive().default(LORA_DEFAULTS.alpha),
  dropout: z.number().min(0).lt(1).default(LORA_DEFAULTS.dropout),
  targets: z
    .union([z.literal('all-linear'), z.array(z.string()).min(1)])
    .default(LORA_DEFAULTS.targets === 'all-linear' ? 'all-linear' : [...LORA_DEFAULTS.targets]),
  layers: z.array(z.number().int().min(0)).optional(),
  rslora: z.boolean().default(LORA_DEFAULTS.useRslora),
  init: z.enum(['kaiming', 'gaussian']).default(LORA_DEFAULTS.init),
  batchSize: z.number().int().positive().default(4),
  gradAccum: z.number().int().positive().default(1),
  seqLen: z.number().int().min(8).default(DEFAULT_SEQ_LEN),
  packing: z.boolean().default(true),
  evalEvery: z.number().int().min(0).default(100),
  evalBatches: z.number().int().positive().default(20),
  saveEvery: z.number().int().min(0).default(100),
  keepCheckpoints: z.number().int().min(1).default(3),
  earlyStopping: z.number().int().min(0).default(0),
  loadBest: z.boolean().default(false),
  resume: z.union([z.boolean(), z.string()]).default(false),
  overwrite: z.boolean().default(false),
  optimizer: z.enum(['adamw', 'adamw8bit']).default('adamw'),
  weightDecay: z.number().min(0).default(0),
  maxGradNorm: z.number().min(0).default(1),
  // One seed for the adapters' initialisation, dropout and the data order.
  seed: z.number().int().min(0).default(LORA_DEFAULTS.seed),
  quant: z.enum(['nf4', 'fp4', 'none', 'keep']).default(QLORA_DEFAULTS.quantType),
  blocksize: z.number().int().default(QLORA_DEFAULTS.blocksize),
  doubleQuant: z.boolean().default(QLORA_DEFAULTS.doubleQuant),
  quantizeHead: z.boolean().default(false),
  quantizeEmbeddings: z.boolean().default(false),
  gradientCheckpointing: z.boolean().default(false),
  skipNonfinite: z.boolean().default(false),
  maxConsecutiveSkips: z.number().int().positive().optional(),
  maxSkippedSteps: z.number().int().positive().optional(),
  format: z.enum(['auto', 'text', 'completion', 'alpaca', 'chat']).default('auto'),
  columns: z.string().optional(),
  template: z.string().optional(),
  chatTemplate: z.string().optional(),
  trainOnPrompt: z.boolean().default(false),
  validFraction: z.number().min(0).lt(1).default(0.05),
  truncation: z.enum(['drop', 'truncate-left', 'truncate-right', 'split']).optional(),
  skipBadRows: z.boolean().default(false),
  maxRowBytes: z
    .number()
    .int()
    .positive()
    .default(1 << 20),
  backend: z.enum(['auto', 'cpu', 'webgpu', 'ref']).default('cpu'),
  computeDtype: z.enum(COMPUTE_DTYPE_CHOICES).default('auto'),
  force: z.boolean().default(false),
} as const;

export const trainSettingsSchema = z.object(trainSettingsShape).strict();

/** A run's settings with every default filled in. */
export type TrainSettings = z.infer<typeof trainSettingsSchema>;

/** The defaults of every setting (what `qlora train` uses for a flag not given). */
export function defaultTrainSettings(): TrainSettings {
  return trainSettingsSchema.parse({});
}

/**
 * Fills in defaults and validates; the first problem is one error naming the setting. maxSteps and
 * epochs exclude each other (neither: one epoch).
 */
export function resolveTrainSettings(
  values: Readonly<Record<string, unknown>>,
  source = 'train()',
): TrainSettings {
  const r = trainSettingsSchema.safeParse(values);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    if (issue.code === 'unrecognized_keys')
      throw new Error(`${source}: unknown setting ${issue.keys.map((k) => `'${k}'`).join(', ')}`);
    throw new Error(`${source}: ${issue.path.join('.') || 'settings'}: ${issue.message}`);
  }
  if (r.data.maxSteps !== undefined && r.data.epochs !== undefined)
    throw new Error(`${source}: give either maxSteps or epochs, not both`);
  return r.data;
}

/** The LoRA adapters those settings describe (targets are checked when the model is built). */
export function loraConfigOf(s: TrainSettings): LoraConfig {
  return {
    r: s.rank,
    alpha: s.alpha,
    dropout: s.dropout,
    useRslora: s.rslora,
    init: s.init,
    seed: s.seed,
    targets: s.targets === 'all-linear' ? 'all-linear' : (s.targets as ProjectionName[]),
    layers: s.layers ?? null,
  };
}

/** What the memory planner needs to know of a training run: train plans its own run with it, and plan with the same settings predicts the same. */
export function planOptionsOf(s: TrainSettings, lossChunkRows = LOSS_CHUNK_ROWS): PlanOptions {
  return {
    seqLen: s.seqLen,
    batchSize: s.batchSize,
    rank: s.rank,
    targets: s.targets === 'all-linear' ? 'all-linear' : (s.targets as ProjectionName[]),
    gradientCheckpointing: s.gradientCheckpointing,
    optimizer: s.optimizer,
    lossChunkRows,
    quantization:
      s.quant === 'none' || s.quant === 'keep'
        ? null
        : { blocksize: s.blocksize, doubleQuant: s.doubleQuant },
    // --quant keep: the caller that knows the file replaces this with its stored types.
    keptGguf: s.quant === 'keep' ? 'q4_k' : null,
    loraDropout: s.dropout,
    gradAccum: s.gradAccum,
    presizedArenas: true,
    quantizeHead: s.quantizeHead,
    quantizeEmbedding: s.quantizeEmbeddings,
  };
}

/** What a run adds to its settings to make the Trainer's options. */
export interface RunFacts {
  readonly outputDir: string;
  readonly maxSteps: number;
  readonly baseModel?: string | null;
  readonly recipe?: TrainOptions['recipe'];
  readonly arenaBytes?: TrainOptions['arenaBytes'];
}

/** The Trainer's options for a run with these settings (train() and `qlora train` use exactly this). */
export function trainerOptionsOf(s: TrainSettings, run: RunFacts): TrainOptions {
  return {
    outputDir: run.outputDir,
    maxSteps: run.maxSteps,
    lr: s.lr,
    schedule: s.schedule,
    warmupSteps: warmupSteps(run.maxSteps, s.warmupSteps, s.warmupRatio),
    gradAccum: s.gradAccum,
    maxGradNorm: s.maxGradNorm,
    weightDecay: s.weightDecay,
    optimizer: s.optimizer,
    seed: s.seed,
    gradientCheckpointing: s.gradientCheckpointing,
    lossChunkRows: LOSS_CHUNK_ROWS,
    evalEvery: s.evalEvery,
    saveEvery: s.saveEvery,
    keepCheckpoints: s.keepCheckpoints,
    earlyStoppingPatience: s.earlyStopping,
    onNonFinite: s.skipNonfinite ? 'skip' : 'stop',
    maxConsecutiveSkips: s.maxConsecutiveSkips,
    maxSkippedSteps: s.maxSkippedSteps,
    resume: s.resume,
    overwrite: s.overwrite,
    loadBest: s.loadBest,
    baseModel: run.baseModel ?? null,
    recipe: run.recipe ?? null,
    arenaBytes: run.arenaBytes,
  };
}

/**
 * The Trainer's options with `qlora train`'s defaults for everything not given (warm-up: the
 * default ratio of maxSteps), for driving a Trainer directly: `new Trainer(model,
 * defaultTrainOptions({ outputDir: 'out', maxSteps: 100 }), batcher.source(), evalBatches)`.
 */
export function defaultTrainOptions(
  o: Pick<TrainOptions, 'outputDir' | 'maxSteps'> & Partial<TrainOptions>,
): TrainOptions {
  return { ...trainerOptionsOf(defaultTrainSettings(), o), ...o };
}
