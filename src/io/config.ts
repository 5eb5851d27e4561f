/**
 * The one normalized model configuration (`LlamaConfig`, alias `ModelConfig`) for every supported
 * decoder family, parsed from a Hugging Face config.json (zod-validated), GGUF metadata, or a
 * llama2.c header. The family (models/registry.ts) is chosen by model_type / class name / GGUF
 * architecture; its descriptor supplies the defaults of transformers' configuration_<family>.py
 * (docs/formats.md §4.3) where a field is absent, and its own rules for biases and windows.
 */
import { fs, path } from './host.js';
import { z } from 'zod';
import { longropeAttentionFactor, type RopeScaling } from '../backends/rope-tables.js';
import { FileFormatError } from './binary-reader.js';
import { GgufMetadataView, type GgufFile } from './gguf.js';
import type { Llama2cHeader } from './llama2c.js';
import {
  familyForGguf,
  familyForHf,
  familyNames,
  familyOf,
  ggufArchitectures,
  hfModelTypes,
} from '../models/registry.js';

export type { RopeScaling } from '../backends/rope-tables.js';

/** A model family's name (models/registry.ts: llama, mistral, qwen2, qwen3, …). */
export type Architecture = string;
/** Every family's name. */
export const ARCHITECTURES: readonly Architecture[] = familyNames();

/**
 * The normalized configuration of every supported decoder, whatever file it came from. What a
 * family does with it (extra norms, biases, rope layout in GGUF) is the family's descriptor.
 */
export interface LlamaConfig {
  /** The family (models/registry.ts). */
  readonly architecture: Architecture;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling | null;
  /**
   * Rotated dimensions of each head when fewer than headDim (partial rotary: Phi-4-mini's
   * partial_rotary_factor 0.75 rotates 96 of 128; the rest pass through), or null/absent: all.
   */
  readonly rotaryDim?: number | null;
  readonly maxPositionEmbeddings: number;
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2 always; Llama when attention_bias). */
  readonly attentionBias: boolean;
  /** o_proj carries a bias (Llama attention_bias only; never Qwen2). */
  readonly attentionOutputBias: boolean;
  /** gate/up/down projections carry a bias (Llama mlp_bias). */
  readonly mlpBias: boolean;
  readonly bosTokenId: number | null;
  /** First end-of-sequence id (configs may list several). */
  readonly eosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  /**
   * Sliding-window attention span (Mistral; Qwen2 with use_sliding_window), or null for full
   * attention. A query sees its own key and the window - 1 before it (docs/attention.md § 2).
   */
  readonly slidingWindow: number | null;
  /**
   * Which layers use the window (one entry per layer: Qwen2's layers from max_window_layers on, or
   * HF `layer_types`), or null when every layer does. Only meaningful with a slidingWindow.
   */
  readonly slidingLayers: readonly boolean[] | null;
  /** Attention logit soft-cap (Gemma 2 attn_logit_softcapping), or null/absent. */
  readonly attnLogitSoftcap?: number | null;
  /** Final logit soft-cap (Gemma 2 final_logit_softcapping), or null/absent. */
  readonly finalLogitSoftcap?: number | null;
  /** Queries scaled by queryPreAttnScalar^-1/2 instead of head_dim^-1/2 (Gemma), or null/absent. */
  readonly queryPreAttnScalar?: number | null;
  /** Rope base of the sliding layers, unscaled (Gemma 3's rope_local_base_freq), or null/absent. */
  readonly ropeLocalTheta?: number | null;
}

/** The same type under the name that says what it is now: every family's config. */
export type ModelConfig = LlamaConfig;

const positiveInt = z.number().int().positive();
/** Bound on config.json's layer_types before num_hidden_layers is checked (MAX_CONFIG_SIZES.numLayers). */
const MAX_LAYER_TYPES = 1024;
const tokenIds = z
  .union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())])
  .nullish();

const ropeParams = z.object({
  rope_type: z.string().optional(),
  type: z.string().optional(),
  rope_theta: z.number().positive().optional(),
  factor: z.number().positive().optional(),
  low_freq_factor: z.number().positive().optional(),
  high_freq_factor: z.number().positive().optional(),
  original_max_position_embeddings: positiveInt.optional(),
  // LongRoPE (Phi-3): per-frequency factors, bounded like head_dim / 2.
  short_factor: z
    .array(z.number())
    .max(1 << 15)
    .optional(),
  long_factor: z
    .array(z.number())
    .max(1 << 15)
    .optional(),
  attention_factor: z.number().positive().optional(),
  partial_rotary_factor: z.number().positive().max(1).optional(),
});

/** transformers v5 writes Gemma 3's rope per layer type. */
const ropeParameters = ropeParams.extend({
  sliding_attention: ropeParams.optional(),
  full_attention: ropeParams.optional(),
});
const positiveNumber = z.number().positive();

const hfConfigSchema = z.object({
  model_type: z.string().optional(),
  architectures: z.array(z.string()).nullish(),
  vocab_size: positiveInt.optional(),
  hidden_size: positiveInt.optional(),
  intermediate_size: positiveInt.optional(),
  num_hidden_layers: positiveInt.optional(),
  num_attention_heads: positiveInt.optional(),
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  hidden_act: z.string().optional(),
  max_position_embeddings: positiveInt.optional(),
  original_max_position_embeddings: positiveInt.optional(),
  partial_rotary_factor: z.number().positive().max(1).optional(),
  rms_norm_eps: z.number().positive().optional(),
  rope_theta: z.number().positive().optional(),
  rope_scaling: ropeParams.nullish(),
  rope_parameters: ropeParameters.nullish(),
  tie_word_embeddings: z.boolean().optional(),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
  bos_token_id: tokenIds,
  eos_token_id: tokenIds,
  sliding_window: positiveInt.nullish(),
  use_sliding_window: z.boolean().optional(),
  max_window_layers: z.number().int().nonnegative().optional(),
  layer_types: z.array(z.string()).max(MAX_LAYER_TYPES).optional(),
  hidden_activation: z.string().optional(),
  query_pre_attn_scalar: positiveNumber.nullish(),
  attn_logit_softcapping: positiveNumber.nullish(),
  final_logit_softcapping: positiveNumber.nullish(),
  sliding_window_pattern: positiveInt.optional(),
  rope_local_base_freq: positiveNumber.optional(),
});

/** The activation each family's MLP computes, as config.json names it. */
const HF_ACTIVATIONS = { silu: ['silu'], gelu_tanh: ['gelu_pytorch_tanh'] } as const;

function idList(v: number | number[] | null | undefined, fallback: number | null): number[] {
  if (v === undefined) return fallback === null ? [] : [fallback];
  if (v === null) return [];
  return Array.isArray(v) ? v : [v];
}

/** What LongRoPE's parameters depend on outside the rope object. */
interface RopeContext {
  readonly maxPositionEmbeddings: number;
  /** Top-level original_max_position_embeddings (Phi-3 writes it there). */
  readonly originalMax: number | undefined;
  readonly rotaryDim: number;
}

/** HF rope settings (`rope_scaling` or v5 `rope_parameters`) → normalized scaling, or null. */
function parseRopeScaling(
  p: z.infer<typeof ropeParams> | null | undefined,
  fail: (m: string) => never,
  ctx: RopeContext,
): RopeScaling | null {
  if (!p) return null;
  const kind = p.rope_type ?? p.type ?? 'default';
  switch (kind) {
    case 'longrope':
    case 'su': {
      // transformers' _compute_longrope_parameters (Phi3Config reads "su" as "longrope").
      const short = p.short_factor;
      const long = p.long_factor;
      if (!short || !long) fail(`rope scaling "${kind}" needs short_factor and long_factor`);
      for (const [name, v] of [
        ['short_factor', short!],
        ['long_factor', long!],
      ] as const) {
        if (v.length !== ctx.rotaryDim / 2)
          fail(
            `rope scaling ${name} has ${v.length} values, expected ${ctx.rotaryDim / 2} (rotary dims / 2)`,
          );
        const bad = v.findIndex((x) => !(Number.isFinite(x) && x > 0));
        if (bad >= 0) fail(`rope scaling ${name}[${bad}] = ${v[bad]} must be a positive number`);
      }
      const original =
        p.original_max_position_embeddings ?? ctx.originalMax ?? ctx.maxPositionEmbeddings;
      const factor = p.factor ?? ctx.maxPositionEmbeddings / original;
      return {
        ropeType: 'longrope',
        factor,
        shortFactor: short!,
        longFactor: long!,
        originalMaxPositionEmbeddings: original,
        attentionFactor: p.attention_factor ?? longropeAttentionFactor(factor, original),
      };
    }
    case 'default':
      return null;
    case 'linear':
      if (p.factor === undefined) fail('rope scaling "linear" needs a factor');
      return { ropeType: 'linear', factor: p.factor };
    case 'llama3':
      if (
        p.factor === undefined ||
        p.low_freq_factor === undefined ||
        p.high_freq_factor === undefined ||
        p.original_max_position_embeddings === undefined
      ) {
        fail(
          'rope scaling "llama3" needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings',
        );
      }
      return {
        ropeType: 'llama3',
        factor: p.factor,
        lowFreqFactor: p.low_freq_factor,
        highFreqFactor: p.high_freq_factor,
        originalMaxPositionEmbeddings: p.original_max_position_embeddings,
      };
    default:
      return fail(
        `unsupported rope scaling type '${kind}' (supported: default, linear, llama3, longrope/su)`,
      );
  }
}

/**
 * Upper bounds far beyond any real model (the largest public ones have ~130 layers, hidden 16k,
 * vocabularies of ~260k and contexts of ~10M). A size past these is corruption or an attack, and
 * is refused before anything is sized from it.
 */
export const MAX_CONFIG_SIZES = {
  vocabSize: 1 << 24,
  hiddenSize: 1 << 20,
  intermediateSize: 1 << 22,
  numLayers: 1 << 14,
  numHeads: 1 << 14,
  numKvHeads: 1 << 14,
  headDim: 1 << 16,
  maxPositionEmbeddings: 1 << 30,
} as const;

/** Names of the sizes in config.json, for messages. */
const HF_FIELD: Record<keyof typeof MAX_CONFIG_SIZES, string> = {
  vocabSize: 'vocab_size',
  hiddenSize: 'hidden_size',
  intermediateSize: 'intermediate_size',
  numLayers: 'num_hidden_layers',
  numHeads: 'num_attention_heads',
  numKvHeads: 'num_key_value_heads',
  headDim: 'head_dim',
  maxPositionEmbeddings: 'max_position_embeddings',
};

/** Checks the cross-field rules every config must satisfy. */
function validate(
  c: LlamaConfig,
  fail: (m: string) => never,
  fieldNames: Partial<Record<keyof typeof MAX_CONFIG_SIZES, string>> = HF_FIELD,
): LlamaConfig {
  for (const [key, max] of Object.entries(MAX_CONFIG_SIZES) as [
    keyof typeof MAX_CONFIG_SIZES,
    number,
  ][]) {
    const v = c[key];
    const name = fieldNames[key] ?? HF_FIELD[key];
    if (!Number.isSafeInteger(v) || v <= 0 || v > max)
      fail(`${name} = ${v} is not a plausible size (expected an integer in 1..${max})`);
  }
  if (!(Number.isFinite(c.rmsNormEps) && c.rmsNormEps > 0 && c.rmsNormEps < 1))
    fail(`rms_norm_eps ${c.rmsNormEps} is not a small positive number`);
  if (!(Number.isFinite(c.ropeTheta) && c.ropeTheta > 1))
    fail(`rope theta ${c.ropeTheta} must be a finite number > 1`);
  if (c.ropeScaling && !(Number.isFinite(c.ropeScaling.factor) && c.ropeScaling.factor > 0))
    fail(`rope scaling factor ${c.ropeScaling.factor} must be positive`);
  if (c.numHeads % c.numKvHeads !== 0)
    fail(
      `num_attention_heads ${c.numHeads} is not a multiple of num_key_value_heads ${c.numKvHeads}`,
    );
  if (c.headDim % 2 !== 0) fail(`head_dim ${c.headDim} is odd (RoPE rotates pairs)`);
  if (
    c.rotaryDim != null &&
    !(
      Number.isInteger(c.rotaryDim) &&
      c.rotaryDim >= 2 &&
      c.rotaryDim <= c.headDim &&
      c.rotaryDim % 2 === 0
    )
  )
    fail(`rotary dims ${c.rotaryDim} must be an even number in 2..head_dim (${c.headDim})`);
  for (const [name, v] of [
    ['attn_logit_softcapping', c.attnLogitSoftcap],
    ['final_logit_softcapping', c.finalLogitSoftcap],
    ['query_pre_attn_scalar', c.queryPreAttnScalar],
    ['rope_local_base_freq', c.ropeLocalTheta],
  ] as const) {
    if (v != null && !(Number.isFinite(v) && v > 0)) fail(`${name} ${v} must be a positive number`);
  }
  if (c.slidingLayers !== null && c.slidingLayers.length !== c.numLayers)
    fail(`layer_types lists ${c.slidingLayers.length} layers, expected ${c.numLayers}`);
  for (const id of [c.bosTokenId, ...c.eosTokenIds]) {
    if (id !== null && id >= c.vocabSize)
      fail(`special token id ${id} is outside the vocabulary (${c.vocabSize})`);
  }
  return c;
}

/** Parses a Hugging Face config.json object. `label` names the source in errors. */
export function configFromHf(json: unknown, label = 'config.json'): LlamaConfig {
  const fail = (m: string): never => {
    throw new FileFormatError(label, m);
  };
  const parsed = hfConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return fail(
      `invalid field '${issue.path.join('.')}': ${issue.message.replace(/, received undefined$/, ', but the field is missing')}`,
    );
  }
  const h = parsed.data;
  const family = familyForHf(h.model_type, h.architectures ?? []);
  if (!family) {
    if (h.model_type !== undefined)
      fail(`unsupported model_type '${h.model_type}' (supported: ${hfModelTypes().join(', ')})`);
    fail(
      `unknown architecture (no model_type; architectures ${JSON.stringify(h.architectures ?? [])})`,
    );
  }
  const f = family!;
  // Gemma names it hidden_activation (hidden_act is a legacy alias there).
  const act = h.hidden_activation ?? h.hidden_act;
  const acts: readonly string[] = HF_ACTIVATIONS[f.activation];
  if (act !== undefined && !acts.includes(act))
    fail(
      `${h.hidden_activation !== undefined ? 'hidden_activation' : 'hidden_act'} '${act}' is not supported by ${f.name} here (only ${acts.join(', ')})`,
    );
  const d = f.hf.defaults;
  const hiddenSize = h.hidden_size ?? d.hiddenSize;
  const numHeads = h.num_attention_heads ?? d.numHeads;
  const headDim = h.head_dim ?? d.headDim;
  if (headDim == null && hiddenSize % numHeads !== 0)
    fail(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  // v5 per-layer-type rope (Gemma 3): the global layers' entry is the model's rope.
  const ropeMain = h.rope_parameters?.full_attention ?? h.rope_parameters;
  const rope = ropeMain ?? h.rope_scaling;
  const eosTokenIds = idList(h.eos_token_id, d.eosTokenId);
  const bos = idList(h.bos_token_id, d.bosTokenId);
  const numLayers = h.num_hidden_layers ?? d.numLayers;
  const maxPositionEmbeddings = h.max_position_embeddings ?? d.maxPositionEmbeddings;
  const fullHeadDim = headDim ?? hiddenSize / numHeads;
  // transformers: int(head_dim · partial_rotary_factor) dims rotate (top level, or v5 rope_parameters).
  const partial = h.partial_rotary_factor ?? ropeMain?.partial_rotary_factor ?? 1;
  const rotaryDim = Math.floor(fullHeadDim * partial);
  // Biases and the sliding window are the family's rules (e.g. Qwen2 always has q/k/v biases
  // and slides only when use_sliding_window is set; Mistral whenever sliding_window is).
  const flags = f.hf.flags(h);
  return validate(
    {
      architecture: f.name,
      vocabSize: h.vocab_size ?? d.vocabSize,
      hiddenSize,
      intermediateSize: h.intermediate_size ?? d.intermediateSize,
      numLayers,
      numHeads,
      numKvHeads: h.num_key_value_heads ?? d.numKvHeads ?? numHeads,
      headDim: fullHeadDim,
      rmsNormEps: h.rms_norm_eps ?? d.rmsNormEps,
      ropeTheta: ropeMain?.rope_theta ?? h.rope_theta ?? d.ropeTheta,
      ropeScaling: parseRopeScaling(rope, fail, {
        maxPositionEmbeddings,
        originalMax: h.original_max_position_embeddings,
        rotaryDim,
      }),
      ...(rotaryDim !== fullHeadDim ? { rotaryDim } : {}),
      maxPositionEmbeddings,
      tieWordEmbeddings: h.tie_word_embeddings ?? d.tieWordEmbeddings,
      ...flags,
      bosTokenId: bos[0] ?? null,
      eosTokenId: eosTokenIds[0] ?? null,
      eosTokenIds,
      slidingLayers:
        flags.slidingWindow === null
          ? null
          : (flags.slidingLayers ?? hfSlidingLayers(h, f.name, numLayers, fail)),
    },
    fail,
  );
}

/** transformers' Qwen2Config default for max_window_layers. */
const QWEN2_MAX_WINDOW_LAYERS = 28;

/**
 * Which layers of a sliding-window config slide, as transformers decides: `layer_types` when
 * config.json lists it; else Qwen2's and Qwen3's layers i ≥ max_window_layers (default 28); else every layer
 * (Mistral), returned as null.
 */
function hfSlidingLayers(
  h: z.infer<typeof hfConfigSchema>,
  a: Architecture,
  numLayers: number,
  fail: (m: string) => never,
): boolean[] | null {
  if (h.layer_types !== undefined) {
    return h.layer_types.map((t, i) => {
      if (t !== 'sliding_attention' && t !== 'full_attention')
        fail(`layer_types[${i}] is '${t}' (supported: sliding_attention, full_attention)`);
      return t === 'sliding_attention';
    });
  }
  if (a !== 'qwen2' && a !== 'qwen3') return null;
  const first = h.max_window_layers ?? QWEN2_MAX_WINDOW_LAYERS;
  if (first > numLayers) fail(`max_window_layers ${first} exceeds num_hidden_layers ${numLayers}`);
  return Array.from({ length: numLayers }, (_, i) => i >= first);
}

/** Reads and parses a config.json file. */
export function loadHfConfig(filePath: string): LlamaConfig {
  const label = path.basename(filePath);
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(filePath, 'utf8'));
  } catch (e) {
    throw new FileFormatError(label, `cannot read JSON: ${(e as Error).message}`);
  }
  return configFromHf(json, label);
}

/** The shortest decimal that rounds to the same float32 (GGUF stores 1e-5 as 9.99999974e-6). */
export function shortestF32(x: number): number {
  const f = Math.fround(x);
  for (let p = 1; p <= 9; p++) {
    const v = Number(f.toPrecision(p));
    if (Math.fround(v) === f) return v;
  }
  return f;
}

/**
 * Config from GGUF metadata (`<arch>.*` keys, docs/formats.md §5.4). The vocabulary size falls back
 * to the token list; tied embeddings are decided by the caller from the tensor list
 * (`output.weight` absent ⇒ tied), and Llama-3 `rope_freqs.weight` likewise (see checkpoint.ts).
 */
export function configFromGguf(
  gguf: GgufFile,
  extra: { tieWordEmbeddings: boolean; embeddingRows?: number },
  label = path.basename(gguf.path),
): LlamaConfig {
  const m = new GgufMetadataView(gguf, label);
  const fail = (msg: string): never => {
    throw new FileFormatError(label, msg);
  };
  const arch = m.string('general.architecture');
  const family = familyForGguf(arch);
  if (!family) {
    fail(
      `unsupported general.architecture '${arch}' (supported: ${ggufArchitectures().join(', ')})`,
    );
  }
  const k = (suffix: string): string => `${arch}.${suffix}`;
  const hiddenSize = m.number(k('embedding_length'));
  const numHeads = m.number(k('attention.head_count'));
  const numKvHeads = m.number(k('attention.head_count_kv'), numHeads);
  const ropeDims = m.optionalNumber(k('rope.dimension_count'));
  // llama.cpp: head dim = key_length, else hidden / heads; rope.dimension_count is the rotated
  // part (partial rotary when smaller, Phi-4-mini).
  const keyLength = m.optionalNumber(k('attention.key_length'));
  const headDim =
    keyLength ??
    (hiddenSize % numHeads === 0 ? hiddenSize / numHeads : (ropeDims ?? hiddenSize / numHeads));
  const rotaryDim = ropeDims !== undefined && ropeDims < headDim ? ropeDims : null;
  const tokens = m.stringArray('tokenizer.ggml.tokens');
  const vocabSize =
    m.optionalNumber(k('vocab_size')) ??
    extra.embeddingRows ??
    tokens?.length ??
    fail(`no ${k('vocab_size')}, token list or embedding to size the vocabulary`);
  let ropeScaling: RopeScaling | null = null;
  const scalingType = m.optionalString(k('rope.scaling.type'));
  if (scalingType === 'linear')
    ropeScaling = { ropeType: 'linear', factor: m.number(k('rope.scaling.factor')) };
  else if (scalingType !== undefined && scalingType !== 'none')
    fail(`unsupported ${k('rope.scaling.type')} '${scalingType}'`);
  const intOrNull = (key: string): number | null => {
    const v = m.optionalNumber(key);
    // llama.cpp writes 0xFFFFFFFF (-1 as u32) for "no such token".
    return v === undefined || v === 0xffffffff || v < 0 ? null : v;
  };
  const eos = intOrNull('tokenizer.ggml.eos_token_id');
  const numLayers = m.number(k('block_count'));
  const ggufFlags = family!.gguf.flags({ optionalNumber: (key) => m.optionalNumber(k(key)) });
  const intermediateSize = m.number(k('feed_forward_length'));
  const maxPositionEmbeddings = m.number(k('context_length'));
  const sizes = {
    [k('embedding_length')]: hiddenSize,
    [k('attention.head_count')]: numHeads,
    [k('attention.head_count_kv')]: numKvHeads,
    [k('block_count')]: numLayers,
    [k('feed_forward_length')]: intermediateSize,
    [k('context_length')]: maxPositionEmbeddings,
    'head dim': headDim,
    vocab: vocabSize,
  };
  for (const [key, v] of Object.entries(sizes)) {
    if (!Number.isSafeInteger(v) || v <= 0) fail(`${key} = ${v} must be a positive integer`);
  }
  return validate(
    {
      architecture: family!.name,
      vocabSize,
      hiddenSize,
      intermediateSize,
      numLayers,
      numHeads,
      numKvHeads,
      headDim,
      rmsNormEps: shortestF32(m.number(k('attention.layer_norm_rms_epsilon'))),
      ropeTheta: shortestF32(m.number(k('rope.freq_base'), 10000)),
      ropeScaling,
      ...(rotaryDim !== null ? { rotaryDim } : {}),
      maxPositionEmbeddings,
      tieWordEmbeddings: extra.tieWordEmbeddings,
      ...ggufFlags,
      bosTokenId: intOrNull('tokenizer.ggml.bos_token_id'),
      eosTokenId: eos,
      eosTokenIds: eos === null ? [] : [eos],
      slidingLayers: ggufFlags.slidingWindow === null ? null : (ggufFlags.slidingLayers ?? null),
    },
    fail,
    {
      vocabSize: `${k('vocab_size')} (vocabulary size)`,
      hiddenSize: `metadata '${k('embedding_length')}'`,
      intermediateSize: `metadata '${k('feed_forward_length')}'`,
      numLayers: `metadata '${k('block_count')}'`,
      numHeads: `metadata '${k('attention.head_count')}'`,
      numKvHeads: `metadata '${k('attention.head_count_kv')}'`,
      headDim: 'head dim',
      maxPositionEmbeddings: `metadata '${k('context_length')}'`,
    },
  );
}

/** Config implied by a llama2.c header: run.c's constants (eps 1e-5, θ 10000, BOS 1, EOS 2). */
export function configFromLlama2c(h: Llama2cHeader, label = 'llama2.c checkpoint'): LlamaConfig {
  return validate(
    {
      architecture: 'llama',
      vocabSize: h.vocabSize,
      hiddenSize: h.dim,
      intermediateSize: h.hiddenDim,
      numLayers: h.nLayers,
      numHeads: h.nHeads,
      numKvHeads: h.nKvHeads,
      headDim: h.dim / h.nHeads,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: h.seqLen,
      tieWordEmbeddings: h.sharedClassifier,
      attentionBias: false,
      attentionOutputBias: false,
      mlpBias: false,
      bosTokenId: 1,
      eosTokenId: 2,
      eosTokenIds: [2],
      slidingWindow: null,
      slidingLayers: null,
    },
    (m) => {
      throw new FileFormatError(label, m);
    },
    {
      vocabSize: 'header vocab_size',
      hiddenSize: 'header dim',
      intermediateSize: 'header hidden_dim',
      numLayers: 'header n_layers',
      numHeads: 'header n_heads',
      numKvHeads: 'header n_kv_heads',
      headDim: 'head size',
      maxPositionEmbeddings: 'header seq_len',
    },
  );
}

/** The config as a transformers config.json object (for exporting merged models). */
export function configToHf(c: LlamaConfig): Record<string, unknown> {
  const family = familyOf(c);
  const s = c.ropeScaling;
  const rope =
    s === null
      ? null
      : s.ropeType === 'linear'
        ? { rope_type: 'linear', factor: s.factor }
        : s.ropeType === 'longrope'
          ? {
              rope_type: 'longrope',
              short_factor: [...s.shortFactor],
              long_factor: [...s.longFactor],
              original_max_position_embeddings: s.originalMaxPositionEmbeddings,
              ...(s.factor !== c.maxPositionEmbeddings / s.originalMaxPositionEmbeddings
                ? { factor: s.factor }
                : {}),
              ...(s.attentionFactor !==
              longropeAttentionFactor(s.factor, s.originalMaxPositionEmbeddings)
                ? { attention_factor: s.attentionFactor }
                : {}),
            }
          : {
              rope_type: 'llama3',
              factor: s.factor,
              low_freq_factor: s.lowFreqFactor,
              high_freq_factor: s.highFreqFactor,
              original_max_position_embeddings: s.originalMaxPositionEmbeddings,
            };
  const out: Record<string, unknown> = {
    architectures: [family.hf.classes[0]],
    model_type: family.hf.modelTypes[0],
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    hidden_act: 'silu',
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: rope,
    ...(c.rotaryDim != null && c.rotaryDim !== c.headDim
      ? { partial_rotary_factor: c.rotaryDim / c.headDim }
      : {}),
    ...(s?.ropeType === 'longrope'
      ? { original_max_position_embeddings: s.originalMaxPositionEmbeddings }
      : {}),
    tie_word_embeddings: c.tieWordEmbeddings,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenIds.length > 1 ? [...c.eosTokenIds] : c.eosTokenId,
    ...family.hf.toHf(c),
  };
  if ((c.architecture === 'qwen2' || c.architecture === 'qwen3') && c.slidingWindow !== null) {
    // Qwen2Config's and Qwen3Config's rule (layers from max_window_layers on) when the layers fit it; layer_types
    // always, which transformers prefers when present.
    const sliding = c.slidingLayers ?? new Array<boolean>(c.numLayers).fill(true);
    const first = sliding.indexOf(true);
    out.max_window_layers = first < 0 ? c.numLayers : first;
  }
  if (c.slidingWindow !== null && c.slidingLayers !== null)
    out.layer_types = c.slidingLayers.map((s) => (s ? 'sliding_attention' : 'full_attention'));
  return out;
}
