/**
 * Llama 1/2/3 (also TinyLlama, SmolLM/SmolLM2, Llama 3.2, llama2.c checkpoints): RMSNorm, SwiGLU,
 * full causal GQA attention, rotate-half RoPE; biases only with attention_bias / mlp_bias.
 * transformers' LlamaConfig defaults; llama.cpp arch "llama" (NORM rope: q/k rows interleaved).
 */
import { LLAMA_LAYER_NORMS, type ModelFamily, NO_FLAGS, llamaProjections } from '../family.js';

export const llama: ModelFamily = {
  name: 'llama',
  description: 'Llama 1/2/3, TinyLlama, SmolLM2, Llama 3.2 (and llama2.c models)',
  defaultShape: 'llama-3.2-1b',
  hf: {
    modelTypes: ['llama'],
    classes: ['LlamaForCausalLM'],
    defaults: {
      vocabSize: 32000,
      hiddenSize: 4096,
      intermediateSize: 11008,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: null,
      headDim: null,
      maxPositionEmbeddings: 2048,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
      bosTokenId: 1,
      eosTokenId: 2,
    },
    flags: (h) => ({
      attentionBias: h.attention_bias ?? false,
      attentionOutputBias: h.attention_bias ?? false,
      mlpBias: h.mlp_bias ?? false,
      slidingWindow: null,
    }),
    toHf: (c) => ({ attention_bias: c.attentionBias, mlp_bias: c.mlpBias }),
  },
  gguf: { arch: 'llama', reads: ['llama'], rope: 'norm', flags: () => NO_FLAGS },
  norm: 'rms',
  activation: 'silu',
  attention: { qkNorm: false },
  rope: 'rotate-half',
  layerNorms: LLAMA_LAYER_NORMS,
  projections: llamaProjections({
    qkv: (c) => c.attentionBias,
    o: (c) => c.attentionOutputBias ?? false,
    mlp: (c) => c.mlpBias ?? false,
  }),
};
