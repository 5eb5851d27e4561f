/**
 * Qwen3 (dense): the Llama block with per-head RMSNorm of q and k over head_dim before RoPE
 * (self_attn.q_norm / k_norm, one [head_dim] weight each, shared by all heads), no q/k/v bias
 * (attention_bias, default false, would put one on q/k/v and o), head_dim given explicitly
 * (128, not hidden/heads), tied embeddings on the small sizes. transformers' Qwen3Config
 * defaults; llama.cpp arch "qwen3" (NEOX rope, attn_q_norm / attn_k_norm).
 */
import { LLAMA_LAYER_NORMS, type ModelFamily, llamaProjections } from '../family.js';

export const qwen3: ModelFamily = {
  name: 'qwen3',
  description: 'Qwen3 dense models (q/k RMSNorm per head)',
  defaultShape: 'qwen3-0.6b',
  hf: {
    modelTypes: ['qwen3'],
    classes: ['Qwen3ForCausalLM'],
    defaults: {
      vocabSize: 151936,
      hiddenSize: 4096,
      intermediateSize: 22016,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 32,
      headDim: 128,
      maxPositionEmbeddings: 32768,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
      bosTokenId: null,
      eosTokenId: null,
    },
    flags: (h) => ({
      attentionBias: h.attention_bias ?? false,
      attentionOutputBias: h.attention_bias ?? false,
      mlpBias: false,
      slidingWindow: h.use_sliding_window === true ? (h.sliding_window ?? null) : null,
    }),
    toHf: (c) => ({
      attention_bias: c.attentionBias,
      sliding_window: c.slidingWindow,
      use_sliding_window: c.slidingWindow !== null,
    }),
  },
  gguf: {
    arch: 'qwen3',
    reads: ['qwen3'],
    rope: 'neox',
    flags: () => ({
      attentionBias: false,
      attentionOutputBias: false,
      mlpBias: false,
      slidingWindow: null,
    }),
  },
  norm: 'rms',
  activation: 'silu',
  attention: { qkNorm: true },
  rope: 'rotate-half',
  layerNorms: [
    ...LLAMA_LAYER_NORMS,
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
  ],
  projections: llamaProjections({
    qkv: (c) => c.attentionBias,
    o: (c) => c.attentionOutputBias ?? false,
    mlp: () => false,
  }),
};
