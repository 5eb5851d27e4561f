/**
 * Qwen2 / Qwen2.5: the Llama block with biases on q/k/v (never on o or the MLP); a sliding window
 * only when use_sliding_window is set. transformers' Qwen2Config defaults; llama.cpp arch "qwen2"
 * (NEOX rope: q/k rows stored in HF order).
 */
import { LLAMA_LAYER_NORMS, type ModelFamily, llamaProjections } from '../family.js';

export const qwen2: ModelFamily = {
  name: 'qwen2',
  description: 'Qwen2 / Qwen2.5 (q/k/v biases)',
  defaultShape: 'qwen2.5-0.5b',
  hf: {
    modelTypes: ['qwen2'],
    classes: ['Qwen2ForCausalLM'],
    defaults: {
      vocabSize: 151936,
      hiddenSize: 4096,
      intermediateSize: 22016,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 32,
      headDim: null,
      maxPositionEmbeddings: 32768,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
      bosTokenId: null,
      eosTokenId: null,
    },
    flags: (h) => ({
      attentionBias: true,
      attentionOutputBias: false,
      mlpBias: false,
      slidingWindow: h.use_sliding_window === true ? (h.sliding_window ?? null) : null,
    }),
    toHf: (c) => ({
      sliding_window: c.slidingWindow,
      use_sliding_window: c.slidingWindow !== null,
    }),
  },
  gguf: {
    arch: 'qwen2',
    reads: ['qwen2'],
    rope: 'neox',
    flags: () => ({
      attentionBias: true,
      attentionOutputBias: false,
      mlpBias: false,
      slidingWindow: null,
    }),
  },
  norm: 'rms',
  activation: 'silu',
  attention: { qkNorm: false },
  rope: 'rotate-half',
  layerNorms: LLAMA_LAYER_NORMS,
  projections: llamaProjections({
    qkv: (c) => c.attentionBias,
    o: () => false,
    mlp: () => false,
  }),
};
