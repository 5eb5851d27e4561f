import { type Command, Option } from 'commander';
import {
  addBaseOptions,
  type BaseFlags,
  chooseBase,
  oneAdapter,
  resolveModelLocally,
} from './base-options.js';
import { loadLoraAdapter } from '../io/gguf-lora.js';
import { writeCheckpointAs } from '../export/convert.js';
import { HF_DTYPES } from '../export/hf-writer.js';
import { type Checkpoint, openCheckpoint } from '../io/checkpoint.js';
import { PROJECTIONS } from '../models/llama.js';
import { dequantize4bit, quantize4bit, type Quantize4bitOptions } from '../quant/quantize4bit.js';
import { choiceOption, collect } from './options.js';

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
export function asQuantizedBase(
  ck: Checkpoint,
  q: Quantize4bitOptions,
  extras: QuantizedExtras = {},
): Checkpoint {
  const quantized = (name: string) =>
    PROJECTION_WEIGHT.test(name) ||
    (extras.head && name === HEAD) ||
    (extras.embedding && name === EMBEDDING);
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

interface MergeFlags extends BaseFlags {
  model?: string;
  adapter: string[];
  output?: string;
  /** The older name of --output (hidden). */
  out?: string;
  dtype: 'f32' | 'f16' | 'bf16';
}

export function registerMergeCommand(program: Command): void {
  const cmd = program
    .command('merge')
    .description(
      'fold a LoRA adapter into its base model and write a Hugging Face folder (qlora generate loads it)',
    )
    .option(
      '-m, --model <path>',
      'base model: HF folder, .gguf file, llama2.c .bin or a Hub id org/name[@revision] (default: the base the adapter was trained on)',
    )
    .requiredOption('-a, --adapter <path>', 'LoRA adapter: PEFT folder or GGUF LoRA file', collect)
    .option('-o, --output <dir>', 'output folder')
    .addOption(new Option('--out <dir>').hideHelp())
    .option(
      '--dtype <dtype>',
      'weight dtype of the output: f32, f16, bf16',
      choiceOption('--dtype', HF_DTYPES),
      'f32',
    );
  // The weights merge into the base the adapter was trained on (its qlora_config.json), unless --quant says otherwise.
  addBaseOptions(cmd);
  cmd.action(async (flags: MergeFlags) => {
    const out = flags.output ?? flags.out;
    if (out === undefined) throw new Error('--output is required (the folder to write)');
    if (out.endsWith('.gguf') || out.endsWith('.bin'))
      throw new Error(
        'merge writes an HF folder; for GGUF use `qlora export --format gguf --adapter`',
      );
    const adapterPath = oneAdapter(flags.adapter)!;
    const { base: quant, recipe } = chooseBase(cmd, flags, adapterPath, (line) =>
      process.stderr.write(`${line}\n`),
    );
    const ck = openCheckpoint(
      await resolveModelLocally(flags.model, adapterPath, recipe, flags.ggufFile),
    );
    try {
      const adapter = loadLoraAdapter(adapterPath, ck.config);
      // A GGUF kept as stored (--quant keep) is the file's dequantized values: the checkpoint itself.
      const base =
        quant && quant.quantType !== 'keep'
          ? asQuantizedBase(ck, quant, {
              head: quant.quantizeHead,
              embedding: quant.quantizeEmbeddings,
            })
          : ck;
      const r = writeCheckpointAs(base, out, { adapter, dtype: flags.dtype });
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stderr.write(
        `merged ${adapter.tensors.size / 2} LoRA layers into ${out} (${flags.dtype}${quant ? `, base through ${quant.quantType === 'keep' ? 'the GGUF blocks as stored' : quant.quantType}` : ''})\n`,
      );
    } finally {
      ck.close();
    }
  });
}
