/**
 * How GGUF names a family's architecture and whether its Q/K rows are stored interleaved: what
 * both reading GGUF files (a GGUF LoRA adapter, io/gguf-lora.ts) and writing them (src/export/)
 * need. Both come from the family's descriptor (models/families/).
 */
import type { LlamaConfig } from './config.js';
import { familyOf, interleavedHeadsFor } from '../models/registry.js';

/**
 * GGUF architecture name. llama.cpp has no "mistral" architecture: convert_hf_to_gguf writes
 * MistralForCausalLM as "llama" (sliding-window attention is not represented).
 */
export function ggufArchitecture(c: Pick<LlamaConfig, 'architecture'>): string {
  return familyOf(c).gguf.arch;
}

/**
 * llama.cpp uses NORM (interleaved-pair) RoPE for llama, so HF Q/K rows are permuted on export;
 * NEOX architectures (qwen2, qwen3: rotate_half, HF's own layout) are written as is.
 */
export function usesInterleavedQk(c: Pick<LlamaConfig, 'architecture'>): boolean {
  return familyOf(c).gguf.rope === 'norm';
}

/** The Q/K head count over which an HF weight's rows are interleaved in GGUF, or 0 (not Q/K, or NEOX RoPE). */
export function interleavedHeads(config: LlamaConfig, hf: string): number {
  return interleavedHeadsFor(config, hf);
}
