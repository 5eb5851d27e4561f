/**
 * PEFT LoRA adapter → GGUF LoRA adapter (docs/formats.md §5.6; llama.cpp convert_lora_to_gguf.py
 * and llama-adapter.cpp).
 *
 * Export: general.type=adapter, adapter.type=lora, adapter.lora.alpha, general.architecture of the
 * base; tensors `<gguf weight name>.lora_a` (ggml dims [in, r]) and `.lora_b` ([r, out]). llama.cpp
 * applies y = Wx + (alpha/r)·B(Ax) with r = b.ne[0], so rsLoRA (alpha/√r) is written as alpha·√r.
 * Our adapters are in HF layout; for llama-architecture bases the GGUF's Q/K rows are interleaved,
 * so B's rows of attn_q/attn_k are permuted the same way (A is untouched).
 *
 * Reading one back (the reverse of all this) is src/io/gguf-lora.ts.
 */
import { GgmlType } from '../io/ggml-types.js';
import { path } from '../io/host.js';
import { GgufValueType } from '../io/gguf.js';
import {
  type GgufMetadataEntry,
  type GgufTensorPlan,
  writeGgufStreaming,
} from '../io/gguf-writer.js';
import type { PeftAdapter } from '../io/peft.js';
import type { LoraConfig } from '../models/build.js';
import { canonicalShapes, ggufNameFor, permuteToInterleavedRows } from '../io/checkpoint.js';
import type { LlamaConfig } from '../io/config.js';
import { encodeGgml } from './ggml-encode.js';
import { ggufArchitecture, interleavedHeads } from '../io/gguf-architecture.js';
import { checkAdapterAgainst, hfWeightForPeftKey } from '../io/peft-keys.js';

export const GGUF_LORA_DTYPES = ['f32', 'f16', 'bf16'] as const;
export type GgufLoraDtype = (typeof GGUF_LORA_DTYPES)[number];
const LORA_TYPE: Record<GgufLoraDtype, number> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
};

/** The alpha to write so that llama.cpp's alpha/r equals the adapter's PEFT scale. */
export function ggufLoraAlpha(lora: Pick<LoraConfig, 'alpha' | 'r' | 'useRslora'>): number {
  return lora.useRslora ? lora.alpha * Math.sqrt(lora.r) : lora.alpha;
}

export interface GgufLoraExportOptions {
  dtype?: GgufLoraDtype;
  name?: string;
}

/** Writes a PEFT adapter as a GGUF LoRA adapter for a base with `config`. */
export function exportGgufLora(
  adapter: PeftAdapter,
  config: LlamaConfig,
  out: string,
  options: GgufLoraExportOptions = {},
): { out: string; tensors: number } {
  const shapes = canonicalShapes(config);
  checkAdapterAgainst(adapter, (hf) => shapes.get(hf));
  const type = LORA_TYPE[options.dtype ?? 'f32'];
  const r = adapter.lora.r;
  const plans: GgufTensorPlan[] = [];
  // Deterministic order: by layer, then projection, A before B (the order PEFT/convert produce).
  const entries = [...adapter.tensors].sort(([x], [y]) => {
    const lx = Number(/layers\.(\d+)\./.exec(x)?.[1] ?? 0);
    const ly = Number(/layers\.(\d+)\./.exec(y)?.[1] ?? 0);
    return lx - ly || (x < y ? -1 : x > y ? 1 : 0);
  });
  for (const [key, t] of entries) {
    const k = hfWeightForPeftKey(key);
    if (!k) throw new Error(`adapter tensor '${key}' is not a PEFT lora_A / lora_B weight`);
    const h = k.which === 'B' ? interleavedHeads(config, k.hf) : 0;
    plans.push({
      name: `${ggufNameFor(k.hf, config)}.lora_${k.which === 'A' ? 'a' : 'b'}`,
      // Row-major [r, in] for A and [out, r] for B: the writer reverses to ggml dims [in, r] / [r, out].
      shape: [...t.shape],
      type,
      data: () => encodeGgml(type, h > 0 ? permuteToInterleavedRows(t.values, h, r) : t.values),
    });
  }
  const metadata: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: GgufValueType.STRING, value: ggufArchitecture(config) },
    { key: 'general.type', type: GgufValueType.STRING, value: 'adapter' },
    {
      key: 'general.name',
      type: GgufValueType.STRING,
      value: options.name ?? path.basename(path.resolve(adapter.dir)),
    },
    { key: 'adapter.type', type: GgufValueType.STRING, value: 'lora' },
    { key: 'adapter.lora.alpha', type: GgufValueType.F32, value: ggufLoraAlpha(adapter.lora) },
  ];
  writeGgufStreaming(out, metadata, plans);
  return { out, tensors: plans.length };
}
