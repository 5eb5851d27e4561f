/**
 * The base model and how it is quantized, for every command that runs or merges an adapter
 * (generate, eval, export, merge): by default the base the adapter was trained on, as its
 * qlora_config.json records it, so inference sees the weights the adapter learned to correct.
 * Flags override each part; train names them the same way (--quant, --blocksize, ...).
 */
import fs from 'node:fs';
import path from 'node:path';
import { type Command, Option } from 'commander';
import {
  type AdapterRecipe,
  type BaseQuantization,
  RECIPE_FILE,
  describeBase,
  readAdapterRecipe,
} from '../io/adapter-recipe.js';
import { ADAPTER_CONFIG } from '../io/peft.js';
import type { Quantize4bitOptions } from '../quant/quantize4bit.js';
import { choiceOption, intOption } from './options.js';
import { GGUF_FILE_HELP, isHubModelId, localModelPath } from './hub-args.js';
import { recipeModelPath } from './recipe.js';

export const QUANT_CHOICES = ['nf4', 'fp4', 'none', 'keep'] as const;
export type QuantChoice = (typeof QUANT_CHOICES)[number];

/** The flags addBaseOptions defines, as commander hands them over. */
export interface BaseFlags {
  quant?: QuantChoice;
  /** Older names of --quant, kept working (hidden). */
  quantize?: QuantChoice;
  baseQuant?: QuantChoice;
  blocksize?: number;
  doubleQuant?: boolean;
  quantizeHead?: boolean;
  quantizeEmbeddings?: boolean;
  /** With a Hub model id: which GGUF file of the repository. */
  ggufFile?: string;
}

/** Adds --quant (with the hidden older names given) and the parts of the 4-bit base. */
export function addBaseOptions(
  cmd: Command,
  hiddenAliases: readonly ('quantize' | 'base-quant')[] = [],
): Command {
  cmd
    .option(
      '--quant <type>',
      "base weights: nf4, fp4, none, or keep (a GGUF's own quantization as stored) (default: the base the adapter was trained on, else none)",
      choiceOption('--quant', QUANT_CHOICES),
    )
    .option(
      '--blocksize <n>',
      '4-bit block size (default: as trained, else 64)',
      intOption('--blocksize', 32),
    )
    .option(
      '--no-double-quant',
      'keep absmax in fp32 (default: as trained, else 8-bit double quantization)',
    )
    .option('--quantize-head', 'an untied lm_head in 4-bit too (default: as trained)')
    .option('--quantize-embeddings', 'the embedding table in 4-bit too (default: as trained)')
    .option('--gguf-file <pattern>', GGUF_FILE_HELP);
  for (const alias of hiddenAliases)
    cmd.addOption(
      new Option(`--${alias} <type>`)
        .hideHelp()
        .argParser(choiceOption(`--${alias}`, QUANT_CHOICES)),
    );
  return cmd;
}

/** commander keeps only the last of a repeated option; one adapter at a time is all the engine applies. */
export function oneAdapter(values: string | string[] | undefined): string | undefined {
  if (values === undefined) return undefined;
  const list = Array.isArray(values) ? values : [values];
  if (list.length > 1)
    throw new Error(
      `give one --adapter (got ${list.length}: ${list.join(', ')}); applying several adapters at once is not supported`,
    );
  return list[0];
}

export interface BaseChoice {
  /** The base to build: null = full precision. */
  readonly base: BaseQuantization | null;
  readonly recipe: AdapterRecipe | null;
}

/**
 * Each part of the base from its flag when given, else from the adapter's recipe, else the
 * full-precision default; says in one line (via `log`) what was chosen when an adapter recorded its base.
 */
export function chooseBase(
  cmd: Command,
  flags: BaseFlags,
  adapterPath: string | undefined,
  log: (line: string) => void,
): BaseChoice {
  const recipe = adapterPath ? readAdapterRecipe(adapterPath) : null;
  const explicit = (key: string) => cmd.getOptionValueSource(key) === 'cli';
  const quantFlag = flags.quant ?? flags.quantize ?? flags.baseQuant;
  const recorded = recipe?.quantization ?? null;
  const quant: QuantChoice = quantFlag ?? (recipe ? (recorded?.quantType ?? 'none') : 'none');
  const trained = recorded?.quantType === 'keep' ? null : recorded;
  const base: BaseQuantization | null =
    quant === 'none'
      ? null
      : quant === 'keep'
        ? {
            quantType: 'keep',
            tensorTypes: recorded?.quantType === 'keep' ? recorded.tensorTypes : {},
          }
        : {
            quantType: quant,
            blocksize: explicit('blocksize') ? flags.blocksize! : (trained?.blocksize ?? 64),
            doubleQuant: explicit('doubleQuant')
              ? flags.doubleQuant !== false
              : (trained?.doubleQuant ?? true),
            quantizeHead: flags.quantizeHead ?? trained?.quantizeHead ?? false,
            quantizeEmbeddings: flags.quantizeEmbeddings ?? trained?.quantizeEmbeddings ?? false,
          };
  if (recipe && adapterPath) {
    const where = path.join(adapterPath, RECIPE_FILE);
    const same = JSON.stringify(base) === JSON.stringify(recorded);
    log(
      same
        ? `base: ${describeBase(base)}, as the adapter was trained (${where}); --quant ${base ? 'none' : 'nf4'} to change it`
        : `base: ${describeBase(base)} as asked, but the adapter was trained on ${describeBase(recorded)} (${where}): expect different outputs`,
    );
  } else if (adapterPath && quantFlag === undefined) {
    log(
      `base: ${describeBase(base)} (the adapter records no base quantization; pass --quant nf4 if it was trained on a 4-bit base)`,
    );
  }
  return { base, recipe };
}

/** Build options of a chosen base, as loadModel takes them. */
export function buildOptionsOf(base: BaseQuantization | null): {
  quantization: Quantize4bitOptions | null;
  quantizeHead: boolean;
  quantizeEmbedding: boolean;
  keepQuantized: boolean;
} {
  if (base?.quantType === 'keep')
    return {
      quantization: null,
      quantizeHead: false,
      quantizeEmbedding: false,
      keepQuantized: true,
    };
  return {
    keepQuantized: false,
    quantization: base
      ? { quantType: base.quantType, blocksize: base.blocksize, doubleQuant: base.doubleQuant }
      : null,
    quantizeHead: base?.quantizeHead ?? false,
    quantizeEmbedding: base?.quantizeEmbeddings ?? false,
  };
}

/**
 * --model when given, else the local base the adapter records (qlora_config.json, then
 * adapter_config.json's base_model_name_or_path when that is a path on this machine).
 */
export function resolveModelPath(
  model: string | undefined,
  adapterPath: string | undefined,
  recipe: AdapterRecipe | null,
): string {
  if (model !== undefined) return model;
  const candidates: string[] = [];
  if (recipe?.baseModelPath) candidates.push(recipe.baseModelPath);
  // The run's config.yaml beside a final adapter records the model too.
  const fromRunConfig = adapterPath ? recipeModelPath(adapterPath) : null;
  if (fromRunConfig) candidates.push(fromRunConfig);
  if (adapterPath && fs.existsSync(path.join(adapterPath, ADAPTER_CONFIG))) {
    try {
      const name = (
        JSON.parse(fs.readFileSync(path.join(adapterPath, ADAPTER_CONFIG), 'utf8')) as {
          base_model_name_or_path?: unknown;
        }
      ).base_model_name_or_path;
      if (typeof name === 'string') candidates.push(name);
    } catch {
      // loading the adapter reports a broken adapter_config.json with its own message
    }
  }
  // A Hub id (org/name[@revision]) counts: it is found through the Hugging Face cache.
  const found = candidates.find((c) => fs.existsSync(c) || isHubModelId(c));
  if (found) return found;
  throw new Error(
    adapterPath
      ? `pass --model: the adapter's base model${candidates.length ? ` (${candidates.join(', ')})` : ''} is not a local path`
      : '--model is required',
  );
}

/**
 * resolveModelPath, then a Hub id to its snapshot in the Hugging Face cache (downloaded when
 * missing; --gguf-file picks one GGUF file of the repository).
 */
export async function resolveModelLocally(
  model: string | undefined,
  adapterPath: string | undefined,
  recipe: AdapterRecipe | null,
  ggufFile: string | undefined,
): Promise<string> {
  return await localModelPath(
    resolveModelPath(model, adapterPath, recipe),
    ggufFile !== undefined ? { ggufFile } : {},
  );
}
