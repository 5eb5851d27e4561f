import type { Command } from 'commander';
import { GGUF_DTYPES } from '../export/gguf-model.js';
import { initRandomModel } from '../export/init-random.js';
import { HF_DTYPES } from '../export/hf-writer.js';
import { FAMILIES } from '../models/registry.js';
import { NAMED_SHAPES } from '../train/plan-shapes.js';
import { choiceOption, formatCount, intOption } from './options.js';
import { parameterCounts } from './info.js';

interface InitRandomFlags {
  config: string;
  output: string;
  format: 'hf' | 'gguf';
  seed: number;
  tiny?: boolean;
  dtype?: string;
}

export function registerInitRandomCommand(program: Command): void {
  program
    .command('init-random')
    .description(
      'write a model of a real family and shape with seeded random weights (and a tokenizer): for benchmarks and tests',
    )
    .requiredOption(
      '--config <config>',
      `config.json, a shape (${NAMED_SHAPES.join(', ')}) or a family (${FAMILIES.map((f) => f.name).join(', ')})`,
    )
    .requiredOption('-o, --output <dir>', 'output folder (new or empty)')
    .option(
      '--format <format>',
      'hf or gguf',
      choiceOption('--format', ['hf', 'gguf'] as const),
      'hf',
    )
    .option('--seed <n>', 'weights seed', intOption('--seed', 0), 1234)
    .option(
      '--tiny',
      "the family's structure at 2 layers (Gemma 3: its 6-layer local/global pattern), hidden ≈ 64, vocabulary 512 (trains in seconds)",
    )
    .option(
      '--dtype <dtype>',
      `tensor type: HF ${HF_DTYPES.join('/')}, GGUF ${GGUF_DTYPES.join('/')} (default f32)`,
    )
    .action((flags: InitRandomFlags) => {
      const allowed: readonly string[] = flags.format === 'gguf' ? GGUF_DTYPES : HF_DTYPES;
      if (flags.dtype !== undefined && !allowed.includes(flags.dtype))
        throw new Error(
          `--dtype ${flags.dtype}: choose ${allowed.join(', ')} for --format ${flags.format}`,
        );
      const r = initRandomModel({
        config: flags.config,
        output: flags.output,
        format: flags.format,
        seed: flags.seed,
        tiny: flags.tiny ?? false,
        dtype: flags.dtype,
      });
      for (const w of r.warnings) console.error(`warning: ${w}`);
      const k = parameterCounts(r.config);
      const total = k.embedding + k.attention + k.mlp + k.norms + k.lmHead;
      const c = r.config;
      console.log(
        `${r.model}: ${c.architecture} from ${r.source}${flags.tiny ? ' (tiny)' : ''}, ${c.numLayers} layers, hidden ${c.hiddenSize}, vocabulary ${c.vocabSize}, ${formatCount(total)} parameters, seed ${flags.seed}`,
      );
    });
}
