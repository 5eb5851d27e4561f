/**
 * PEFT's tensor names for LoRA matrices and the check that an adapter fits a model: shared by
 * adapter loading (io/gguf-lora.ts, load/load-model.ts) and merging/export (src/export/).
 */
import type { PeftAdapter } from './peft.js';

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
