/**
 * Phi-3 / Phi-3.5 / Phi-4-mini (transformers' Phi3ForCausalLM, model_type "phi3"): the Llama block
 * with fused projections and Phi's rope variants (docs/architecture.md § Model families,
 * docs/formats.md §4.4 and §5.4):
 * - `self_attn.qkv_proj` is one [q + 2·kv, hidden] weight whose output rows are q, then k, then v,
 *   and `mlp.gate_up_proj` one [2·intermediate, hidden] weight whose rows are gate, then up. PEFT
 *   targets these fused modules (target_modules qkv_proj, o_proj, gate_up_proj, down_proj) with
 *   one LoRA over the whole fused output, and so does this table: the model computes the fused
 *   product and splits its output (copyColumns), so adapters have PEFT's names and shapes;
 * - RoPE: plain for Phi-3-mini-4k; LongRoPE ("longrope", older "su": per-frequency short/long
 *   factors and a cos/sin scale) for the 128k models, Phi-3.5-mini and Phi-4-mini; Phi-4-mini
 *   rotates only the first partial_rotary_factor (0.75) of each head and ties its embeddings;
 * - no biases; a sliding window when config.json sets sliding_window (transformers applies it:
 *   2047 on Phi-3-mini-4k).
 * llama.cpp's arch "phi3" keeps the fusion (blk.N.attn_qkv, blk.N.ffn_up holding gate then up),
 * rotates halves (NEOX: rows stored as HF has them), stores LongRoPE as rope_factors_short/long
 * tensors with rope.scaling.attn_factor and the partial rotary as rope.dimension_count, and
 * ignores the sliding window (it warns "Phi SWA is currently disabled").
 */
import { LLAMA_LAYER_NORMS, type ModelFamily, type ProjectionSlot } from '../family.js';

const PHI3_PROJECTIONS: readonly ProjectionSlot[] = [
  {
    name: 'qkv_proj',
    module: 'self_attn',
    peft: 'qkv_proj',
    gguf: 'attn_qkv',
    shape: (c) => [(c.numHeads + 2 * c.numKvHeads) * c.headDim, c.hiddenSize],
    bias: () => false,
    parts: ['q_proj', 'k_proj', 'v_proj'],
  },
  {
    name: 'o_proj',
    module: 'self_attn',
    peft: 'o_proj',
    gguf: 'attn_output',
    shape: (c) => [c.hiddenSize, c.numHeads * c.headDim],
    bias: () => false,
  },
  {
    name: 'gate_up_proj',
    module: 'mlp',
    peft: 'gate_up_proj',
    gguf: 'ffn_up',
    shape: (c) => [2 * c.intermediateSize, c.hiddenSize],
    bias: () => false,
    parts: ['gate_proj', 'up_proj'],
  },
  {
    name: 'down_proj',
    module: 'mlp',
    peft: 'down_proj',
    gguf: 'ffn_down',
    shape: (c) => [c.hiddenSize, c.intermediateSize],
    bias: () => false,
  },
];

/** The original context of a tiny LongRoPE model: a test's 16 tokens reach the long factors. */
export const TINY_LONGROPE_ORIGINAL = 8;

/** `values` resampled to `n` entries at evenly spaced indices (first and last kept). */
function resample(values: readonly number[], n: number): number[] {
  if (n === values.length) return [...values];
  if (n === 1) return [values[0]!];
  return Array.from(
    { length: n },
    (_, i) => values[Math.round((i * (values.length - 1)) / (n - 1))]!,
  );
}

/**
 * A tiny Phi-3 keeps its rope: partial_rotary_factor as is, LongRoPE's short and long factor curves
 * resampled to the tiny rotary width, and the context extension ratio with an original context of
 * TINY_LONGROPE_ORIGINAL tokens so that a short test sequence crosses from short to long factors.
 */
function phi3Tiny(hf: Record<string, unknown>): Record<string, unknown> {
  const out = { ...hf };
  // Phi3Config's pad_token_id defaults to 32000, outside a tiny vocabulary: name eos instead.
  if (typeof hf.eos_token_id === 'number') out.pad_token_id = hf.eos_token_id;
  const rope = (hf.rope_scaling ?? hf.rope_parameters) as
    Record<string, unknown> | null | undefined;
  const kind = rope ? (rope.rope_type ?? rope.type) : undefined;
  if (!rope || (kind !== 'longrope' && kind !== 'su')) return out;
  const hidden = hf.hidden_size as number;
  const heads = hf.num_attention_heads as number;
  const headDim = (hf.head_dim as number | undefined) ?? hidden / heads;
  const partial =
    (hf.partial_rotary_factor as number | undefined) ??
    (rope.partial_rotary_factor as number | undefined) ??
    1;
  const half = Math.floor(headDim * partial) / 2;
  const original =
    (rope.original_max_position_embeddings as number | undefined) ??
    (hf.original_max_position_embeddings as number | undefined) ??
    (hf.max_position_embeddings as number);
  const ratio = Math.max(1, Math.round((hf.max_position_embeddings as number) / original));
  const scaled: Record<string, unknown> = {
    ...rope,
    short_factor: resample(rope.short_factor as number[], half),
    long_factor: resample(rope.long_factor as number[], half),
  };
  if (rope.original_max_position_embeddings !== undefined)
    scaled.original_max_position_embeddings = TINY_LONGROPE_ORIGINAL;
  out[
    hf.rope_scaling !== undefined && hf.rope_scaling !== null ? 'rope_scaling' : 'rope_parameters'
  ] = scaled;
  out.original_max_position_embeddings = TINY_LONGROPE_ORIGINAL;
  out.max_position_embeddings = TINY_LONGROPE_ORIGINAL * ratio;
  return out;
}

export const phi3: ModelFamily = {
  name: 'phi3',
  description: 'Phi-3 / Phi-3.5 / Phi-4-mini (fused qkv and gate_up, LongRoPE, partial rotary)',
  defaultShape: 'phi-3-mini',
  hf: {
    modelTypes: ['phi3'],
    classes: ['Phi3ForCausalLM'],
    // transformers' Phi3Config.
    defaults: {
      vocabSize: 32064,
      hiddenSize: 3072,
      intermediateSize: 8192,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: null,
      headDim: null,
      maxPositionEmbeddings: 4096,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
      bosTokenId: 1,
      eosTokenId: 32000,
    },
    flags: (h) => ({
      attentionBias: false,
      attentionOutputBias: false,
      mlpBias: false,
      slidingWindow: h.sliding_window ?? null,
    }),
    toHf: (c) => ({ attention_bias: false, sliding_window: c.slidingWindow }),
    tinyHf: phi3Tiny,
  },
  gguf: {
    arch: 'phi3',
    reads: ['phi3'],
    rope: 'neox',
    // convert_hf_to_gguf writes sliding_window (0 for none); read as transformers would apply it.
    flags: (m) => {
      const w = m.optionalNumber('attention.sliding_window') ?? 0;
      return {
        attentionBias: false,
        attentionOutputBias: false,
        mlpBias: false,
        slidingWindow: w > 0 ? w : null,
      };
    },
  },
  norm: 'rms',
  activation: 'silu',
  attention: { qkNorm: false },
  rope: 'rotate-half',
  layerNorms: LLAMA_LAYER_NORMS,
  projections: PHI3_PROJECTIONS,
};
