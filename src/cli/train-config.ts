/**
 * `qlora train` settings: defaults ← --config run.yaml ← command-line flags, validated with zod so a
 * bad value in either place is one clear message naming the setting.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { z } from 'zod';
import { parseHubId } from '../hub/repo-id.js';
import { COMPUTE_DTYPE_CHOICES } from '../backends/index.js';
import { closest } from './options.js';

const packageRoot = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The embedded demo: the bundled stories260K model and tiny-shakespeare excerpt. */
export const DEMO = {
  model: path.join(packageRoot, 'fixtures', 'stories260K', 'stories260K.bin'),
  data: path.join(packageRoot, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt'),
  output: 'qlora-demo-output',
} as const;

/** Tokens per sequence unless told otherwise: train, plan and data inspect share it. */
export const DEFAULT_SEQ_LEN = 512;

export const trainConfigSchema = z
  .object({
    model: z.string().min(1),
    data: z.string().min(1),
    output: z.string().min(1),
    tokenizer: z.string().optional(),
    split: z.string().min(1).optional(),
    ggufFile: z.string().min(1).optional(),
    maxSteps: z.number().int().positive().optional(),
    epochs: z.number().positive().optional(),
    lr: z.number().positive().default(2e-4),
    schedule: z.enum(['constant', 'linear', 'cosine']).default('cosine'),
    warmupSteps: z.number().int().min(0).optional(),
    warmupRatio: z.number().min(0).max(1).default(0.03),
    rank: z.number().int().positive().default(16),
    alpha: z.number().positive().default(32),
    dropout: z.number().min(0).lt(1).default(0.05),
    targets: z.union([z.literal('all-linear'), z.array(z.string()).min(1)]).default('all-linear'),
    layers: z.array(z.number().int().min(0)).optional(),
    rslora: z.boolean().default(false),
    init: z.enum(['kaiming', 'gaussian']).default('kaiming'),
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
    seed: z.number().int().min(0).default(42),
    quant: z.enum(['nf4', 'fp4', 'none']).default('nf4'),
    blocksize: z.number().int().default(64),
    doubleQuant: z.boolean().default(true),
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
    samplePrompt: z.string().optional(),
    sampleTokens: z.number().int().min(0).default(64),
  })
  .strict();

export type TrainConfig = z.infer<typeof trainConfigSchema>;

/** Settings of the embedded demo (`qlora train` with no model and no data). */
export const DEMO_SETTINGS: Partial<TrainConfig> = {
  model: DEMO.model,
  data: DEMO.data,
  output: DEMO.output,
  seqLen: 128,
  batchSize: 8,
  maxSteps: 120,
  lr: 3e-3,
  rank: 8,
  alpha: 16,
  dropout: 0,
  evalEvery: 20,
  saveEvery: 0,
  warmupRatio: 0.05,
  validFraction: 0.1,
  samplePrompt: 'ROMEO:',
  sampleTokens: 48,
  // The demo's folder is the demo's own: running it again replaces the last demo run.
  overwrite: true,
};

/** kebab-case or snake_case keys (as people write YAML) → the camelCase the schema uses. */
function camel(key: string): string {
  return key.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Names other tools give these settings (Hugging Face Trainer / TRL / PEFT), accepted in the YAML. */
const YAML_ALIASES: Readonly<Record<string, string>> = {
  learningRate: 'lr',
  numEpochs: 'epochs',
  numTrainEpochs: 'epochs',
  loraR: 'rank',
  loraAlpha: 'alpha',
  loraDropout: 'dropout',
  maxSeqLen: 'seqLen',
  maxSeqLength: 'seqLen',
  perDeviceTrainBatchSize: 'batchSize',
  gradientAccumulationSteps: 'gradAccum',
  targetModules: 'targets',
};

/** The config file's settings (camelCase keys) and, per setting, the key as the file wrote it. */
export function readConfigFile(file: string): {
  values: Record<string, unknown>;
  keys: Map<string, string>;
} {
  let parsed: unknown;
  try {
    parsed = YAML.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return { values: {}, keys: new Map() };
  if (typeof parsed !== 'object' || Array.isArray(parsed))
    throw new Error(`${file}: expected a mapping of settings`);
  const out: Record<string, unknown> = {};
  const keys = new Map<string, string>();
  for (const [k, v] of Object.entries(parsed)) {
    const c = camel(k);
    const key = YAML_ALIASES[c] ?? c;
    if (keys.has(key))
      throw new Error(`${file}: '${k}' and '${keys.get(key)}' are the same setting; give one`);
    out[key] = v;
    keys.set(key, k);
  }
  // Paths in the file are relative to the file; a Hub id (org/name) with no such path stays an id.
  for (const key of ['model', 'data', 'output', 'tokenizer']) {
    if (typeof out[key] !== 'string' || path.isAbsolute(out[key] as string)) continue;
    const beside = path.resolve(path.dirname(file), out[key] as string);
    const hubKind = key === 'model' ? 'model' : key === 'data' ? 'dataset' : null;
    if (hubKind && !fs.existsSync(beside) && parseHubId(out[key] as string, hubKind)) continue;
    out[key] = beside;
  }
  // chat_template is a file (relative to the YAML file) or a built-in name.
  if (typeof out.chatTemplate === 'string' && !path.isAbsolute(out.chatTemplate)) {
    const beside = path.resolve(path.dirname(file), out.chatTemplate);
    if (fs.existsSync(beside)) out.chatTemplate = beside;
  }
  return { values: out, keys };
}

/** A setting's name as the user wrote it: the YAML key, else the flag. */
function nameOf(key: string, fileKeys: ReadonlyMap<string, string>): string {
  return fileKeys.get(key) ?? `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Validates merged settings; the first problem becomes one line naming the setting as the user wrote it. */
export function resolveTrainConfig(
  values: Record<string, unknown>,
  source: string,
  fileKeys: ReadonlyMap<string, string> = new Map(),
): TrainConfig {
  const r = trainConfigSchema.safeParse(values);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    if (issue.code === 'unrecognized_keys') {
      const known = Object.keys(trainConfigSchema.shape);
      const described = issue.keys.map((k) => {
        const written = fileKeys.get(k) ?? k;
        const close = closest(camel(written), [...known, ...Object.keys(YAML_ALIASES)]);
        const snake = close?.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
        return `'${written}'${snake ? ` (did you mean '${snake}'?)` : ''}`;
      });
      throw new Error(`${source}: unknown setting ${described.join(', ')}`);
    }
    const key =
      issue.path.length > 0
        ? [nameOf(String(issue.path[0]), fileKeys), ...issue.path.slice(1)].join('.')
        : 'config';
    throw new Error(`${source}: ${key}: ${issue.message}`);
  }
  if (r.data.maxSteps !== undefined && r.data.epochs !== undefined) {
    throw new Error(
      `${source}: give either ${nameOf('maxSteps', fileKeys)} or ${nameOf('epochs', fileKeys)}, not both`,
    );
  }
  return r.data;
}
