/**
 * Folding a PEFT LoRA adapter into dense weights: W' = W + scale·B·A in f32, with PEFT's scale
 * (alpha/r, or alpha/√r for rsLoRA). Works tensor by tensor on HF-layout weights, so a merged
 * export never holds more than one matrix at a time.
 */
import type { PeftAdapter } from '../io/peft.js';

/** PEFT's LoRA scaling factor. */
export function loraScale(adapter: Pick<PeftAdapter, 'lora'>): number {
  const { alpha, r, useRslora } = adapter.lora;
  return useRslora ? alpha / Math.sqrt(r) : alpha / r;
}

/** PEFT key of the A or B matrix for an HF weight name (model.layers.N.….q_proj.weight). */
export function peftKeyFor(hfWeight: string, which: 'A' | 'B'): string {
  return `base_model.model.${hfWeight.replace(/\.weight$/, '')}.lora_${which}.weight`;
}

/** HF weight name for a PEFT key, or null when the key is not a LoRA A/B matrix. */
export function hfWeightForPeftKey(key: string): { hf: string; which: 'A' | 'B' } | null {
  const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(key);
  return m ? { hf: `${m[1]}.weight`, which: m[2] as 'A' | 'B' } : null;
}

/**
 * Checks that every adapter tensor belongs to a weight of `shapes` (HF name → [out, in]) with
 * matching dimensions and comes in A/B pairs. Errors name the tensor and both shapes.
 */
export function checkAdapterAgainst(
  adapter: PeftAdapter,
  shapes: (hf: string) => readonly number[] | undefined,
  label = adapter.dir,
): void {
  for (const [key, t] of adapter.tensors) {
    const k = hfWeightForPeftKey(key);
    if (!k) throw new Error(`${label}: '${key}' is not a LoRA A/B tensor`);
    const shape = shapes(k.hf);
    if (!shape || shape.length !== 2)
      throw new Error(`${label}: '${key}' targets '${k.hf}', which this model does not have`);
    const [out, inF] = shape as [number, number];
    const r = adapter.lora.r;
    const want = k.which === 'A' ? [r, inF] : [out, r];
    if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      throw new Error(
        `${label}: '${key}' has shape [${t.shape.join(', ')}] but the model's '${k.hf}' [${out}, ${inF}] needs [${want.join(', ')}] (adapter for a different model?)`,
      );
    }
    const other = peftKeyFor(k.hf, k.which === 'A' ? 'B' : 'A');
    if (!adapter.tensors.has(other))
      throw new Error(`${label}: '${key}' has no matching '${other}'`);
  }
}

/** W += scale·B·A in place (W [out, in], B [out, r], A [r, in], all row-major f32). */
export function mergeLoraInto(
  w: Float32Array,
  a: Float32Array,
  b: Float32Array,
  r: number,
  scale: number,
): void {
  const inF = a.length / r;
  const out = b.length / r;
  if (w.length !== out * inF)
    throw new Error(`mergeLoraInto: W has ${w.length} values, B·A is [${out}, ${inF}]`);
  const row = new Float64Array(inF);
  for (let o = 0; o < out; o++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const bk = b[o * r + k]!;
      if (bk === 0) continue;
      const ak = k * inF;
      for (let i = 0; i < inF; i++) row[i]! += bk * a[ak + i]!;
    }
    const wo = o * inF;
    for (let i = 0; i < inF; i++) w[wo + i] = w[wo + i]! + scale * row[i]!;
  }
}

/** Returns a function that merges the adapter into a weight, if the adapter targets it. */
export function merger(adapter: PeftAdapter | null): (hf: string, w: Float32Array) => Float32Array {
  if (!adapter) return (_hf, w) => w;
  const scale = loraScale(adapter);
  return (hf, w) => {
    const a = adapter.tensors.get(peftKeyFor(hf, 'A'));
    const b = adapter.tensors.get(peftKeyFor(hf, 'B'));
    if (a && b) mergeLoraInto(w, a.values, b.values, adapter.lora.r, scale);
    return w;
  };
}
