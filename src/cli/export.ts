/**
 * `qlora export` (GGUF model, merged GGUF, GGUF LoRA adapter, merged HF folder / llama2.c) and
 * `qlora convert IN OUT` (between HF folder, GGUF and llama2.c).
 */
import fs from 'node:fs';
import { GGUF_FILE_HELP, localModelPath } from './hub-args.js';
import path from 'node:path';
import { type Command, Option } from 'commander';
import { convertCheckpoint, writeCheckpointAs, type ConvertResult } from '../export/convert.js';
import { exportGgufLora, GGUF_LORA_DTYPES, type GgufLoraDtype } from '../export/gguf-lora.js';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { readAdapterRecipe } from '../io/adapter-recipe.js';
import { loadPeftAdapter, type PeftAdapter } from '../io/peft.js';
import { type Checkpoint, openCheckpoint } from '../io/checkpoint.js';
import {
  MODELFILE,
  OLLAMA_MODEL_FILE,
  checkOllamaFolder,
  ollamaFormatFor,
  writeModelfile,
} from '../export/ollama.js';
import { loadTokenizer, tokenizerPathFor } from '../tokenizer/index.js';
import {
  addBaseOptions,
  type BaseFlags,
  chooseBase,
  oneAdapter,
  resolveModelLocally,
} from './base-options.js';
import { asQuantizedBase } from './merge.js';
import { RECIPE_TARGETS, type RecipeTarget } from '../export/recipe.js';
import {
  ACCELERATE_FSDP_FILE,
  AXOLOTL_FILE,
  AXOLOTL_FSDP_FILE,
  TRL_FILE,
  exportRecipe,
} from './export-recipe.js';
import { choiceOption, collect, oneOutput } from './options.js';

const EXPORT_FORMATS = ['gguf', 'gguf-lora', 'hf', 'llama2c', 'ollama', 'recipe'] as const;
type ExportFormat = (typeof EXPORT_FORMATS)[number];

interface ExportFlags extends BaseFlags {
  model?: string;
  adapter?: string[];
  format: ExportFormat;
  dtype?: string;
  tokenizer?: string;
  name?: string;
  output?: string;
  chatTemplate?: string;
  /** --format recipe: which trainer. */
  to?: RecipeTarget;
  /** The older name of --output (hidden). */
  out?: string;
}

function report(r: ConvertResult): void {
  for (const w of r.warnings) console.error(`warning: ${w}`);
  console.log(`wrote ${r.out} (${r.format})`);
  if (r.format === 'gguf') {
    const file = path.basename(r.out);
    console.log(`llama.cpp: llama-cli -m ${r.out}`);
    console.log(
      `Ollama:    printf 'FROM ./${file}\\n' > Modelfile && ollama create ${file.replace(/\.gguf$/, '')} -f Modelfile`,
    );
  }
}

/** Output path with the extension the format expects (so writeCheckpointAs picks that format). */
function checkExtension(format: ExportFormat, out: string): void {
  const want = {
    gguf: '.gguf',
    'gguf-lora': '.gguf',
    llama2c: '.bin',
    hf: '',
    ollama: '',
    recipe: '',
  }[format];
  if (want && !out.endsWith(want))
    throw new Error(`--output for --format ${format} must end in ${want}`);
  if (
    (format === 'hf' || format === 'ollama' || format === 'recipe') &&
    (out.endsWith('.gguf') || out.endsWith('.bin'))
  )
    throw new Error(`--output for --format ${format} is a folder`);
}

async function exportLora(
  flags: ExportFlags,
  adapterPath: string | undefined,
  out: string,
): Promise<void> {
  if (!adapterPath) throw new Error('--format gguf-lora needs --adapter (a PEFT adapter folder)');
  const adapter = loadPeftAdapter(adapterPath);
  // The base decides the architecture and the Q/K permutation of B.
  const basePath = await resolveModelLocally(
    flags.model,
    adapterPath,
    readAdapterRecipe(adapterPath),
    flags.ggufFile,
  );
  const ck = openCheckpoint(basePath);
  try {
    const dtype = choiceOption<GgufLoraDtype>('--dtype', GGUF_LORA_DTYPES)(flags.dtype ?? 'f32');
    const r = exportGgufLora(adapter, ck.config, out, { dtype, name: flags.name });
    console.log(
      `wrote ${r.out} (GGUF LoRA adapter, ${r.tensors} tensors, base ${path.basename(basePath)})`,
    );
    console.log(`llama.cpp: llama-cli -m <base>.gguf --lora ${r.out}`);
    console.log(
      `Ollama:    a Modelfile with 'FROM <base>.gguf' and 'ADAPTER ./${path.basename(r.out)}'`,
    );
  } finally {
    ck.close();
  }
}

/**
 * --format ollama: model.gguf (the merged GGUF export) and a Modelfile from the chat template that
 * goes into it: --chat-template, else the adapter's, else the model's own.
 */
function exportOllama(
  flags: ExportFlags,
  modelPath: string,
  out: string,
  base: Checkpoint,
  adapter: PeftAdapter | null,
  chatTemplate: string | null,
): void {
  const tokenizerPath = flags.tokenizer ?? tokenizerPathFor(modelPath);
  const tokenizer = loadTokenizer(tokenizerPath, { vocabSize: base.config.vocabSize });
  const template = chatTemplate ?? tokenizer.chatTemplate;
  const origin = flags.chatTemplate
    ? flags.chatTemplate
    : chatTemplate !== null
      ? "the adapter's chat_template.jinja"
      : (tokenizer.chatTemplateFile ?? tokenizerPath);
  const format = ollamaFormatFor(template, tokenizer, origin);
  const created = !fs.existsSync(out);
  fs.mkdirSync(out, { recursive: true });
  try {
    const r = writeCheckpointAs(base, path.join(out, OLLAMA_MODEL_FILE), {
      dtype: flags.dtype,
      tokenizer: flags.tokenizer,
      adapter,
      name: flags.name,
      chatTemplate,
    });
    for (const w of r.warnings) console.error(`warning: ${w}`);
    writeModelfile(out, format);
  } catch (e) {
    // Nothing half-made is left: the files are written atomically, and a folder this export made goes.
    if (created) fs.rmSync(out, { recursive: true, force: true });
    throw e;
  }
  if (!format)
    console.error(
      'warning: the model has no chat template, so the Modelfile has none: Ollama passes prompts through as they are (pass --chat-template NAME to give one)',
    );
  const name = path
    .basename(path.resolve(out))
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, '-');
  console.log(`wrote ${path.join(out, OLLAMA_MODEL_FILE)} and ${path.join(out, MODELFILE)}`);
  console.log(
    `Ollama: ollama create ${name} -f ${path.join(out, MODELFILE)} && ollama run ${name}`,
  );
}

async function exportRecipeCommand(
  flags: ExportFlags,
  runDir: string | undefined,
  out: string,
): Promise<void> {
  if (!runDir)
    throw new Error(
      '--format recipe needs --adapter RUN: the output folder of a qlora train run (it holds config.yaml)',
    );
  if (flags.to === undefined)
    throw new Error(`--format recipe needs --to ${RECIPE_TARGETS.join('|')}`);
  const r = await exportRecipe(runDir, flags.to, out);
  for (const w of r.warnings) console.error(`warning: not carried over: ${w}`);
  console.log(
    `wrote ${out}: ${r.files.join(', ')} (${r.rows.train} training rows${r.rows.valid !== null ? `, ${r.rows.valid} validation rows` : ''}, ${r.rowKind})`,
  );
  console.log(
    flags.to === 'axolotl'
      ? `axolotl: cd ${out} && axolotl train ${AXOLOTL_FILE}   (FSDP-QLoRA: ${AXOLOTL_FSDP_FILE})`
      : `TRL: cd ${out} && accelerate launch --config_file ${ACCELERATE_FSDP_FILE} ${TRL_FILE}   (one GPU: python ${TRL_FILE})`,
  );
}

export function registerExportCommands(program: Command): void {
  const cmd = program
    .command('export')
    .description(
      'export for llama.cpp / Ollama: a GGUF model (merged with --adapter), a GGUF LoRA adapter, or a merged HF folder / llama2.c file',
    )
    .option(
      '-m, --model <path>',
      'base model: HF folder, .gguf, llama2.c .bin or a Hub id org/name[@revision] (default: the base the adapter was trained on)',
    )
    .option(
      '-a, --adapter <dir>',
      'PEFT LoRA adapter folder (merged into the model, or exported alone with --format gguf-lora)',
      collect,
    )
    .option(
      '-f, --format <format>',
      `output format: ${EXPORT_FORMATS.join(', ')} (ollama: a folder with model.gguf and a Modelfile)`,
      choiceOption('--format', EXPORT_FORMATS),
      'gguf',
    )
    .option(
      '--dtype <type>',
      'tensor type (gguf: f32, f16, bf16, q8_0, q4_0, q4_k, default f16; gguf-lora: f32, f16, bf16, default f32; hf: f32, f16, bf16)',
    )
    .option(
      '--tokenizer <path>',
      "vocabulary for the GGUF (.gguf, tokenizer.json or its folder, llama2.c tokenizer.bin); default: the model's own",
    )
    .option('--name <name>', 'general.name written into the GGUF')
    .option(
      '--chat-template <file|name>',
      "tokenizer.chat_template of the GGUF: a Jinja file or a built-in (chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca); default: the one the adapter was trained with, else the model's",
    )
    .option(
      '--to <trainer>',
      `with --format recipe: ${RECIPE_TARGETS.join(' or ')} (the run of --adapter RUN as an axolotl config, or a TRL + PEFT script launched with accelerate)`,
      choiceOption('--to', RECIPE_TARGETS),
    )
    .option('-o, --output <path>', 'output file (.gguf, .bin) or folder (hf, ollama, recipe)')
    .addOption(new Option('--out <path>').hideHelp());
  // With --adapter the weights merge into the base it was trained on (its qlora_config.json), unless --quant says otherwise.
  addBaseOptions(cmd, ['base-quant']);
  cmd.action(async (flags: ExportFlags) => {
    const out = flags.output ?? flags.out;
    if (out === undefined) throw new Error('--output is required (the file or folder to write)');
    const adapterPath = oneAdapter(flags.adapter);
    checkExtension(flags.format, out);
    if (flags.format === 'gguf-lora') return await exportLora(flags, adapterPath, out);
    if (flags.format === 'recipe') return await exportRecipeCommand(flags, adapterPath, out);
    if (flags.to !== undefined) throw new Error('--to goes with --format recipe');
    if (flags.format === 'ollama') checkOllamaFolder(out);
    const adapter = adapterPath ? loadPeftAdapter(adapterPath) : null;
    const { base: quant, recipe } = chooseBase(cmd, flags, adapterPath, (line) =>
      process.stderr.write(`${line}\n`),
    );
    const modelPath = await resolveModelLocally(flags.model, adapterPath, recipe, flags.ggufFile);
    const ck = openCheckpoint(modelPath);
    try {
      const base =
        // A GGUF kept as stored (--quant keep) is the file's dequantized values: the checkpoint itself.
        adapter && quant && quant.quantType !== 'keep'
          ? asQuantizedBase(ck, quant, {
              head: quant.quantizeHead,
              embedding: quant.quantizeEmbeddings,
            })
          : ck;
      // The chat template the adapter was trained with travels into the GGUF, so llama.cpp / Ollama chat in the same format.
      const chatTemplate = flags.chatTemplate
        ? resolveChatTemplate(flags.chatTemplate).source
        : (recipe?.chatTemplate ?? null);
      if (flags.format === 'ollama') {
        exportOllama(flags, modelPath, out, base, adapter, chatTemplate);
        return;
      }
      report(
        writeCheckpointAs(base, out, {
          dtype: flags.dtype,
          tokenizer: flags.tokenizer,
          adapter,
          name: flags.name,
          chatTemplate,
        }),
      );
    } finally {
      ck.close();
    }
  });

  program
    .command('convert')
    .description(
      'convert a model between HF folder, GGUF and llama2.c (format from OUT: *.gguf, *.bin, else a folder)',
    )
    .argument('<input>', 'HF folder, .gguf file or llama2.c .bin')
    .argument('[output]', 'output: *.gguf, *.bin (llama2.c v0) or a folder (HF); or -o')
    .option('-o, --output <path>', 'output: *.gguf, *.bin (llama2.c v0) or a folder (HF)')
    .option(
      '--dtype <type>',
      'tensor type (gguf: f32, f16, bf16, q8_0, q4_0, q4_k, default f16; hf: f32, f16, bf16, default f32)',
    )
    .option('--tokenizer <path>', "vocabulary for a GGUF output (default: the input's own)")
    .option('--gguf-file <pattern>', GGUF_FILE_HELP)
    .action(
      async (
        input: string,
        outArg: string | undefined,
        flags: { dtype?: string; tokenizer?: string; output?: string; ggufFile?: string },
      ) => {
        const output = oneOutput(outArg, flags.output);
        const local = await localModelPath(
          input,
          flags.ggufFile !== undefined ? { ggufFile: flags.ggufFile } : {},
        );
        report(
          convertCheckpoint(local, output, {
            dtype: flags.dtype,
            tokenizer: flags.tokenizer,
          }),
        );
      },
    );
}
