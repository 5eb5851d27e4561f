import { GGUF_FILE_HELP, localDataPath, localModelPath } from './hub-args.js';
import fs from 'node:fs';
import path from 'node:path';
import { type Command, Option } from 'commander';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { parseColumnMapping } from '../data/columns.js';
import { loadDataset } from '../data/dataset.js';
import { RowError, UnknownFormatError } from '../data/errors.js';
import { ROW_FORMATS, type RowFormat } from '../data/formats.js';
import { BRACKET_STYLE, DIM_STYLE, inspectReport } from '../data/inspect.js';
import { PromptTemplate, unescapeCommandLine } from '../data/prompt-template.js';
import { TRUNCATION_POLICIES, type TruncationPolicy } from '../data/truncate.js';
import { loadTokenizer, tokenizerPathFor } from '../tokenizer/index.js';
import { choiceOption, floatOption, intOption } from './options.js';
import { DEFAULT_SEQ_LEN } from '../train/settings.js';

interface InspectFlags {
  model: string;
  data?: string;
  split?: string;
  ggufFile?: string;
  tokenizer?: string;
  format: RowFormat | 'auto';
  columns?: string;
  template?: string;
  chatTemplate?: string;
  seqLen?: number;
  /** The older name of --seq-len (hidden). */
  maxSeqLen?: number;
  truncation?: TruncationPolicy;
  trainOnPrompt?: boolean;
  skipBadRows?: boolean;
  maxRowBytes?: number;
  separator?: string;
  validFraction: number;
  seed: number;
  show: number;
  maxRows?: number;
  color: boolean;
}

/** `qlora data …`: look at a dataset the way training will see it. */
export function registerDataCommands(program: Command): void {
  const data = program
    .command('data')
    .description('dataset tools: see how your data becomes training examples');
  data
    .command('inspect')
    .description(
      'load a dataset as training would and report: detected format, example counts, token lengths, ' +
        'the share of tokens that carry loss, truncation, and the first examples with the masked part marked',
    )
    .argument(
      '[path]',
      'dataset: .jsonl/.json/.csv/.tsv/.txt/.parquet file, a folder with train.* (valid.*, test.*) or a Hugging Face dataset folder, or a Hub dataset id org/name[@revision]',
    )
    .option('-d, --data <path>', "the dataset, as train's -d names it (instead of the argument)")
    .requiredOption(
      '-m, --model <path>',
      'model or tokenizer: HF folder (tokenizer.json), .gguf, llama2.c checkpoint/tokenizer, or a Hub model id (its config and tokenizer files)',
    )
    .option('--tokenizer <path>', 'tokenizer, when it is not next to the model')
    .option(
      '--split <name>',
      'the split of a Hub dataset (or HF dataset folder) to inspect as train',
    )
    .option('--gguf-file <pattern>', GGUF_FILE_HELP)
    .option(
      '--format <format>',
      `row format: auto, ${ROW_FORMATS.join(', ')}`,
      choiceOption('--format', ['auto', ...ROW_FORMATS] as const),
      'auto',
    )
    .option('--columns <map>', 'use other columns as fields, e.g. prompt=mr,completion=ref')
    .option(
      '--template <text>',
      'prompt template with {column} placeholders, e.g. "Target: {ref}\\nMeaning representation:"',
    )
    .option(
      '--chat-template <file|name>',
      "chat template instead of the model's: a Jinja file, a tokenizer_config.json, or a built-in (chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca)",
    )
    .option(
      '--seq-len <n>',
      `longest example in tokens, as train's --seq-len (default ${DEFAULT_SEQ_LEN})`,
      intOption('--seq-len', 2),
    )
    .addOption(new Option('--max-seq-len <n>').hideHelp().argParser(intOption('--max-seq-len', 2)))
    .option(
      '--truncation <policy>',
      `longer examples: ${TRUNCATION_POLICIES.join(', ')} (default: split for text, truncate-right otherwise)`,
      choiceOption('--truncation', TRUNCATION_POLICIES),
    )
    .option('--train-on-prompt', 'put loss on prompts and user turns too')
    .option('--skip-bad-rows', 'skip rows that cannot be used (and count them) instead of stopping')
    .option(
      '--max-row-bytes <n>',
      'longest row (JSONL line, CSV record, JSON element, text document) in bytes; longer rows are bad rows (default 1048576)',
      intOption('--max-row-bytes', 1),
    )
    .option(
      '--separator <text>',
      'plain text: split documents at this string (e.g. "\\n\\n"); default one document per file',
    )
    .option(
      '--valid-fraction <f>',
      'held out for validation when there is no validation file',
      floatOption('--valid-fraction', 0, 0.99),
      0.05,
    )
    .option('--seed <n>', 'seed for the validation split', intOption('--seed', 0), 42)
    .option('--show <n>', 'rendered examples to print', intOption('--show', 0), 3)
    .option('--max-rows <n>', 'read at most this many rows per split', intOption('--max-rows', 1))
    .option('--no-color', 'mark masked text with ⟦brackets⟧ instead of dim')
    .action(async (pathArg: string | undefined, flags: InspectFlags) => {
      if (pathArg !== undefined && flags.data !== undefined && pathArg !== flags.data)
        throw new Error(`give the dataset once: as the argument or as -d, not both`);
      const dataPath = pathArg ?? flags.data;
      if (dataPath === undefined)
        throw new Error('which dataset? qlora data inspect PATH -m MODEL (or -d PATH)');
      if (flags.seqLen !== undefined && flags.maxSeqLen !== undefined)
        throw new Error('give --seq-len or --max-seq-len, not both');
      const seqLen = flags.seqLen ?? flags.maxSeqLen ?? DEFAULT_SEQ_LEN;
      const tokenizerPath =
        flags.tokenizer ??
        resolveTokenizerPath(
          await localModelPath(
            flags.model,
            flags.ggufFile !== undefined ? { ggufFile: flags.ggufFile } : { parts: 'tokenizer' },
          ),
        );
      const tokenizer = loadTokenizer(tokenizerPath);
      let loaded;
      try {
        loaded = await loadDataset(
          await localDataPath(dataPath, { split: flags.split }),
          tokenizer,
          {
            maxSeqLen: seqLen,
            ...(flags.split !== undefined ? { split: flags.split } : {}),
            format: flags.format,
            ...(flags.columns ? { columns: parseColumnMapping(flags.columns) } : {}),
            ...(flags.template !== undefined
              ? { promptTemplate: new PromptTemplate(unescapeCommandLine(flags.template)) }
              : {}),
            ...(flags.chatTemplate ? templateOptions(resolveChatTemplate(flags.chatTemplate)) : {}),
            ...(flags.truncation ? { truncation: flags.truncation } : {}),
            trainOnPrompt: flags.trainOnPrompt ?? false,
            skipBadRows: flags.skipBadRows ?? false,
            ...(flags.maxRowBytes !== undefined ? { maxRowBytes: flags.maxRowBytes } : {}),
            ...(flags.separator !== undefined
              ? { text: { separator: unescapeCommandLine(flags.separator) } }
              : {}),
            validFraction: flags.validFraction,
            seed: flags.seed,
            ...(flags.maxRows !== undefined ? { maxRows: flags.maxRows } : {}),
          },
        );
      } catch (err) {
        if (err instanceof RowError && !(err instanceof UnknownFormatError)) {
          throw new Error(
            `${err.message}\n(fix the row, or pass --skip-bad-rows to skip such rows and count them)`,
          );
        }
        throw err;
      }
      const style = flags.color && process.stdout.isTTY ? DIM_STYLE : BRACKET_STYLE;
      const lines = inspectReport(loaded, tokenizer, {
        path: dataPath,
        tokenizerPath,
        formatWasGiven: flags.format !== 'auto' || flags.template !== undefined,
        maxSeqLen: seqLen,
        show: flags.show,
        style,
      });
      console.log(lines.join('\n'));
    });
}

/** A model folder / file, or a tokenizer folder / file, to the tokenizer to load. */
function resolveTokenizerPath(model: string): string {
  if (
    fs.existsSync(model) &&
    fs.statSync(model).isDirectory() &&
    fs.existsSync(path.join(model, 'tokenizer.json'))
  )
    return model;
  return tokenizerPathFor(model);
}

/** A resolved --chat-template as dataset options (its name labels errors raised inside it). */
function templateOptions(t: { name: string; source: string }): {
  chatTemplate: string;
  chatTemplateFile: string;
} {
  return { chatTemplate: t.source, chatTemplateFile: t.name };
}
