/**
 * How GGUF names a Llama-family architecture and whether its Q/K rows are stored interleaved: what
 * both reading GGUF files (a GGUF LoRA adapter, io/gguf-lora.ts) and writing them (src/export/) need.
 */
import type { LlamaConfig } from './config.js';

/**
 * GGUF architecture name. llama.cpp has no "mistral" architecture: convert_hf_to_gguf writes
 * MistralForCausalLM as "llama" (sliding-window attention is not represented).
 */
export function ggufArchitecture(c: LlamaConfig): 'llama' | 'qwen2' {
  return c.architecture === 'qwen2' ? 'qwen2' : 'llama';
}

/**
 * llama.cpp uses NORM (interleaved-pair) RoPE for llama, so HF Q/K rows are permuted on export;
 * qwen2 uses NEOX RoPE (rotate_half, HF's own layout) and is written as is.
 */
export function usesInterleavedQk(c: LlamaConfig): boolean {
  return ggufArchitecture(c) === 'llama';
}

/** The Q/K head count over which an HF weight's rows are interleaved in GGUF, or 0 (not Q/K, or NEOX RoPE). */
export function interleavedHeads(config: LlamaConfig, hf: string): number {
  if (!usesInterleavedQk(config)) return 0;
  if (hf.endsWith('.self_attn.q_proj.weight')) return config.numHeads;
  if (hf.endsWith('.self_attn.k_proj.weight')) return config.numKvHeads;
  return 0;
}
