/**
 * One descriptor per model family (docs/architecture.md § Model families): the tensors a decoder
 * layer holds (HF and GGUF names, shapes, which carry biases), how it computes (norm flavour,
 * activation, attention and rope variants), how its config.json and GGUF metadata spell the
 * family-specific settings, and which module names PEFT targets. Loading (io/checkpoint.ts),
 * building (build.ts), random models (synthetic.ts), the planner, PEFT and GGUF-LoRA naming and
 * the exporters all derive from these tables (through registry.ts); a new family is one file in
 * `families/` listed in registry.ts's FAMILIES (plus any new ops it needs).
 */

/**
 * The linear projections of a decoder layer, by role. A family names each role's HF module
 * (`ProjectionSlot.module`/`peft`) and GGUF tensor; the roles are what the model computes with.
 * `qkv_proj` and `gate_up_proj` are fused projections (Phi-3): one weight whose output rows are
 * q, k, v (gate, up) in that order, one LoRA adapter over the whole output, as HF and PEFT have it.
 */
export const PROJECTIONS = [
  'q_proj',
  'k_proj',
  'v_proj',
  'qkv_proj',
  'o_proj',
  'gate_proj',
  'up_proj',
  'gate_up_proj',
  'down_proj',
] as const;
export type ProjectionName = (typeof PROJECTIONS)[number];

/**
 * The per-layer norm weights a family may hold: before attention and before the MLP (every
 * family), per-head RMSNorm of q and k over head_dim (Qwen3, Gemma 3), and after attention and
 * after the MLP, on the branch before the residual add (Gemma 2 and 3).
 */
export type LayerNormName =
  'attnNorm' | 'ffnNorm' | 'qNorm' | 'kNorm' | 'postAttnNorm' | 'postFfnNorm';

/** The sizes and per-config switches the tables read (a normalized config satisfies it). */
export interface FamilyDims {
  /** The family's name (a key of the registry); 'llama' when absent. */
  readonly architecture?: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2 always; Llama and Qwen3 when attention_bias). */
  readonly attentionBias: boolean;
  /** o_proj carries a bias. */
  readonly attentionOutputBias?: boolean;
  /** gate/up/down carry biases (Llama mlp_bias). */
  readonly mlpBias?: boolean;
}

/** The sizes a projection's shape depends on. */
export type ShapeDims = Pick<
  FamilyDims,
  'hiddenSize' | 'intermediateSize' | 'numHeads' | 'numKvHeads' | 'headDim'
>;

/** A norm weight of each layer. */
export interface LayerNormSlot {
  readonly name: LayerNormName;
  /** HF name after `model.layers.N.`. */
  readonly hf: string;
  /** GGUF name after `blk.N.`. */
  readonly gguf: string;
  readonly size: (c: ShapeDims) => number;
  /** Before the attention block's projections or the MLP's (the order tensors are listed in). */
  readonly group: 'attention' | 'mlp';
}

/** A linear projection of each layer. */
export interface ProjectionSlot {
  readonly name: ProjectionName;
  /** HF parent module: `model.layers.N.<module>.<peft>.weight`. */
  readonly module: string;
  /** The HF module name, which is also the name PEFT's target_modules use. */
  readonly peft: string;
  /** GGUF name after `blk.N.` (without `.weight`). */
  readonly gguf: string;
  /** [out, in] of the weight. */
  readonly shape: (c: ShapeDims) => [number, number];
  readonly bias: (c: FamilyDims) => boolean;
  /**
   * Heads whose rows a NORM-rope GGUF stores interleaved (q and k; docs/formats.md §5.4), else
   * undefined.
   */
  readonly ropeHeads?: (c: FamilyDims) => number;
  /**
   * A fused projection: the roles whose outputs its rows hold, in order (qkv_proj: q, k, v;
   * gate_up_proj: gate, up). A LoRA target naming one of them selects this slot.
   */
  readonly parts?: readonly ProjectionName[];
}

/** Defaults of transformers' configuration_<family>.py for fields config.json may omit. */
export interface HfDefaults {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  /** null: as many as query heads. */
  readonly numKvHeads: number | null;
  /** null: hidden_size / num_attention_heads. */
  readonly headDim: number | null;
  readonly maxPositionEmbeddings: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly tieWordEmbeddings: boolean;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
}

/** The family-specific settings of a normalized config (the rest is common to every family). */
export interface FamilyFlags {
  readonly attentionBias: boolean;
  readonly attentionOutputBias: boolean;
  readonly mlpBias: boolean;
  /** Sliding-window attention span, or null for full attention. */
  readonly slidingWindow: number | null;
  /**
   * Which layers slide, when the family decides it (Gemma's local/global pattern); absent: from
   * config.json's layer_types or Qwen2's max_window_layers (io/config.ts), else every layer.
   */
  readonly slidingLayers?: readonly boolean[] | null;
  /** Attention logit soft-cap (Gemma 2), or null/absent. */
  readonly attnLogitSoftcap?: number | null;
  /** Final logit soft-cap (Gemma 2), or null/absent. */
  readonly finalLogitSoftcap?: number | null;
  /** Queries are scaled by queryPreAttnScalar^-1/2 rather than head_dim^-1/2 (Gemma), or absent. */
  readonly queryPreAttnScalar?: number | null;
  /**
   * Rope base of the sliding layers when they have their own (Gemma 3's rope_local_base_freq;
   * their rope is then unscaled), or null/absent: every layer uses ropeTheta and ropeScaling.
   */
  readonly ropeLocalTheta?: number | null;
}

/** Rope settings of one layer type in transformers v5's per-type `rope_parameters`. */
export interface HfRopeFields {
  readonly rope_theta?: number;
}

/** config.json fields a family's flags read (validated by io/config.ts's schema). */
export interface HfFlagFields {
  readonly attention_bias?: boolean;
  readonly mlp_bias?: boolean;
  readonly sliding_window?: number | null;
  readonly use_sliding_window?: boolean;
  readonly num_hidden_layers?: number;
  readonly head_dim?: number | null;
  readonly layer_types?: readonly string[];
  readonly sliding_window_pattern?: number;
  readonly query_pre_attn_scalar?: number | null;
  readonly attn_logit_softcapping?: number | null;
  readonly final_logit_softcapping?: number | null;
  readonly rope_local_base_freq?: number;
  readonly rope_parameters?: {
    readonly sliding_attention?: HfRopeFields;
    readonly full_attention?: HfRopeFields;
  } | null;
}

/** A view of GGUF metadata for a family's flags (keys without the `<arch>.` prefix). */
export interface GgufFlagView {
  optionalNumber(key: string): number | undefined;
}

export interface ModelFamily {
  /** Registry key, the normalized config's `architecture`, and the CLI's family name. */
  readonly name: string;
  /** One line for messages and docs. */
  readonly description: string;
  /**
   * The named shape (train/plan-shapes.ts, fixtures/model-configs/) that stands for the family
   * where a family name is given instead of a shape (`qlora init-random --config qwen3`).
   */
  readonly defaultShape?: string;
  readonly hf: {
    /** config.json `model_type` values that select this family. */
    readonly modelTypes: readonly string[];
    /** `architectures` class names that select it (the first is written on export). */
    readonly classes: readonly string[];
    readonly defaults: HfDefaults;
    readonly flags: (h: HfFlagFields) => FamilyFlags;
    /** Family-specific config.json fields written on export (the common ones are io/config.ts's). */
    readonly toHf: (c: FamilyFlags) => Record<string, unknown>;
    /**
     * Shrinks the family's own structural fields for a tiny model (io/tiny-config.ts has already
     * sized layers, widths, heads and vocabulary in `hf`; `original` is the full-size config.json):
     * e.g. enough layers for a whole local/global layer pattern, a query scale that keeps its
     * relation to head_dim.
     */
    readonly tinyHf?: (
      hf: Record<string, unknown>,
      layers: number,
      original: Record<string, unknown>,
    ) => Record<string, unknown>;
  };
  readonly gguf: {
    /** `general.architecture` written on export; families may share one (Mistral is written as llama). */
    readonly arch: string;
    /** The `general.architecture` values read as this family (each arch read by one family). */
    readonly reads: readonly string[];
    /**
     * llama.cpp's rope for the arch: NORM rotates interleaved pairs (so HF q/k rows are permuted
     * in the file), NEOX rotates halves as HF does (stored as is).
     */
    readonly rope: 'norm' | 'neox';
    readonly flags: (m: GgufFlagView) => FamilyFlags;
  };
  /**
   * RMSNorm flavour: 'rms' y = x/rms(x)·w; 'rms1p' y = x/rms(x)·(1 + w) (Gemma: checkpoints store
   * w, llama.cpp's GGUF files store w + 1; the model keeps 1 + w, models/build.ts).
   */
  readonly norm: 'rms' | 'rms1p';
  /** MLP activation: SwiGLU (silu(gate)·up) or GeGLU with tanh GELU (gelu_tanh(gate)·up, Gemma). */
  readonly activation: 'silu' | 'gelu_tanh';
  /**
   * The embedding output is multiplied by sqrt(hidden_size), rounded to the model dtype as
   * transformers does (Gemma's normalizer); absent: unscaled.
   */
  readonly embeddingScale?: 'sqrt-hidden';
  readonly attention: {
    /** Per-head RMSNorm of q and k over head_dim before RoPE (layer norms qNorm and kNorm). */
    readonly qkNorm: boolean;
  };
  /** HF rotary embedding on rotate_half pairs, with the config's rope scaling. */
  readonly rope: 'rotate-half';
  readonly layerNorms: readonly LayerNormSlot[];
  readonly projections: readonly ProjectionSlot[];
}

/** What a tensor is to the model. */
export type TensorRole =
  | { readonly kind: 'embedding' }
  | { readonly kind: 'finalNorm' }
  | { readonly kind: 'lmHead' }
  | { readonly kind: 'norm'; readonly layer: number; readonly norm: LayerNormName }
  | { readonly kind: 'weight'; readonly layer: number; readonly proj: ProjectionName }
  | { readonly kind: 'bias'; readonly layer: number; readonly proj: ProjectionName };

export interface TensorEntry {
  /** HF name (the canonical name every source is presented under). */
  readonly hf: string;
  readonly gguf: string;
  /** Row-major shape in HF layout ([out, in] for linear weights). */
  readonly shape: number[];
  readonly role: TensorRole;
}

/** HF name of a layer projection's weight or bias. */
export function projectionKey(slot: ProjectionSlot, layer: number): string {
  return `model.layers.${layer}.${slot.module}.${slot.peft}`;
}

/** The projection slot of a role in a family. */
export function projectionSlot(f: ModelFamily, name: ProjectionName): ProjectionSlot {
  const s = f.projections.find((p) => p.name === name);
  if (!s) throw new Error(`family '${f.name}' has no ${name}`);
  return s;
}

/**
 * HF name → GGUF name for a family, for every tensor a model of the family can hold (also those a
 * given config omits, e.g. a bias), without building a whole table.
 */
export function ggufNameIn(f: ModelFamily, hf: string): string {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (m) {
    const rest = m[2]!;
    const norm = f.layerNorms.find((n) => n.hf === rest);
    if (norm) return `blk.${m[1]}.${norm.gguf}`;
    for (const p of f.projections) {
      const base = `${p.module}.${p.peft}.`;
      if (rest === `${base}weight` || rest === `${base}bias`)
        return `blk.${m[1]}.${p.gguf}.${rest.slice(base.length)}`;
    }
  }
  throw new Error(`no GGUF name for '${hf}' in the ${f.name} family`);
}

/** The projection a GGUF layer tensor stem (e.g. `attn_q`) is, in a family; undefined if none. */
export function projectionForGguf(f: ModelFamily, stem: string): ProjectionSlot | undefined {
  return f.projections.find((p) => p.gguf === stem);
}

/** The projection of an HF module path `<module>.<peft>` in a family; undefined if none. */
export function projectionForModule(
  f: ModelFamily,
  module: string,
  peft: string,
): ProjectionSlot | undefined {
  return f.projections.find((p) => p.module === module && p.peft === peft);
}

// ---- building blocks the family tables share ---------------------------------------------------

/** The Llama decoder layer's projections: q/k/v/o under self_attn, gate/up/down under mlp. */
export function llamaProjections(bias: {
  qkv: (c: FamilyDims) => boolean;
  o: (c: FamilyDims) => boolean;
  mlp: (c: FamilyDims) => boolean;
}): ProjectionSlot[] {
  const q = (c: ShapeDims): number => c.numHeads * c.headDim;
  const kv = (c: ShapeDims): number => c.numKvHeads * c.headDim;
  const slot = (
    name: ProjectionName,
    module: string,
    gguf: string,
    shape: (c: ShapeDims) => [number, number],
    hasBias: (c: FamilyDims) => boolean,
    ropeHeads?: (c: FamilyDims) => number,
  ): ProjectionSlot => ({ name, module, peft: name, gguf, shape, bias: hasBias, ropeHeads });
  return [
    slot(
      'q_proj',
      'self_attn',
      'attn_q',
      (c) => [q(c), c.hiddenSize],
      bias.qkv,
      (c) => c.numHeads,
    ),
    slot(
      'k_proj',
      'self_attn',
      'attn_k',
      (c) => [kv(c), c.hiddenSize],
      bias.qkv,
      (c) => c.numKvHeads,
    ),
    slot('v_proj', 'self_attn', 'attn_v', (c) => [kv(c), c.hiddenSize], bias.qkv),
    slot('o_proj', 'self_attn', 'attn_output', (c) => [c.hiddenSize, q(c)], bias.o),
    slot('gate_proj', 'mlp', 'ffn_gate', (c) => [c.intermediateSize, c.hiddenSize], bias.mlp),
    slot('up_proj', 'mlp', 'ffn_up', (c) => [c.intermediateSize, c.hiddenSize], bias.mlp),
    slot('down_proj', 'mlp', 'ffn_down', (c) => [c.hiddenSize, c.intermediateSize], bias.mlp),
  ];
}

/** input_layernorm before attention, post_attention_layernorm before the MLP. */
export const LLAMA_LAYER_NORMS: readonly LayerNormSlot[] = [
  {
    name: 'attnNorm',
    hf: 'input_layernorm.weight',
    gguf: 'attn_norm.weight',
    size: (c) => c.hiddenSize,
    group: 'attention',
  },
  {
    name: 'ffnNorm',
    hf: 'post_attention_layernorm.weight',
    gguf: 'ffn_norm.weight',
    size: (c) => c.hiddenSize,
    group: 'mlp',
  },
];

/** No family-specific settings: full attention, no biases. */
export const NO_FLAGS: FamilyFlags = {
  attentionBias: false,
  attentionOutputBias: false,
  mlpBias: false,
  slidingWindow: null,
};
