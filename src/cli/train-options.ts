/**
 * The options of a training run, defined once: `qlora train` runs them and `qlora plan` predicts
 * their memory, so both take the same flags with the same defaults — the library's, from
 * src/train/settings.ts (defaults ← --config run.yaml ← flags). Familiar names from Hugging Face / PEFT (--learning-rate, --num-epochs, --lora-r,
 * --lora-alpha, --lora-dropout) are hidden aliases of the short ones.
 */
import { type Command, Option } from 'commander';
import { BACKEND_CHOICES, COMPUTE_DTYPE_CHOICES } from '../backends/index.js';
import { unescapeCommandLine } from '../data/prompt-template.js';
import { GGUF_FILE_HELP } from './hub-args.js';
import { PROJECTIONS } from '../models/llama.js';
import { defaultTrainSettings } from '../train/settings.js';
import { DEFAULT_MAX_CONSECUTIVE_SKIPS } from '../train/trainer.js';
import { choiceOption, floatOption, intOption } from './options.js';
import { DEMO, DEMO_SETTINGS, readConfigFile } from './train-config.js';

/** The library's defaults, quoted in the help (one source: src/train/settings.ts). */
const D = defaultTrainSettings();

/** Hidden alias flag → the setting it sets (and that setting's own flag, for the error when both are given). */
export const TRAIN_FLAG_ALIASES: Readonly<Record<string, { key: string; flag: string }>> = {
  learningRate: { key: 'lr', flag: '--lr' },
  numEpochs: { key: 'epochs', flag: '--epochs' },
  loraR: { key: 'rank', flag: '--rank' },
  loraAlpha: { key: 'alpha', flag: '--alpha' },
  loraDropout: { key: 'dropout', flag: '--dropout' },
};

function list(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function intList(value: string): number[] {
  return list(value).map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--layers: '${s}' is not a layer index`);
    return n;
  });
}

export function addTrainOptions(cmd: Command): Command {
  cmd
    .option(
      '-m, --model <path>',
      'base model: HF folder, .gguf file, llama2.c .bin, or a Hub id org/name[@revision] (from the Hugging Face cache, else downloaded into it)',
    )
    .option(
      '-d, --data <path>',
      'dataset: .jsonl/.json/.csv/.tsv/.txt/.parquet file, a folder with train.*/valid.* (or a Hugging Face dataset folder), or a Hub dataset id org/name[@revision]',
    )
    .option(
      '--split <name>',
      'the split of a Hub dataset (or Hugging Face dataset folder) to train on, e.g. train_sft (default: train)',
    )
    .option('--gguf-file <pattern>', GGUF_FILE_HELP)
    .option(
      '-o, --output <dir>',
      `output folder for the adapter, checkpoints, metrics.jsonl and loss.svg (demo: ${DEMO.output})`,
    )
    .option(
      '-c, --config <file>',
      'YAML file with any of these settings (flags override it); keys like max_steps or max-steps',
    )
    .option('--tokenizer <path>', 'tokenizer (default: the one next to the model)')
    .option('--max-steps <n>', 'optimizer steps to run', intOption('--max-steps', 1))
    .option(
      '--epochs <n>',
      'passes over the training data (instead of --max-steps)',
      floatOption('--epochs', 0),
    )
    .option('--lr <lr>', `peak learning rate (default ${D.lr})`, floatOption('--lr', 0))
    .option(
      '--schedule <kind>',
      `lr schedule: constant, linear, cosine (default ${D.schedule})`,
      choiceOption('--schedule', ['constant', 'linear', 'cosine'] as const),
    )
    .option('--warmup-steps <n>', 'linear warm-up steps', intOption('--warmup-steps', 0))
    .option(
      '--warmup-ratio <r>',
      `warm-up as a fraction of all steps (default ${D.warmupRatio})`,
      floatOption('--warmup-ratio', 0, 1),
    )
    .option('-r, --rank <r>', `LoRA rank (default ${D.rank})`, intOption('--rank', 1))
    .option(
      '--alpha <a>',
      `LoRA alpha; scaling = alpha/rank (default ${D.alpha})`,
      floatOption('--alpha', 0),
    )
    .option(
      '--dropout <p>',
      `LoRA dropout on the adapter input (default ${D.dropout})`,
      floatOption('--dropout', 0, 0.999),
    )
    .option(
      '--targets <list>',
      `projections to adapt: all-linear or a comma list of ${PROJECTIONS.join(',')} (default ${String(D.targets)})`,
    )
    .option('--layers <list>', 'only these layer indices (comma list; default all)')
    .option('--rslora', 'rank-stabilized LoRA: scaling = alpha/sqrt(rank)')
    .option(
      '--init <kind>',
      'LoRA A init: kaiming (PEFT default) or gaussian',
      choiceOption('--init', ['kaiming', 'gaussian'] as const),
    )
    .option(
      '-b, --batch-size <n>',
      `sequences per micro-batch (default ${D.batchSize})`,
      intOption('--batch-size', 1),
    )
    .option(
      '--grad-accum <n>',
      `micro-batches per optimizer step (default ${D.gradAccum})`,
      intOption('--grad-accum', 1),
    )
    .option('--seq-len <n>', `tokens per sequence (default ${D.seqLen})`, intOption('--seq-len', 8))
    .option(
      '--no-packing',
      'one example per row with padding (default: pack several examples per row)',
    )
    .option(
      '--eval-every <n>',
      `evaluate every n steps; 0 = only at the end (default ${D.evalEvery})`,
      intOption('--eval-every', 0),
    )
    .option(
      '--eval-batches <n>',
      `validation batches per evaluation (default ${D.evalBatches})`,
      intOption('--eval-batches', 1),
    )
    .option(
      '--save-every <n>',
      `checkpoint every n steps; 0 = only at the end (default ${D.saveEvery})`,
      intOption('--save-every', 0),
    )
    .option(
      '--keep-checkpoints <k>',
      `keep the newest k checkpoints (default ${D.keepCheckpoints})`,
      intOption('--keep-checkpoints', 1),
    )
    .option(
      '--early-stopping <n>',
      'stop after n evaluations without improvement (default off)',
      intOption('--early-stopping', 0),
    )
    .option(
      '--resume [checkpoint]',
      'continue from the newest checkpoint in --output (or this checkpoint folder)',
    )
    .option(
      '--overwrite',
      'replace the run in a non-empty --output folder (its files are removed first; without it such a folder is refused)',
    )
    .option(
      '--load-best',
      'make the final adapter the one with the lowest eval loss (as HF load_best_model_at_end); checkpoints still hold the last step',
    )
    .option(
      '--optimizer <kind>',
      'adamw (fp32 states) or adamw8bit (bitsandbytes-style 8-bit states)',
      choiceOption('--optimizer', ['adamw', 'adamw8bit'] as const),
    )
    .option(
      '--weight-decay <w>',
      `decoupled weight decay (default ${D.weightDecay})`,
      floatOption('--weight-decay', 0),
    )
    .option(
      '--max-grad-norm <g>',
      `clip the global gradient norm; 0 = off (default ${D.maxGradNorm})`,
      floatOption('--max-grad-norm', 0),
    )
    .option(
      '--seed <n>',
      `seed for initialisation, dropout and data order (default ${D.seed})`,
      intOption('--seed', 0),
    )
    .option(
      '--quant <type>',
      "base weights: nf4 (default), fp4, none (plain LoRA), or keep: a GGUF's own quantization as stored (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K; recommended for a quantized GGUF, which nf4 dequantizes and re-quantizes)",
      choiceOption('--quant', ['nf4', 'fp4', 'none', 'keep'] as const),
    )
    .option(
      '--blocksize <n>',
      `4-bit block size, 32..4096 (default ${D.blocksize})`,
      intOption('--blocksize', 32),
    )
    .option('--no-double-quant', 'keep absmax in fp32 (default: 8-bit double quantization)')
    .option(
      '--quantize-head',
      'store an untied lm_head in 4-bit too (default: embeddings, norms and lm_head stay f32)',
    )
    .option(
      '--quantize-embeddings',
      'store the embedding table in 4-bit too (a tied lm_head shares it)',
    )
    .option(
      '--gradient-checkpointing',
      'recompute layer activations in backward (less memory, ~30% more time)',
    )
    .option(
      '--skip-nonfinite',
      'skip steps with a NaN/Inf loss or gradient instead of stopping (within the limits below)',
    )
    .option(
      '--max-consecutive-skips <n>',
      `with --skip-nonfinite: stop (exit 1) after n skipped steps in a row (default ${DEFAULT_MAX_CONSECUTIVE_SKIPS})`,
      intOption('--max-consecutive-skips', 1),
    )
    .option(
      '--max-skipped-steps <n>',
      'with --skip-nonfinite: stop (exit 1) after n skipped steps in all (default 10% of the steps, at least 5)',
      intOption('--max-skipped-steps', 1),
    )
    .option(
      '--format <format>',
      `row format: auto, text, completion, alpaca, chat (default ${D.format})`,
      choiceOption('--format', ['auto', 'text', 'completion', 'alpaca', 'chat'] as const),
    )
    .option('--columns <map>', 'map dataset columns, e.g. prompt=mr,completion=ref')
    .option('--template <text>', 'prompt template with {column} placeholders')
    .option(
      '--chat-template <file|name>',
      "chat template for chat rows instead of the model's: a Jinja file, a tokenizer_config.json, or a built-in (chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca)",
    )
    .option('--train-on-prompt', 'put loss on prompts and user turns too')
    .option(
      '--valid-fraction <f>',
      `held-out validation fraction when there is no validation file (default ${D.validFraction})`,
      floatOption('--valid-fraction', 0, 0.99),
    )
    .option(
      '--truncation <policy>',
      'over-long examples: drop, truncate-left, truncate-right, split',
      choiceOption('--truncation', ['drop', 'truncate-left', 'truncate-right', 'split'] as const),
    )
    .option('--skip-bad-rows', 'count and skip malformed rows instead of stopping')
    .option(
      '--max-row-bytes <n>',
      `longest dataset row (JSONL line, CSV record, JSON element, text document) in bytes; longer rows are bad rows (default ${D.maxRowBytes})`,
      intOption('--max-row-bytes', 1),
    )
    .option(
      '--force',
      "train even when the plan exceeds this machine's memory or most examples lose their loss tokens to --seq-len",
    )
    .option(
      '--backend <name>',
      'compute backend: cpu (default), webgpu (GPU), auto (a hardware GPU when present, else cpu) or ref',
      choiceOption('--backend', BACKEND_CHOICES),
    )
    .option(
      '--compute-dtype <type>',
      'auto (default: bf16 where the CPU has AVX512_BF16, else f32), bf16, f32 or f16: precision of the frozen-base 4-bit matmuls, f32 accumulation (bf16: cpu with AVX512_BF16; f16: webgpu with shader-f16); LoRA, norms, loss and optimizer stay f32',
      choiceOption('--compute-dtype', COMPUTE_DTYPE_CHOICES),
    )
    .option('--sample-prompt <text>', 'print a sample for this prompt before and after training')
    .option(
      '--sample-tokens <n>',
      'tokens in each sample (default 64)',
      intOption('--sample-tokens', 0),
    );
  cmd
    .addOption(
      new Option('--learning-rate <lr>').hideHelp().argParser(floatOption('--learning-rate', 0)),
    )
    .addOption(new Option('--num-epochs <n>').hideHelp().argParser(floatOption('--num-epochs', 0)))
    .addOption(new Option('--lora-r <r>').hideHelp().argParser(intOption('--lora-r', 1)))
    .addOption(new Option('--lora-alpha <a>').hideHelp().argParser(floatOption('--lora-alpha', 0)))
    .addOption(
      new Option('--lora-dropout <p>')
        .hideHelp()
        .argParser(floatOption('--lora-dropout', 0, 0.999)),
    );
  return cmd;
}

export interface TrainSettings {
  /** Defaults (the demo's when no model and data are named) ← the config file ← flags, not yet validated. */
  readonly values: Record<string, unknown>;
  /** YAML key as written, per setting that came from the config file (errors name it). */
  readonly fileKeys: ReadonlyMap<string, string>;
  readonly demo: boolean;
  /** The config file, or 'options'. */
  readonly source: string;
}

/** The settings given on the command line (commander's defaults do not count) merged over the config file. */
export function trainSettings(cmd: Command, flags: Record<string, unknown>): TrainSettings {
  const fromCli: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(flags)) {
    if (key === 'config' || cmd.getOptionValueSource(key) !== 'cli') continue;
    const alias = TRAIN_FLAG_ALIASES[key];
    const target = alias ? alias.key : key;
    if (alias && cmd.getOptionValueSource(alias.key) === 'cli')
      throw new Error(
        `give ${alias.flag} or --${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}, not both`,
      );
    if (target === 'targets')
      fromCli.targets = value === 'all-linear' ? 'all-linear' : list(String(value));
    else if (target === 'layers') fromCli.layers = intList(String(value));
    else if (target === 'template') fromCli.template = unescapeCommandLine(String(value));
    else fromCli[target] = value;
  }
  // --no-packing / --no-double-quant default to true in commander: only an explicit flag counts (above).
  const file =
    typeof flags.config === 'string'
      ? readConfigFile(flags.config)
      : { values: {}, keys: new Map<string, string>() };
  const demo =
    fromCli.model === undefined &&
    fromCli.data === undefined &&
    file.values.model === undefined &&
    file.values.data === undefined;
  const values = { ...(demo ? DEMO_SETTINGS : {}), ...file.values, ...fromCli };
  const fileKeys = new Map([...file.keys].filter(([k]) => !(k in fromCli)));
  return {
    values,
    fileKeys,
    demo,
    source: typeof flags.config === 'string' ? flags.config : 'options',
  };
}
