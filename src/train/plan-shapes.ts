/**
 * The shapes the planner knows by name (`qlora plan --model llama2-7b`), the shape of a checkpoint
 * on disk, and the parameter counts of a shape.
 */
import { fs, nodeBuiltin, path } from '../io/host.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { configFromHf, type LlamaConfig, loadHfConfig } from '../io/config.js';
import type { BuildConfig } from '../models/build.js';
import { projectionShapes } from '../models/lora-rank.js';
import { PROJECTIONS, type ProjectionName } from '../models/family.js';
import { familyTargets, tensorTable } from '../models/registry.js';

/** The shape facts the planner needs (BuildConfig without rope details; those default). */
export type PlanModel = Pick<
  BuildConfig,
  | 'vocabSize'
  | 'hiddenSize'
  | 'intermediateSize'
  | 'numLayers'
  | 'numHeads'
  | 'numKvHeads'
  | 'headDim'
  | 'tieWordEmbeddings'
  | 'maxPositionEmbeddings'
  | 'attentionBias'
> &
  Partial<
    Pick<
      BuildConfig,
      | 'architecture'
      | 'attentionOutputBias'
      | 'mlpBias'
      | 'rmsNormEps'
      | 'ropeTheta'
      | 'ropeScaling'
      | 'slidingWindow'
    >
  >;

export interface ParameterCounts {
  /** Parameters of the projections (what is quantized). */
  readonly projections: number;
  readonly embedding: number;
  /** 0 when tied to the embedding. */
  readonly lmHead: number;
  readonly norms: number;
  /** Projection biases (Qwen2's q/k/v, attention_bias / mlp_bias). */
  readonly biases: number;
  readonly lora: number;
  /** All base parameters (projections + biases + embedding + lm_head + norms). */
  readonly base: number;
}

/** LoRA targets as a set (none when rank is 0). */
export function targetSet(
  targets: readonly ProjectionName[] | 'all-linear',
  rank: number,
  c: { readonly architecture?: string } = {},
): Set<ProjectionName> {
  if (rank <= 0) return new Set();
  return familyTargets(c, targets);
}

export function parameterCounts(
  m: PlanModel,
  o: { readonly rank: number; readonly targets: readonly ProjectionName[] | 'all-linear' },
): ParameterCounts {
  const shapes = projectionShapes(m);
  const targets = targetSet(o.targets, o.rank, m);
  let projections = 0;
  let lora = 0;
  for (const name of PROJECTIONS) {
    const shape = shapes[name];
    if (!shape) continue; // not a projection of this family
    const [rows, cols] = shape;
    projections += rows * cols;
    if (targets.has(name)) lora += o.rank * (rows + cols);
  }
  projections *= m.numLayers;
  lora *= m.numLayers;
  const embedding = m.vocabSize * m.hiddenSize;
  const lmHead = m.tieWordEmbeddings ? 0 : embedding;
  // Every norm weight and bias of the family's table (per-layer norms, q/k norms, the final norm).
  let norms = 0;
  let biases = 0;
  for (const e of tensorTable(m)) {
    if (e.role.kind === 'norm' || e.role.kind === 'finalNorm') norms += e.shape[0]!;
    else if (e.role.kind === 'bias') biases += e.shape[0]!;
  }
  return {
    projections,
    embedding,
    lmHead,
    norms,
    biases,
    lora,
    base: projections + biases + embedding + lmHead + norms,
  };
}

/** The package's fixtures folder (computed on use: import.meta.url is a file: URL only in Node). */
const fixturesDir = (): string =>
  nodeBuiltin<typeof import('node:url')>('node:url')!.fileURLToPath(
    new URL('../../fixtures/', import.meta.url),
  );

/** A config.json shipped under fixtures/ (model-configs/NAME.json: see its NOTICE.md). */
const fixtureConfig = (file: string) => (): Record<string, unknown> =>
  JSON.parse(fs.readFileSync(path.join(fixturesDir(), file), 'utf8')) as Record<string, unknown>;

/**
 * The real models' config.json files under fixtures/model-configs/, transcribed from their
 * Hugging Face repositories (provenance in its NOTICE.md); each is a name `qlora plan` and
 * `qlora init-random` know.
 */
export const MODEL_CONFIG_NAMES = [
  'qwen3-0.6b',
  'qwen3-1.7b',
  'qwen3-4b',
  'qwen3-8b',
  'smollm2-135m',
  'smollm2-360m',
  'smollm2-1.7b',
  'llama-3.2-1b',
  'llama-3.2-3b',
  'llama-3.1-8b',
  'mistral-7b',
  'qwen2.5-0.5b',
  'qwen2.5-1.5b',
  'qwen2.5-3b',
  'qwen2.5-7b',
  'gemma-2-2b',
  'gemma-3-1b',
  'gemma-3-4b',
  'phi-3-mini',
  'phi-3.5-mini',
  'phi-4-mini',
] as const;

/** HF config.json fields of the shapes the benchmarks and `qlora plan` know by name. */
const NAMED_HF_CONFIGS: Record<string, () => Record<string, unknown>> = {
  // llama2.c TinyStories models (tied classifier, 256 / 1024 context).
  stories15m: () => ({
    model_type: 'llama',
    hidden_size: 288,
    num_hidden_layers: 6,
    num_attention_heads: 6,
    intermediate_size: 768,
    vocab_size: 32000,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  }),
  stories110m: () => ({
    model_type: 'llama',
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 2048,
    vocab_size: 32000,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  }),
  tinyllama: fixtureConfig('tinyllama-config.json'),
  'llama2-7b': () => ({
    model_type: 'llama',
    hidden_size: 4096,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    intermediate_size: 11008,
    vocab_size: 32000,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
  }),
  // Meta-Llama-3-8B config.json (GQA with 8 key/value heads, 128K vocabulary, untied head).
  'llama3-8b': () => ({
    model_type: 'llama',
    hidden_size: 4096,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    intermediate_size: 14336,
    vocab_size: 128256,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    tie_word_embeddings: false,
  }),
  ...Object.fromEntries(
    MODEL_CONFIG_NAMES.map((n) => [n, fixtureConfig(`model-configs/${n}.json`)]),
  ),
};

const ALIASES: Record<string, string> = {
  '15m': 'stories15m',
  '110m': 'stories110m',
  'tinyllama-1.1b': 'tinyllama',
  '1.1b': 'tinyllama',
  '7b': 'llama2-7b',
  'llama-2-7b': 'llama2-7b',
  '8b': 'llama3-8b',
  'llama-3-8b': 'llama3-8b',
  'llama3.2-1b': 'llama-3.2-1b',
  'llama3.2-3b': 'llama-3.2-3b',
  'llama3.1-8b': 'llama-3.1-8b',
  'mistral-7b-v0.1': 'mistral-7b',
  'gemma-3-1b-pt': 'gemma-3-1b',
  'gemma-3-4b-pt': 'gemma-3-4b',
  'phi-3-mini-4k': 'phi-3-mini',
  'phi3-mini': 'phi-3-mini',
  'phi3.5-mini': 'phi-3.5-mini',
  'phi4-mini': 'phi-4-mini',
};

export const NAMED_SHAPES: readonly string[] = Object.keys(NAMED_HF_CONFIGS);

/** The config.json object of a named shape (or an alias), or null. */
export function namedHfConfig(name: string): Record<string, unknown> | null {
  const key = ALIASES[name.toLowerCase()] ?? name.toLowerCase();
  const make = NAMED_HF_CONFIGS[key];
  return make ? make() : null;
}

/** The config of a named shape (NAMED_SHAPES, or an alias), or null. */
export function namedShape(name: string): LlamaConfig | null {
  const key = ALIASES[name.toLowerCase()] ?? name.toLowerCase();
  const make = NAMED_HF_CONFIGS[key];
  return make ? configFromHf(make(), `${key} shape`) : null;
}

/** A named shape or the config of a checkpoint on disk (HF folder/config.json, GGUF, llama2.c .bin). */
export function resolvePlanModel(spec: string): { config: LlamaConfig; label: string } {
  const named = namedShape(spec);
  if (named) return { config: named, label: ALIASES[spec.toLowerCase()] ?? spec.toLowerCase() };
  if (!fs.existsSync(spec)) {
    throw new Error(`${spec}: not a model path nor a known shape (${NAMED_SHAPES.join(', ')})`);
  }
  if (path.basename(spec) === 'config.json') return { config: loadHfConfig(spec), label: spec };
  const ck = openCheckpoint(spec);
  try {
    return { config: ck.config, label: spec };
  } finally {
    ck.close();
  }
}
