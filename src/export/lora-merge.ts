/**
 * Folding a PEFT LoRA adapter into dense weights: W' = W + scale·B·A in f32, with PEFT's scale
 * (alpha/r, or alpha/√r for rsLoRA). Works tensor by tensor on HF-layout weights, so a merged
 * export never holds more than one matrix at a time.
 */
import type { PeftAdapter } from '../io/peft.js';
import { peftKeyFor } from '../io/peft-keys.js';
import { loraScaling } from '../nn/lora.js';

/** PEFT's LoRA scaling factor. */
export function loraScale(adapter: Pick<PeftAdapter, 'lora'>): number {
  const { alpha, r, useRslora } = adapter.lora;
  return loraScaling(alpha, r, useRslora);
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
