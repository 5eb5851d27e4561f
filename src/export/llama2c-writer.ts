/**
 * Writes a llama2.c legacy (v0) checkpoint, the format run.c reads (docs/formats.md §6.1): 7 ×
 * int32 header (negative vocab_size = unshared classifier), f32 weights grouped by kind across
 * layers, Q/K rows in the interleaved RoPE layout, the freq_cis tables, then wcls when unshared.
 * run.c hard-codes plain Llama (no biases, RoPE θ = 10000 without scaling, RMSNorm ε = 1e-5,
 * head_dim = dim/heads), so anything else is refused rather than silently changed.
 */
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import { type Checkpoint, permuteToInterleavedRows } from '../io/checkpoint.js';
import type { LlamaConfig } from '../io/config.js';

/** Why `c` cannot be a llama2.c checkpoint, or null when it can. */
export function llama2cIncompatibility(c: LlamaConfig): string | null {
  if (c.architecture !== 'llama')
    return `architecture '${c.architecture}' (llama2.c runs plain Llama only)`;
  if (c.attentionBias || c.attentionOutputBias || c.mlpBias)
    return 'the model has biases, which llama2.c has no place for';
  if (c.ropeScaling) return `rope scaling '${c.ropeScaling.ropeType}' (run.c has none)`;
  if (c.ropeTheta !== 10000) return `rope theta ${c.ropeTheta} (run.c hard-codes 10000)`;
  if (Math.abs(c.rmsNormEps - 1e-5) > 1e-12)
    return `rms_norm_eps ${c.rmsNormEps} (run.c hard-codes 1e-5)`;
  if (c.headDim * c.numHeads !== c.hiddenSize)
    return `head_dim ${c.headDim} × ${c.numHeads} heads ≠ hidden size ${c.hiddenSize}`;
  return null;
}

const f32Bytes = (v: Float32Array | Int32Array): Uint8Array =>
  new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

/** Writes `ck` (optionally with weights transformed by `transform`, e.g. a LoRA merge) as llama2.c v0. */
export function writeLlama2c(
  ck: Checkpoint,
  out: string,
  transform: (hf: string, w: Float32Array) => Float32Array = (_h, w) => w,
): void {
  const c = ck.config;
  const why = llama2cIncompatibility(c);
  if (why) throw new Error(`cannot write a llama2.c checkpoint: ${why}`);
  const header = new Int32Array([
    c.hiddenSize,
    c.intermediateSize,
    c.numLayers,
    c.numHeads,
    c.numKvHeads,
    c.tieWordEmbeddings ? c.vocabSize : -c.vocabSize,
    c.maxPositionEmbeddings,
  ]);
  const load = (hf: string): Float32Array => {
    const w = transform(hf, ck.loadTensor(hf));
    if (hf.endsWith('q_proj.weight')) return permuteToInterleavedRows(w, c.numHeads, c.hiddenSize);
    if (hf.endsWith('k_proj.weight'))
      return permuteToInterleavedRows(w, c.numKvHeads, c.hiddenSize);
    return w;
  };
  const perLayer = (suffix: string): string[] =>
    Array.from({ length: c.numLayers }, (_, l) => `model.layers.${l}.${suffix}`);
  const order = [
    'model.embed_tokens.weight',
    ...perLayer('input_layernorm.weight'),
    ...perLayer('self_attn.q_proj.weight'),
    ...perLayer('self_attn.k_proj.weight'),
    ...perLayer('self_attn.v_proj.weight'),
    ...perLayer('self_attn.o_proj.weight'),
    ...perLayer('post_attention_layernorm.weight'),
    ...perLayer('mlp.gate_proj.weight'),
    ...perLayer('mlp.down_proj.weight'),
    ...perLayer('mlp.up_proj.weight'),
    'model.norm.weight',
  ];
  writeFileAtomic(out, (fd) => {
    writeAll(fd, f32Bytes(header));
    for (const hf of order) writeAll(fd, f32Bytes(load(hf)));
    // freq_cis_real / freq_cis_imag [seq_len, head_dim/2], as llama2.c's legacy export writes them.
    const half = c.headDim / 2;
    const cos = new Float32Array(c.maxPositionEmbeddings * half);
    const sin = new Float32Array(c.maxPositionEmbeddings * half);
    for (let t = 0; t < c.maxPositionEmbeddings; t++) {
      for (let i = 0; i < half; i++) {
        const freq = 1 / Math.pow(c.ropeTheta, (2 * i) / c.headDim);
        cos[t * half + i] = Math.cos(t * freq);
        sin[t * half + i] = Math.sin(t * freq);
      }
    }
    writeAll(fd, f32Bytes(cos));
    writeAll(fd, f32Bytes(sin));
    if (!c.tieWordEmbeddings) writeAll(fd, f32Bytes(load('lm_head.weight')));
  });
}
