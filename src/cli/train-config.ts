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
import { trainSettingsShape } from '../train/settings.js';
import { closest } from './options.js';

const packageRoot = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The embedded demo: the bundled stories260K model and tiny-shakespeare excerpt. */
export const DEMO = {
  model: path.join(packageRoot, 'fixtures', 'stories260K', 'stories260K.bin'),
  data: path.join(packageRoot, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt'),
  output: 'qlora-demo-output',
} as const;

/**
 * `qlora train`'s settings: the library's (src/train/settings.ts: every default is defined there)
 * plus the model, the data, the output folder and the CLI's before/after samples.
 */
export const trainConfigSchema = z
  .object({
    model: z.string().min(1),
    data: z.string().min(1),
    output: z.string().min(1),
    split: z.string().min(1).optional(),
    ggufFile: z.string().min(1).optional(),
    ...trainSettingsShape,
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
