/**
 * Rotary-embedding tables: cos/sin [maxPos, headDim/2] for position p and frequency index i,
 * angle = p · invFreq[i], invFreq[i] = 1/θ^(2i/D), optionally rescaled (Llama-3 "llama3" rope
 * scaling, HF `_compute_llama3_parameters`, docs/formats.md §4.4 and §5.4; or plain linear
 * scaling). Backend-independent: models upload them with fromArray. The 'half' and 'interleaved'
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
  | { readonly ropeType: 'linear'; readonly factor: number };

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
): RopeTables {
  if (!Number.isInteger(maxPos) || maxPos < 0)
    throw new Error(`ropeTables: maxPos must be a non-negative integer, got ${maxPos}`);
  const r = precision === 'f32' ? Math.fround : (x: number) => x;
  const invFreq = ropeInverseFrequencies(headDim, theta, scaling, precision);
  const half = headDim / 2;
  const make = () =>
    precision === 'f32' ? new Float32Array(maxPos * half) : new Float64Array(maxPos * half);
  const cos = make();
  const sin = make();
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const angle = r(p * invFreq[i]!);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin, invFreq };
}
