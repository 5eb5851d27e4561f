/**
 * Mistral: the Llama block with GQA and a sliding attention window (sliding_window).
 * transformers' MistralConfig defaults. llama.cpp has no "mistral" arch for these models:
 * convert_hf_to_gguf writes them as "llama" (the window is not represented), so a GGUF of
 * Mistral reads back as llama; a GGUF that does say "mistral" is read as this family.
 */
import { LLAMA_LAYER_NORMS, type ModelFamily, llamaProjections } from '../family.js';

export const mistral: ModelFamily = {
  name: 'mistral',
  description: 'Mistral 7B (sliding-window attention)',
  defaultShape: 'mistral-7b',
  hf: {
    modelTypes: ['mistral'],
    classes: ['MistralForCausalLM'],
    defaults: {
      vocabSize: 32000,
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: null,
      maxPositionEmbeddings: 4096 * 32,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      tieWordEmbeddings: false,
      bosTokenId: 1,
      eosTokenId: 2,
    },
    flags: (h) => ({
      attentionBias: h.attention_bias ?? false,
      attentionOutputBias: false,
      mlpBias: false,
      slidingWindow: h.sliding_window ?? null,
    }),
    toHf: (c) => ({ sliding_window: c.slidingWindow }),
  },
  gguf: {
    arch: 'llama',
    reads: ['mistral'],
    rope: 'norm',
    flags: (m) => ({
      attentionBias: false,
      attentionOutputBias: false,
      mlpBias: false,
      slidingWindow: m.optionalNumber('attention.sliding_window') ?? null,
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
