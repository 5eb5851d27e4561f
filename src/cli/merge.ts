import type { Command } from 'commander';
import { loadLoraAdapter } from '../export/gguf-lora.js';
import { writeCheckpointAs } from '../export/convert.js';
import { HF_DTYPES } from '../export/hf-writer.js';
import { type Checkpoint, openCheckpoint } from '../io/checkpoint.js';
import { PROJECTIONS } from '../models/llama.js';
import { dequantize4bit, quantize4bit, type Quantize4bitOptions } from '../quant/quantize4bit.js';
import { choiceOption, intOption } from './options.js';

const PROJECTION_WEIGHT = new RegExp(`\\.(${PROJECTIONS.join('|')})\\.weight$`);
const HEAD = 'lm_head.weight';
const EMBEDDING = 'model.embed_tokens.weight';

/** Which non-projection tensors the training base also held in 4-bit (train --quantize-head / --quantize-embeddings). */
export interface QuantizedExtras {
  readonly head?: boolean;
  readonly embedding?: boolean;
}

/**
 * The checkpoint as the adapter saw it during QLoRA training: each projection weight passed through
 * the same 4-bit quantizer, so merged = dequant(base) + scale·B·A reproduces base+adapter logits.
 */
export function asQuantizedBase(ck: Checkpoint, q: Quantize4bitOptions, extras: QuantizedExtras = {}): Checkpoint {
  const quantized = (name: string) => PROJECTION_WEIGHT.test(name) || (extras.head && name === HEAD) || (extras.embedding && name === EMBEDDING);
  const load = (name: string): Float32Array => {
    if (!quantized(name)) return ck.loadTensor(name);
    const stored = ck.loadQuantized(name);
    return dequantize4bit(stored ?? quantize4bit(ck.loadTensor(name), q));
  };
  return {
    config: ck.config,
    source: ck.source,
    path: ck.path,
    tensorNames: ck.tensorNames,
    has: (n) => ck.has(n),
    shapeOf: (n) => ck.shapeOf(n),
    loadTensor: load,
    load,
    loadQuantized: (n) => ck.loadQuantized(n),
    close: () => ck.close(),
  };
}

interface MergeFlags {
  model: string;
  adapter: string;
  out: string;
  dtype: 'f32' | 'f16' | 'bf16';
  quant: 'nf4' | 'fp4' | 'none';
  blocksize: number;
  doubleQuant: boolean;
  quantizeHead?: boolean;
  quantizeEmbeddings?: boolean;
}

export function registerMergeCommand(program: Command): void {
  program
    .command('merge')
    .description('fold a LoRA adapter into its base model and write a Hugging Face folder (qlora generate loads it)')
    .requiredOption('-m, --model <path>', 'base model: HF folder, .gguf file, or llama2.c .bin')
    .requiredOption('-a, --adapter <path>', 'LoRA adapter: PEFT folder or GGUF LoRA file')
    .requiredOption('-o, --out <dir>', 'output folder')
    .option('--dtype <dtype>', 'weight dtype of the output: f32, f16, bf16', choiceOption('--dtype', HF_DTYPES), 'f32')
    .option('--quant <type>', 'the base the adapter was trained on: nf4 (QLoRA default), fp4, or none (full precision)', choiceOption('--quant', ['nf4', 'fp4', 'none'] as const), 'nf4')
    .option('--blocksize <n>', '4-bit block size used in training', intOption('--blocksize', 32), 64)
    .option('--no-double-quant', 'the training base kept absmax in fp32')
    .option('--quantize-head', 'the training base had a 4-bit lm_head (train --quantize-head)')
    .option('--quantize-embeddings', 'the training base had a 4-bit embedding table (train --quantize-embeddings)')
    .action((flags: MergeFlags) => {
      const ck = openCheckpoint(flags.model);
      try {
        const adapter = loadLoraAdapter(flags.adapter, ck.config);
        const base = flags.quant === 'none' ? ck : asQuantizedBase(ck, { quantType: flags.quant, blocksize: flags.blocksize, doubleQuant: flags.doubleQuant }, { head: flags.quantizeHead, embedding: flags.quantizeEmbeddings });
        if (flags.out.endsWith('.gguf') || flags.out.endsWith('.bin')) throw new Error('merge writes an HF folder; for GGUF use `qlora export --format gguf --adapter`');
        const r = writeCheckpointAs(base, flags.out, { adapter, dtype: flags.dtype });
        for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
        process.stderr.write(`merged ${adapter.tensors.size / 2} LoRA layers into ${flags.out} (${flags.dtype}${flags.quant === 'none' ? '' : `, base through ${flags.quant}`})\n`);
      } finally {
        ck.close();
      }
    });
}
