/**
 * Rotary-embedding tables: cos/sin [maxPos, D/2] for position p and frequency index i,
 * angle = p · invFreq[i], invFreq[i] = 1/θ^(2i/D), optionally rescaled (Llama-3 "llama3" rope
 * scaling, HF `_compute_llama3_parameters`, docs/formats.md §4.4 and §5.4; plain linear scaling;
 * or LongRoPE's per-frequency factors and cos/sin scale, in a short and a long variant). D is the
 * rotated dimension count: head_dim, or less with a partial rotary factor (Phi-4-mini). Backend-independent: models upload them with fromArray. The 'half' and 'interleaved'
 * layouts use the same tables (they differ only in which elements form a pair).
 *
 * precision 'f32' (default) follows HF's float32 arithmetic (inverse frequencies, the position ×
 * frequency product and cos/sin of that float32 angle; may differ from torch by an ulp where powf
 * rounds differently); 'f64' computes everything in float64 (gradient checks, reference values).
 */

export type RopeScaling =
  | {
      readonly ropeType: 'llama3';
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositionEmbeddings: number;
    }
  | { readonly ropeType: 'linear'; readonly factor: number }
  | {
      /**
       * LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini; config.json "longrope", older "su"): each
       * inverse frequency divided by its own factor, `shortFactor` while a sequence fits
       * originalMaxPositionEmbeddings and `longFactor` beyond it, and cos/sin multiplied by
       * attentionFactor (transformers' `_compute_longrope_parameters`; llama.cpp's
       * rope_factors_short/long tensors and rope.scaling.attn_factor).
       */
      readonly ropeType: 'longrope';
      /** max_position_embeddings / original_max_position_embeddings (or config's factor). */
      readonly factor: number;
      readonly shortFactor: readonly number[];
      readonly longFactor: readonly number[];
      readonly originalMaxPositionEmbeddings: number;
      /** sqrt(1 + ln(factor) / ln(original)) when factor > 1, else 1, unless the config sets it. */
      readonly attentionFactor: number;
    };

/** Which LongRoPE factors a table uses: short up to the original context, long beyond it. */
export type RopeVariant = 'short' | 'long';

/** transformers' default LongRoPE attention factor for a context extension `factor`. */
export function longropeAttentionFactor(factor: number, originalMax: number): number {
  return factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(originalMax));
}

export interface RopeTables {
  readonly cos: Float32Array | Float64Array;
  readonly sin: Float32Array | Float64Array;
  /** The (scaled) inverse frequencies, [headDim/2]. */
  readonly invFreq: Float32Array | Float64Array;
}

/** Llama-3.1 defaults (factor 8, low 1, high 4, original context 8192). */
export const LLAMA3_ROPE_SCALING_DEFAULTS: RopeScaling = {
  ropeType: 'llama3',
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositionEmbeddings: 8192,
};

export function ropeInverseFrequencies(
  headDim: number,
  theta: number,
  scaling: RopeScaling | null = null,
  precision: 'f32' | 'f64' = 'f32',
  variant: RopeVariant = 'short',
): Float32Array | Float64Array {
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0)
    throw new Error(`ropeTables: head dim ${headDim} must be a positive even integer`);
  if (!(theta > 0)) throw new Error(`ropeTables: theta must be > 0, got ${theta}`);
  const r = precision === 'f32' ? Math.fround : (x: number) => x;
  const half = headDim / 2;
  const inv = precision === 'f32' ? new Float32Array(half) : new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = r(1 / r(Math.pow(r(theta), r((2 * i) / headDim))));
  if (!scaling) return inv;
  if (!(scaling.factor > 0))
    throw new Error(`ropeTables: scaling factor must be > 0, got ${scaling.factor}`);
  if (scaling.ropeType === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = r(inv[i]! / scaling.factor);
    return inv;
  }
  if (scaling.ropeType === 'longrope') {
    const ext = variant === 'long' ? scaling.longFactor : scaling.shortFactor;
    if (ext.length !== half)
      throw new Error(
        `ropeTables: LongRoPE ${variant}_factor has ${ext.length} values, expected ${half} (rotary dims / 2)`,
      );
    // transformers: 1 / (ext_factors · base^(2i/dim)), in float32.
    for (let i = 0; i < half; i++) {
      const e = ext[i]!;
      if (!(e > 0 && Number.isFinite(e)))
        throw new Error(`ropeTables: LongRoPE ${variant}_factor[${i}] = ${e} must be positive`);
      inv[i] = r(1 / r(r(e) * r(Math.pow(r(theta), r((2 * i) / headDim)))));
    }
    return inv;
  }
  if (scaling.ropeType !== 'llama3')
    throw new Error(
      `ropeTables: unsupported rope scaling '${String((scaling as { ropeType: unknown }).ropeType)}'`,
    );
  const { factor, lowFreqFactor: low, highFreqFactor: high } = scaling;
  if (!(high > low))
    throw new Error(`ropeTables: high_freq_factor (${high}) must exceed low_freq_factor (${low})`);
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const smooth = llama3Smooth(scaling, f, r);
    if (smooth === 1) continue; // high frequencies: unchanged
    if (smooth === 0)
      inv[i] = r(f / factor); // low frequencies: interpolated by the full factor
    else inv[i] = r(r(((1 - smooth) * f) / factor) + r(smooth * f));
  }
  return inv;
}

/**
 * Llama-3 rope scaling of one inverse frequency f, as the weight of f itself against f/factor:
 * 1 above the high-frequency band (wavelength below original context / high_freq_factor: kept),
 * 0 below the low-frequency band (wavelength above original context / low_freq_factor: divided by
 * the full factor), in between the smooth interpolation of HF `_compute_llama3_parameters` and of
 * convert_hf_to_gguf's rope_freqs. `r` rounds each intermediate (Math.fround: float32 arithmetic;
 * the identity: float64). The scaled frequency is (1 - smooth)·f/factor + smooth·f, the GGUF
 * divisor 1 / ((1 - smooth)/factor + smooth).
 */
export function llama3Smooth(
  s: Extract<RopeScaling, { ropeType: 'llama3' }>,
  f: number,
  r: (x: number) => number,
): number {
  const oldCtx = s.originalMaxPositionEmbeddings;
  const wavelen = r((2 * Math.PI) / f);
  if (wavelen < oldCtx / s.highFreqFactor) return 1;
  if (wavelen > oldCtx / s.lowFreqFactor) return 0;
  return r((oldCtx / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor));
}

export function ropeTables(
  headDim: number,
  maxPos: number,
  theta: number,
  scaling: RopeScaling | null = null,
  precision: 'f32' | 'f64' = 'f32',
  variant: RopeVariant = 'short',
): RopeTables {
  if (!Number.isInteger(maxPos) || maxPos < 0)
    throw new Error(`ropeTables: maxPos must be a non-negative integer, got ${maxPos}`);
  const r = precision === 'f32' ? Math.fround : (x: number) => x;
  const invFreq = ropeInverseFrequencies(headDim, theta, scaling, precision, variant);
  const half = headDim / 2;
  // LongRoPE scales cos and sin (transformers: `emb.cos() * attention_scaling` in float32).
  const att = scaling?.ropeType === 'longrope' ? r(scaling.attentionFactor) : 1;
  const make = () =>
    precision === 'f32' ? new Float32Array(maxPos * half) : new Float64Array(maxPos * half);
  const cos = make();
  const sin = make();
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const angle = r(p * invFreq[i]!);
      if (att === 1) {
        cos[p * half + i] = Math.cos(angle);
        sin[p * half + i] = Math.sin(angle);
      } else {
        cos[p * half + i] = r(r(Math.cos(angle)) * att);
        sin[p * half + i] = r(r(Math.sin(angle)) * att);
      }
    }
  }
  return { cos, sin, invFreq };
}
