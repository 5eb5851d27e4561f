import { GGUF_FILE_HELP, localModelPath } from './hub-args.js';
import type { Command } from 'commander';
import { writeBnb4bitFolder } from '../export/bnb-writer.js';
import { HF_DTYPES } from '../export/hf-writer.js';
import { vocabForCheckpoint } from '../export/vocab-source.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { VALID_4BIT_BLOCKSIZES } from '../quant/quantize4bit.js';
import { choiceOption, formatBytes, intOption, oneOutput } from './options.js';

interface QuantizeFlags {
  quant: 'nf4' | 'fp4';
  blocksize: number;
  doubleQuant: boolean;
  output?: string;
  dtype: 'f32' | 'f16' | 'bf16';
  tokenizer?: string;
  ggufFile?: string;
}

export function registerQuantizeCommand(program: Command): void {
  program
    .command('quantize')
    .description(
      'write a 4-bit (bitsandbytes layout) HF checkpoint: projections NF4/FP4, the rest in --dtype',
    )
    .argument(
      '<model>',
      'model: HF folder, .gguf file, llama2.c .bin or a Hub id org/name[@revision]',
    )
    .argument('[out]', 'output folder (or -o)')
    .option('-o, --output <dir>', 'output folder')
    .option('--quant <type>', 'nf4 or fp4', choiceOption('--quant', ['nf4', 'fp4'] as const), 'nf4')
    .option(
      '--blocksize <n>',
      `block size: ${VALID_4BIT_BLOCKSIZES.join(', ')}`,
      intOption('--blocksize', 32),
      64,
    )
    .option('--no-double-quant', 'keep absmax in fp32 (default: 8-bit double quantization)')
    .option(
      '--dtype <dtype>',
      'dtype of unquantized tensors (embeddings, norms, lm_head)',
      choiceOption('--dtype', HF_DTYPES),
      'f32',
    )
    .option('--tokenizer <path>', 'tokenizer to include when the model has none beside it')
    .option('--gguf-file <pattern>', GGUF_FILE_HELP)
    .action(async (model: string, outArg: string | undefined, flags: QuantizeFlags) => {
      const out = oneOutput(outArg, flags.output);
      if (!VALID_4BIT_BLOCKSIZES.includes(flags.blocksize))
        throw new Error(`--blocksize must be one of ${VALID_4BIT_BLOCKSIZES.join(', ')}`);
      const modelPath = await localModelPath(
        model,
        flags.ggufFile !== undefined ? { ggufFile: flags.ggufFile } : {},
      );
      const ck = openCheckpoint(modelPath);
      try {
        let vocab = null;
        const warnings: string[] = [];
        if (ck.source !== 'hf' || flags.tokenizer) {
          try {
            vocab = vocabForCheckpoint(ck, flags.tokenizer);
          } catch (e) {
            warnings.push((e as Error).message);
          }
        }
        const r = writeBnb4bitFolder(ck, out, {
          quantization: {
            quantType: flags.quant,
            blocksize: flags.blocksize,
            doubleQuant: flags.doubleQuant,
          },
          dtype: flags.dtype,
          vocab,
        });
        for (const w of [...warnings, ...r.warnings]) process.stderr.write(`warning: ${w}\n`);
        const bits = (8 * r.quantizedBytes) / Math.max(1, r.quantizedParams);
        process.stderr.write(
          `wrote ${out}: ${r.files.join(', ')}; projections ${formatBytes(r.quantizedBytes)} (${bits.toFixed(3)} bits/param)\n`,
        );
      } finally {
        ck.close();
      }
    });
}
