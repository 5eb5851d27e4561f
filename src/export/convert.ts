/**
 * Model conversion between the formats openCheckpoint reads — HF folder, GGUF, llama2.c .bin —
 * optionally merging a LoRA adapter on the way. The target format follows the output path:
 * `*.gguf` → GGUF, `*.bin` → llama2.c v0, anything else → an HF folder.
 */
import { GgufValueType } from '../io/gguf.js';
import type { PeftAdapter } from '../io/peft.js';
import { type Checkpoint, openCheckpoint } from '../io/checkpoint.js';
import { GGUF_DTYPES, type GgufDtype, exportGgufModel } from './gguf-model.js';
import type { VocabMetadata } from './gguf-vocab.js';
import { HF_DTYPES, type HfDtype, writeHfFolder } from './hf-writer.js';
import { writeLlama2c } from './llama2c-writer.js';
import { checkAdapterAgainst } from '../io/peft-keys.js';
import { merger } from './lora-merge.js';
import { vocabForCheckpoint } from './vocab-source.js';

export type ModelFormat = 'gguf' | 'llama2c' | 'hf';

export function outputFormatFor(out: string): ModelFormat {
  if (out.endsWith('.gguf')) return 'gguf';
  if (out.endsWith('.bin')) return 'llama2c';
  return 'hf';
}

export interface ConvertOptions {
  /** Tensor type: GGUF f32/f16/bf16/q8_0/q4_0/q4_k (default f16); HF f32/f16/bf16 (default f32); llama2.c f32 only. */
  dtype?: string;
  /** Vocabulary for a GGUF target when the source's own is missing or should be replaced. */
  tokenizer?: string | null;
  /** A LoRA adapter to merge into the weights. */
  adapter?: PeftAdapter | null;
  /** general.name of a GGUF target. */
  name?: string;
  /** Chat template for a GGUF target's tokenizer.chat_template (replacing the vocabulary's own), e.g. the one an adapter was trained with. */
  chatTemplate?: string | null;
  onTensor?: (name: string, index: number, total: number) => void;
}

export interface ConvertResult {
  format: ModelFormat;
  out: string;
  warnings: string[];
}

function pickDtype<T extends string>(
  format: string,
  dtype: string | undefined,
  allowed: readonly T[],
  fallback: T,
): T {
  const d = dtype ?? fallback;
  if (!(allowed as readonly string[]).includes(d))
    throw new Error(
      `dtype '${d}' is not available for ${format} output (choose ${allowed.join(', ')})`,
    );
  return d as T;
}

/** Writes an open checkpoint in the format chosen by `out` (see the module comment). */
export function writeCheckpointAs(
  ck: Checkpoint,
  out: string,
  options: ConvertOptions = {},
): ConvertResult {
  const format = outputFormatFor(out);
  const adapter = options.adapter ?? null;
  if (adapter) checkAdapterAgainst(adapter, (hf) => (ck.has(hf) ? ck.shapeOf(hf) : undefined));
  const transform = merger(adapter);
  switch (format) {
    case 'gguf': {
      const dtype = pickDtype<GgufDtype>('GGUF', options.dtype, GGUF_DTYPES, 'f16');
      let vocab = vocabForCheckpoint(ck, options.tokenizer);
      if (options.chatTemplate) {
        const entries = vocab.entries.filter((e) => e.key !== 'tokenizer.chat_template');
        entries.push({
          key: 'tokenizer.chat_template',
          type: GgufValueType.STRING,
          value: options.chatTemplate,
        });
        vocab = { ...vocab, entries };
      }
      const r = exportGgufModel(ck, out, {
        dtype,
        vocab,
        adapter,
        name: options.name,
        onTensor: options.onTensor,
      });
      return { format, out, warnings: r.warnings };
    }
    case 'llama2c':
      pickDtype('llama2.c', options.dtype, ['f32'], 'f32');
      writeLlama2c(ck, out, transform);
      return { format, out, warnings: [] };
    case 'hf': {
      const dtype = pickDtype<HfDtype>('an HF folder', options.dtype, HF_DTYPES, 'f32');
      const warnings: string[] = [];
      let vocab: VocabMetadata | null = null;
      if (ck.source !== 'hf') {
        try {
          vocab = vocabForCheckpoint(ck, options.tokenizer);
        } catch (e) {
          warnings.push((e as Error).message);
        }
      }
      const r = writeHfFolder(ck, out, { dtype, transform, vocab });
      return { format, out, warnings: [...warnings, ...r.warnings] };
    }
  }
}

/** Opens `input` (HF folder, .gguf, llama2.c .bin) and writes it as `out`'s format. */
export function convertCheckpoint(
  input: string,
  out: string,
  options: ConvertOptions = {},
): ConvertResult {
  const ck = openCheckpoint(input);
  try {
    return writeCheckpointAs(ck, out, options);
  } finally {
    ck.close();
  }
}
