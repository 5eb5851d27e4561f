/**
 * Base or merged model → a GGUF that llama.cpp, Ollama, LM Studio and node-llama-cpp load directly
 * (docs/formats.md §5.4): hyperparameters, vocabulary and chat template in metadata; HF tensors
 * renamed, Q/K rows permuted to the interleaved RoPE layout (llama), 1-D tensors and norms kept
 * F32, the rest in the chosen type; Llama-3 rope scaling as rope_freqs.weight. Tensors are read,
 * merged, permuted and encoded one at a time while the file is written.
 */
import { path } from '../io/host.js';
import { GgmlType } from '../io/ggml-types.js';
import { GgufValueType } from '../io/gguf.js';
import {
  type GgufMetadataEntry,
  type GgufTensorPlan,
  writeGgufStreaming,
} from '../io/gguf-writer.js';
import type { PeftAdapter } from '../io/peft.js';
import { type Checkpoint, ggufNameFor, permuteToInterleavedRows } from '../io/checkpoint.js';
import { encodeGgml } from './ggml-encode.js';
import {
  ggufConfigErrors,
  ggufConfigWarnings,
  hyperparameterMetadata,
  llama3RopeFreqFactors,
} from './gguf-arch.js';
import { familyOf, tensorTable } from '../models/registry.js';
import { interleavedHeads } from '../io/gguf-architecture.js';
import { checkAdapterAgainst } from '../io/peft-keys.js';
import type { VocabMetadata } from './gguf-vocab.js';
import { merger } from './lora-merge.js';

export const GGUF_DTYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k'] as const;
export type GgufDtype = (typeof GGUF_DTYPES)[number];

/** Tensor type and general.file_type (llama_ftype) per export dtype. */
const DTYPE_INFO: Record<GgufDtype, { type: number; fileType: number }> = {
  f32: { type: GgmlType.F32, fileType: 0 },
  f16: { type: GgmlType.F16, fileType: 1 },
  q4_0: { type: GgmlType.Q4_0, fileType: 2 },
  q8_0: { type: GgmlType.Q8_0, fileType: 7 },
  bf16: { type: GgmlType.BF16, fileType: 32 },
  // Every matrix Q4_K: llama_ftype MOSTLY_Q4_K_S is the nearest label (Q4_K_M mixes in Q6_K).
  q4_k: { type: GgmlType.Q4_K, fileType: 14 },
};

export interface GgufModelExportOptions {
  dtype: GgufDtype;
  vocab: VocabMetadata;
  /** A PEFT adapter to merge into the weights (W + scale·B·A in f32). */
  adapter?: PeftAdapter | null;
  /** general.name; defaults to the checkpoint's file or folder name. */
  name?: string;
  onTensor?: (name: string, index: number, total: number) => void;
}

export interface ExportResult {
  out: string;
  tensors: number;
  warnings: string[];
}

/**
 * ggml type for one tensor: norms and other 1-D tensors stay F32 (llama.cpp expects it). Rows that
 * are not a multiple of the block size fall back: Q4_K (256) to Q8_0, 32-blocks to F16 (as
 * convert_hf_to_gguf does).
 */
export function tensorTypeFor(dtype: GgufDtype, shape: readonly number[], hfName: string): number {
  if (shape.length < 2 || hfName.endsWith('norm.weight')) return GgmlType.F32;
  const row = shape[shape.length - 1]!;
  let type = DTYPE_INFO[dtype].type;
  if (type === GgmlType.Q4_K && row % 256 !== 0) type = GgmlType.Q8_0;
  if ((type === GgmlType.Q8_0 || type === GgmlType.Q4_0) && row % 32 !== 0) type = GgmlType.F16;
  return type;
}

/** The Q/K head count to permute an HF tensor's rows over for GGUF, or 0. */
export function qkPermuteHeads(ck: Pick<Checkpoint, 'config'>, hfName: string): number {
  return interleavedHeads(ck.config, hfName);
}

export function exportGgufModel(
  ck: Checkpoint,
  out: string,
  options: GgufModelExportOptions,
): ExportResult {
  const c = ck.config;
  const errors = ggufConfigErrors(c);
  if (errors.length > 0)
    throw new Error(
      `cannot export this ${c.architecture} model to GGUF without changing it: ${errors.join('; ')}`,
    );
  const warnings = [...ggufConfigWarnings(c), ...options.vocab.warnings];
  // A (1 + w) RMSNorm's weight is stored as w + 1, as convert_hf_to_gguf.py writes Gemma's.
  const normShift = familyOf(c).norm === 'rms1p';
  const norms = new Set(
    tensorTable(c)
      .filter((e) => e.role.kind === 'norm' || e.role.kind === 'finalNorm')
      .map((e) => e.hf),
  );
  if (options.vocab.size !== c.vocabSize) {
    throw new Error(
      `the vocabulary has ${options.vocab.size} tokens but the model's embedding has ${c.vocabSize} rows`,
    );
  }
  const adapter = options.adapter ?? null;
  if (adapter) checkAdapterAgainst(adapter, (hf) => (ck.has(hf) ? ck.shapeOf(hf) : undefined));
  const merge = merger(adapter);
  const name = options.name ?? path.basename(ck.path).replace(/\.(gguf|bin)$/, '');
  warnings.push(...llamaCppPhi3NameProblems(name, options.vocab));
  const info = DTYPE_INFO[options.dtype];

  const plans: GgufTensorPlan[] = [];
  const ropeFactors = llama3RopeFreqFactors(c);
  if (ropeFactors)
    plans.push({
      name: 'rope_freqs.weight',
      shape: [ropeFactors.length],
      type: GgmlType.F32,
      data: () => encodeGgml(GgmlType.F32, ropeFactors),
    });
  // LongRoPE (Phi-3): the short and long factors as llama.cpp's tensors, before the layers as
  // convert_hf_to_gguf writes them.
  const s = c.ropeScaling;
  if (s?.ropeType === 'longrope') {
    for (const [tensor, values] of [
      ['rope_factors_long.weight', s.longFactor],
      ['rope_factors_short.weight', s.shortFactor],
    ] as const)
      plans.push({
        name: tensor,
        shape: [values.length],
        type: GgmlType.F32,
        data: () => encodeGgml(GgmlType.F32, Float32Array.from(values)),
      });
  }
  let quantized = false;
  const total = ck.tensorNames.length;
  ck.tensorNames.forEach((hf, index) => {
    const shape = [...ck.shapeOf(hf)];
    const type = tensorTypeFor(options.dtype, shape, hf);
    if (type === GgmlType.Q8_0 || type === GgmlType.Q4_0 || type === GgmlType.Q4_K)
      quantized = true;
    plans.push({
      name: ggufNameFor(hf, c),
      shape,
      type,
      data: () => {
        options.onTensor?.(hf, index, total);
        let w = merge(hf, ck.loadTensor(hf));
        const heads = qkPermuteHeads(ck, hf);
        if (heads > 0) w = permuteToInterleavedRows(w, heads, shape.length === 2 ? shape[1]! : 1);
        if (normShift && norms.has(hf)) w = Float32Array.from(w, (v) => v + 1);
        return encodeGgml(type, w);
      },
    });
  });

  const metadata: GgufMetadataEntry[] = [
    ...hyperparameterMetadata(c, name),
    { key: 'general.file_type', type: GgufValueType.U32, value: info.fileType },
  ];
  if (quantized)
    metadata.push({ key: 'general.quantization_version', type: GgufValueType.U32, value: 2 });
  metadata.push(...options.vocab.entries);
  writeGgufStreaming(out, metadata, plans);
  return { out, tensors: plans.length, warnings };
}

/**
 * llama.cpp's vocabulary loader treats a model whose general.name contains "phi-3" or "phi3" as
 * Phi-3 and sets attributes on its `<unk>`, `<s>`, `</s>` and `<|endoftext|>` tokens by name, failing
 * to load ("_Map_base::at") a vocabulary without them (a tiny or byte-level one): said here.
 */
function llamaCppPhi3NameProblems(name: string, vocab: VocabMetadata): string[] {
  if (!/phi-3|phi3/.test(name.toLowerCase())) return [];
  const tokens = vocab.entries.find((e) => e.key === 'tokenizer.ggml.tokens')?.value;
  if (!Array.isArray(tokens)) return [];
  const have = new Set(tokens as unknown[]);
  const missing = ['<unk>', '<s>', '</s>', '<|endoftext|>'].filter((t) => !have.has(t));
  return missing.length === 0
    ? []
    : [
        `general.name '${name}' makes llama.cpp apply its Phi-3 token fix-up, which fails on a vocabulary without ${missing.join(', ')}: pick another name`,
      ];
}
