/**
 * Gemma 2 and Gemma 3 (text): the decoder block with Gemma's conventions, which differ from
 * Llama's in many small ways (docs/architecture.md § Model families):
 * - RMSNorm scales by (1 + w) (norm 'rms1p'): checkpoints store w (transformers' Gemma2RMSNorm /
 *   Gemma3RMSNorm compute x/rms(x)·(1 + w) in float32), llama.cpp's GGUF files store w + 1
 *   (convert_hf_to_gguf.py adds 1 to every `*norm.weight`, q/k norms included);
 * - four norms per layer: input_layernorm before attention, post_attention_layernorm on its output
 *   before the residual add, pre_feedforward_layernorm before the MLP, post_feedforward_layernorm
 *   on its output (GGUF attn_norm, post_attention_norm, ffn_norm, post_ffw_norm);
 * - GeGLU MLP with tanh GELU (hidden_activation gelu_pytorch_tanh);
 * - embeddings multiplied by sqrt(hidden_size), rounded to the model dtype first as transformers
 *   does; tied embeddings; queries scaled by query_pre_attn_scalar^-1/2 instead of head_dim^-1/2;
 * - local sliding-window and global layers alternating: Gemma 2's even layers slide, Gemma 3 has
 *   five sliding layers to one global (sliding_window_pattern 6, or transformers v5 layer_types);
 * - Gemma 2: attention-logit and final-logit soft-capping (cap·tanh(x / cap));
 * - Gemma 3: per-head q/k RMSNorm (also 1 + w) and two rope bases, rope_local_base_freq for the
 *   sliding layers (unscaled) and rope_theta with the config's rope scaling for the global ones.
 * llama.cpp's "gemma2" / "gemma3" rotate halves (NEOX), so q/k rows are stored as HF has them. Its
 * GGUF metadata has no key for query_pre_attn_scalar, the layer pattern or Gemma 3's local rope
 * base: llama.cpp derives them (scale 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B
 * shapes; patterns 2 and 6; local base 10000), and so does reading a GGUF here; export refuses a
 * model those rules would misread (export/gguf-model.ts).
 */
import {
  type FamilyDims,
  type FamilyFlags,
  type GgufFlagView,
  type HfFlagFields,
  type LayerNormSlot,
  type ModelFamily,
  llamaProjections,
} from '../family.js';

/** The Gemma decoder layer's norms (transformers' names; llama.cpp's tensor names). */
const GEMMA_LAYER_NORMS: readonly LayerNormSlot[] = [
  {
    name: 'attnNorm',
    hf: 'input_layernorm.weight',
    gguf: 'attn_norm.weight',
    size: (c) => c.hiddenSize,
    group: 'attention',
  },
  {
    name: 'postAttnNorm',
    hf: 'post_attention_layernorm.weight',
    gguf: 'post_attention_norm.weight',
    size: (c) => c.hiddenSize,
    group: 'attention',
  },
  {
    name: 'ffnNorm',
    hf: 'pre_feedforward_layernorm.weight',
    gguf: 'ffn_norm.weight',
    size: (c) => c.hiddenSize,
    group: 'mlp',
  },
  {
    name: 'postFfnNorm',
    hf: 'post_feedforward_layernorm.weight',
    gguf: 'post_ffw_norm.weight',
    size: (c) => c.hiddenSize,
    group: 'mlp',
  },
];

const QK_NORMS: readonly LayerNormSlot[] = [
  {
    name: 'qNorm',
    hf: 'self_attn.q_norm.weight',
    gguf: 'attn_q_norm.weight',
    size: (c) => c.headDim,
    group: 'attention',
  },
  {
    name: 'kNorm',
    hf: 'self_attn.k_norm.weight',
    gguf: 'attn_k_norm.weight',
    size: (c) => c.headDim,
    group: 'attention',
  },
];

/**
 * Which layers slide in a repeating pattern of `period` layers whose last one is global
 * (transformers: Gemma 2 `not bool(i % 2)`, Gemma 3 `(i + 1) % sliding_window_pattern`; llama.cpp's
 * set_swa_pattern).
 */
export function gemmaSlidingLayers(numLayers: number, period: number): boolean[] {
  return Array.from({ length: numLayers }, (_, i) => (i + 1) % period !== 0);
}

/**
 * The query scale llama.cpp derives for a Gemma GGUF (it stores none): 1/sqrt(hidden/heads) for
 * the 27B shapes (Gemma 2 with 46 layers, Gemma 3 with 62), else 1/sqrt(head_dim), returned as the
 * query_pre_attn_scalar it amounts to.
 */
export function llamaCppQueryScalar(
  c: Pick<FamilyDims, 'hiddenSize' | 'numHeads' | 'headDim' | 'numLayers'>,
  layers27b: number,
): number {
  return c.numLayers === layers27b ? c.hiddenSize / c.numHeads : c.headDim;
}

/** A nullable number of config.json: absent takes the default, null stays null (no cap). */
function orDefault(v: number | null | undefined, fallback: number | null): number | null {
  return v === undefined ? fallback : v;
}

function ggufDims(m: GgufFlagView): {
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  headDim: number;
} {
  const hiddenSize = m.optionalNumber('embedding_length') ?? 0;
  const numHeads = m.optionalNumber('attention.head_count') ?? 1;
  return {
    numLayers: m.optionalNumber('block_count') ?? 0,
    hiddenSize,
    numHeads,
    headDim: m.optionalNumber('attention.key_length') ?? hiddenSize / numHeads,
  };
}

const GEMMA2_LAYERS_27B = 46;
const GEMMA3_LAYERS_27B = 62;
/** llama.cpp's fixed rope base of Gemma 3's sliding layers (rope_freq_base_train_swa). */
export const GEMMA3_GGUF_LOCAL_ROPE_THETA = 10000;
/** llama.cpp's fixed layer patterns (set_swa_pattern). */
export const GEMMA_GGUF_PATTERN = { gemma2: 2, gemma3: 6 } as const;

function gemma2Flags(h: HfFlagFields): FamilyFlags {
  const numLayers = h.num_hidden_layers ?? 26;
  return {
    attentionBias: h.attention_bias ?? false,
    attentionOutputBias: h.attention_bias ?? false,
    mlpBias: false,
    slidingWindow: h.sliding_window ?? 4096,
    // layer_types, when config.json has it, is read by io/config.ts.
    slidingLayers: h.layer_types ? undefined : gemmaSlidingLayers(numLayers, 2),
    attnLogitSoftcap: orDefault(h.attn_logit_softcapping, 50),
    finalLogitSoftcap: orDefault(h.final_logit_softcapping, 30),
    queryPreAttnScalar: h.query_pre_attn_scalar ?? 256,
    ropeLocalTheta: null,
  };
}

function gemma3Flags(h: HfFlagFields): FamilyFlags {
  const numLayers = h.num_hidden_layers ?? 26;
  return {
    attentionBias: h.attention_bias ?? false,
    attentionOutputBias: h.attention_bias ?? false,
    mlpBias: false,
    slidingWindow: h.sliding_window ?? 4096,
    slidingLayers: h.layer_types
      ? undefined
      : gemmaSlidingLayers(numLayers, h.sliding_window_pattern ?? 6),
    attnLogitSoftcap: orDefault(h.attn_logit_softcapping, null),
    finalLogitSoftcap: orDefault(h.final_logit_softcapping, null),
    queryPreAttnScalar: h.query_pre_attn_scalar ?? 256,
    ropeLocalTheta:
      h.rope_parameters?.sliding_attention?.rope_theta ?? h.rope_local_base_freq ?? 10000,
  };
}

/** config.json fields both Gemmas write (the common ones are io/config.ts's). */
function gemmaToHf(c: FamilyFlags): Record<string, unknown> {
  return {
    attention_bias: c.attentionBias,
    hidden_act: 'gelu_pytorch_tanh',
    hidden_activation: 'gelu_pytorch_tanh',
    query_pre_attn_scalar: c.queryPreAttnScalar ?? null,
    sliding_window: c.slidingWindow,
    attn_logit_softcapping: c.attnLogitSoftcap ?? null,
    final_logit_softcapping: c.finalLogitSoftcap ?? null,
  };
}

/**
 * Sliding window of a tiny Gemma (`qlora init-random --tiny`): short enough that the local layers
 * really slide on the sequences tests and benchmarks use (tens of tokens), as the real window
 * (512–4096) does on real prompts.
 */
export const GEMMA_TINY_WINDOW = 16;

/**
 * The tiny Gemma of a real config: at least one whole local/global pattern of layers (Gemma 2:
 * 2, Gemma 3: sliding_window_pattern, 6, or up to the first global layer of layer_types), a window
 * short enough to slide (GEMMA_TINY_WINDOW), and query_pre_attn_scalar in the same relation to the
 * tiny head_dim as the real one (head_dim on most sizes, hidden/heads on the 27B ones); soft-caps,
 * rope bases and scaling stay as they are.
 */
function gemmaTinyHf(defaultPeriod: number) {
  return (
    hf: Record<string, unknown>,
    layers: number,
    original: Record<string, unknown>,
  ): Record<string, unknown> => {
    const out = { ...hf };
    const types = Array.isArray(original.layer_types) ? (original.layer_types as unknown[]) : null;
    const firstGlobal = types ? types.indexOf('full_attention') : -1;
    const period =
      firstGlobal >= 0
        ? firstGlobal + 1
        : typeof original.sliding_window_pattern === 'number'
          ? original.sliding_window_pattern
          : defaultPeriod;
    const n = Math.max(layers, period);
    out.num_hidden_layers = n;
    if (types) out.layer_types = Array.from({ length: n }, (_, i) => types[i % types.length]);
    if (typeof out.sliding_window === 'number')
      out.sliding_window = Math.min(out.sliding_window, GEMMA_TINY_WINDOW);
    const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
    const heads = num(original.num_attention_heads) ?? 8;
    const hidden = num(original.hidden_size) ?? 2304;
    const headDim = num(original.head_dim) ?? hidden / heads;
    const scalar = num(original.query_pre_attn_scalar) ?? 256;
    const tinyHeads = out.num_attention_heads as number;
    const tinyHidden = out.hidden_size as number;
    const tinyHeadDim = num(out.head_dim) ?? tinyHidden / tinyHeads;
    if (scalar === headDim) out.query_pre_attn_scalar = tinyHeadDim;
    else if (scalar === hidden / heads) out.query_pre_attn_scalar = tinyHidden / tinyHeads;
    return out;
  };
}

const SHARED = {
  norm: 'rms1p',
  activation: 'gelu_tanh',
  embeddingScale: 'sqrt-hidden',
  rope: 'rotate-half',
  projections: llamaProjections({
    qkv: (c) => c.attentionBias,
    o: (c) => c.attentionOutputBias ?? false,
    mlp: () => false,
  }),
} as const;

export const gemma2: ModelFamily = {
  ...SHARED,
  name: 'gemma2',
  description: 'Gemma 2 (soft-capped attention and logits, alternating local/global layers)',
  defaultShape: 'gemma-2-2b',
  hf: {
    modelTypes: ['gemma2'],
    classes: ['Gemma2ForCausalLM'],
    defaults: {
      vocabSize: 256000,
      hiddenSize: 2304,
      intermediateSize: 9216,
      numLayers: 26,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 256,
      maxPositionEmbeddings: 8192,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      tieWordEmbeddings: true,
      bosTokenId: 2,
      eosTokenId: 1,
    },
    flags: gemma2Flags,
    toHf: gemmaToHf,
    tinyHf: gemmaTinyHf(GEMMA_GGUF_PATTERN.gemma2),
  },
  gguf: {
    arch: 'gemma2',
    reads: ['gemma2'],
    rope: 'neox',
    flags: (m) => {
      const d = ggufDims(m);
      return {
        attentionBias: false,
        attentionOutputBias: false,
        mlpBias: false,
        slidingWindow: m.optionalNumber('attention.sliding_window') ?? 4096,
        slidingLayers: gemmaSlidingLayers(d.numLayers, GEMMA_GGUF_PATTERN.gemma2),
        // llama.cpp's defaults when the keys are absent.
        attnLogitSoftcap: m.optionalNumber('attn_logit_softcapping') ?? 50,
        finalLogitSoftcap: m.optionalNumber('final_logit_softcapping') ?? 30,
        queryPreAttnScalar: llamaCppQueryScalar(d, GEMMA2_LAYERS_27B),
        ropeLocalTheta: null,
      };
    },
  },
  attention: { qkNorm: false },
  layerNorms: GEMMA_LAYER_NORMS,
};

export const gemma3: ModelFamily = {
  ...SHARED,
  name: 'gemma3',
  description: 'Gemma 3 text (q/k norms, 5 local : 1 global layers, two rope bases)',
  defaultShape: 'gemma-3-1b',
  hf: {
    modelTypes: ['gemma3_text'],
    classes: ['Gemma3ForCausalLM'],
    defaults: {
      vocabSize: 262208,
      hiddenSize: 2304,
      intermediateSize: 9216,
      numLayers: 26,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 256,
      maxPositionEmbeddings: 131072,
      rmsNormEps: 1e-6,
      ropeTheta: 1000000,
      tieWordEmbeddings: true,
      bosTokenId: 2,
      eosTokenId: 1,
    },
    flags: gemma3Flags,
    toHf: (c) => ({
      ...gemmaToHf(c),
      rope_local_base_freq: c.ropeLocalTheta ?? GEMMA3_GGUF_LOCAL_ROPE_THETA,
    }),
    tinyHf: gemmaTinyHf(GEMMA_GGUF_PATTERN.gemma3),
  },
  gguf: {
    arch: 'gemma3',
    reads: ['gemma3'],
    rope: 'neox',
    flags: (m) => {
      const d = ggufDims(m);
      return {
        attentionBias: false,
        attentionOutputBias: false,
        mlpBias: false,
        slidingWindow: m.optionalNumber('attention.sliding_window') ?? 4096,
        slidingLayers: gemmaSlidingLayers(d.numLayers, GEMMA_GGUF_PATTERN.gemma3),
        attnLogitSoftcap: null,
        finalLogitSoftcap: m.optionalNumber('final_logit_softcapping') ?? null,
        queryPreAttnScalar: llamaCppQueryScalar(d, GEMMA3_LAYERS_27B),
        ropeLocalTheta: GEMMA3_GGUF_LOCAL_ROPE_THETA,
      };
    },
  },
  attention: { qkNorm: true },
  layerNorms: [...GEMMA_LAYER_NORMS.slice(0, 1), ...QK_NORMS, ...GEMMA_LAYER_NORMS.slice(1)],
};

/**
 * What a GGUF of this Gemma config would misrepresent: llama.cpp derives the query scale, the
 * layer pattern and Gemma 3's local rope base instead of reading them, and a Gemma 2 without
 * soft-caps would get its defaults (50, 30). Empty when the file means the same model.
 */
export function gemmaGgufProblems(c: {
  readonly architecture?: string;
  readonly hiddenSize: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly numLayers: number;
  readonly slidingWindow: number | null;
  readonly slidingLayers: readonly boolean[] | null;
  readonly queryPreAttnScalar?: number | null;
  readonly attnLogitSoftcap?: number | null;
  readonly finalLogitSoftcap?: number | null;
  readonly ropeLocalTheta?: number | null;
}): string[] {
  const arch = c.architecture;
  if (arch !== 'gemma2' && arch !== 'gemma3') return [];
  const out: string[] = [];
  const scalar = llamaCppQueryScalar(c, arch === 'gemma2' ? GEMMA2_LAYERS_27B : GEMMA3_LAYERS_27B);
  if ((c.queryPreAttnScalar ?? c.headDim) !== scalar)
    out.push(
      `query_pre_attn_scalar ${c.queryPreAttnScalar} (llama.cpp's ${arch} scales queries by 1/sqrt(${scalar}))`,
    );
  const pattern = gemmaSlidingLayers(c.numLayers, GEMMA_GGUF_PATTERN[arch]);
  const sliding = c.slidingLayers ?? new Array<boolean>(c.numLayers).fill(c.slidingWindow !== null);
  if (c.slidingWindow === null || sliding.some((s, i) => s !== pattern[i]))
    out.push(
      `its sliding/global layer pattern (llama.cpp's ${arch} slides every layer but each ${GEMMA_GGUF_PATTERN[arch]}th)`,
    );
  if (arch === 'gemma2' && (c.attnLogitSoftcap == null || c.finalLogitSoftcap == null))
    out.push('a Gemma 2 without soft-caps (llama.cpp would apply its defaults 50 and 30)');
  if (arch === 'gemma3' && c.attnLogitSoftcap != null)
    out.push("attention soft-capping (llama.cpp's gemma3 has none)");
  if (
    arch === 'gemma3' &&
    (c.ropeLocalTheta ?? GEMMA3_GGUF_LOCAL_ROPE_THETA) !== GEMMA3_GGUF_LOCAL_ROPE_THETA
  )
    out.push(
      `rope_local_base_freq ${c.ropeLocalTheta} (llama.cpp's gemma3 uses ${GEMMA3_GGUF_LOCAL_ROPE_THETA})`,
    );
  return out;
}
