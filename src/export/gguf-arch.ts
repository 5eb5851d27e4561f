/**
 * How a normalized LlamaConfig is spelled in GGUF (docs/formats.md §5.4, convert_hf_to_gguf.py):
 * the architecture name, the `<arch>.*` hyperparameter keys, Llama-3 rope scaling as the
 * `rope_freqs.weight` tensor, and whether Q/K rows are stored in the interleaved RoPE layout.
 */
import { GgufValueType } from '../io/gguf.js';
import type { GgufMetadataEntry } from '../io/gguf-writer.js';
import type { LlamaConfig } from '../io/config.js';
import { ggufArchitecture } from '../io/gguf-architecture.js';
import { llama3Smooth, ropeInverseFrequencies } from '../backends/rope-tables.js';
import { gemmaGgufProblems } from '../models/families/gemma.js';

/**
 * Settings a GGUF of this config would misrepresent, so that llama.cpp would compute another model
 * (Gemma's derived query scale, layer pattern and local rope base): export refuses these.
 */
export function ggufConfigErrors(c: LlamaConfig): string[] {
  return gemmaGgufProblems(c);
}

/** Things about a config that the GGUF cannot express. */
export function ggufConfigWarnings(c: LlamaConfig): string[] {
  const w: string[] = [];
  // Gemma's arches represent their window (attention.sliding_window with a fixed layer pattern).
  const gemma = c.architecture === 'gemma2' || c.architecture === 'gemma3';
  if (c.architecture === 'phi3' && c.slidingWindow !== null) {
    if (c.slidingWindow < c.maxPositionEmbeddings)
      w.push(
        `sliding-window attention (${c.slidingWindow}) is written as phi3.attention.sliding_window, but llama.cpp's phi3 ignores it and attends to the full context`,
      );
  } else if (!gemma && c.slidingWindow !== null && c.slidingWindow < c.maxPositionEmbeddings) {
    w.push(
      `sliding-window attention (${c.slidingWindow}) is not represented in GGUF "${ggufArchitecture(c)}"; llama.cpp attends to the full context`,
    );
  }
  return w;
}

/** The general.* and `<arch>.*` keys llama.cpp reads for a Llama-family model. */
export function hyperparameterMetadata(c: LlamaConfig, name: string): GgufMetadataEntry[] {
  const arch = ggufArchitecture(c);
  const u32 = (key: string, value: number): GgufMetadataEntry => ({
    key: `${arch}.${key}`,
    type: GgufValueType.U32,
    value,
  });
  const f32 = (key: string, value: number): GgufMetadataEntry => ({
    key: `${arch}.${key}`,
    type: GgufValueType.F32,
    value,
  });
  const out: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: GgufValueType.STRING, value: arch },
    { key: 'general.type', type: GgufValueType.STRING, value: 'model' },
    { key: 'general.name', type: GgufValueType.STRING, value: name },
    u32('vocab_size', c.vocabSize),
    u32('context_length', c.maxPositionEmbeddings),
    u32('embedding_length', c.hiddenSize),
    u32('block_count', c.numLayers),
    u32('feed_forward_length', c.intermediateSize),
    u32('attention.head_count', c.numHeads),
    u32('attention.head_count_kv', c.numKvHeads),
    f32('rope.freq_base', c.ropeTheta),
    f32('attention.layer_norm_rms_epsilon', c.rmsNormEps),
    // The rotated dims: head_dim, or fewer with a partial rotary factor (Phi-4-mini).
    u32('rope.dimension_count', c.rotaryDim ?? c.headDim),
  ];
  if (c.headDim * c.numHeads !== c.hiddenSize)
    out.push(u32('attention.key_length', c.headDim), u32('attention.value_length', c.headDim));
  // Gemma: the window of the sliding layers and the soft-caps (llama.cpp's gemma2/gemma3 keys).
  if (c.architecture === 'gemma2' || c.architecture === 'gemma3') {
    if (c.slidingWindow !== null) out.push(u32('attention.sliding_window', c.slidingWindow));
    if (c.attnLogitSoftcap != null) out.push(f32('attn_logit_softcapping', c.attnLogitSoftcap));
    if (c.finalLogitSoftcap != null) out.push(f32('final_logit_softcapping', c.finalLogitSoftcap));
    if (c.headDim * c.numHeads === c.hiddenSize)
      out.push(u32('attention.key_length', c.headDim), u32('attention.value_length', c.headDim));
  }
  if (c.architecture === 'phi3') {
    // convert_hf_to_gguf's Phi3MiniModel: the window (0 for none; llama.cpp ignores it, see
    // families/phi3.ts) and, with LongRoPE, the original context and the cos/sin scale.
    out.push(u32('attention.sliding_window', c.slidingWindow ?? 0));
    const s = c.ropeScaling;
    if (s?.ropeType === 'longrope') {
      out.push(
        u32('rope.scaling.original_context_length', s.originalMaxPositionEmbeddings),
        f32('rope.scaling.attn_factor', s.attentionFactor),
      );
    }
  }
  if (c.ropeScaling?.ropeType === 'linear') {
    out.push(
      { key: `${arch}.rope.scaling.type`, type: GgufValueType.STRING, value: 'linear' },
      f32('rope.scaling.factor', c.ropeScaling.factor),
    );
  }
  return out;
}

/**
 * Llama-3 rope scaling as llama.cpp wants it: per-frequency divisors (`rope_freqs.weight`,
 * [head_dim/2] f32), computed as convert_hf_to_gguf's LlamaModel does; null without llama3 scaling.
 */
export function llama3RopeFreqFactors(c: LlamaConfig): Float32Array | null {
  const s = c.ropeScaling;
  if (s?.ropeType !== 'llama3') return null;
  // torch: 1 / base ** (arange(0, dim, 2, float32) / dim), in float32; the rest in float64.
  const freqs = ropeInverseFrequencies(c.headDim, c.ropeTheta, null, 'f32');
  return Float32Array.from(freqs, (f) => {
    const smooth = llama3Smooth(s, f, (x) => x);
    return smooth === 0 ? s.factor : 1 / ((1 - smooth) / s.factor + smooth);
  });
}
