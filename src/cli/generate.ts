import { localDataPath } from './hub-args.js';
import {
  BACKEND_CHOICES,
  type BackendChoice,
  COMPUTE_DTYPE_CHOICES,
  type ComputeDtypeChoice,
} from '../backends/index.js';
import readline from 'node:readline';
import type { Command } from 'commander';
import {
  addBaseOptions,
  type BaseFlags,
  buildOptionsOf,
  chooseBase,
  oneAdapter,
  resolveModelLocally,
} from './base-options.js';
import { ChatTemplate, type ChatMessage } from '../data/chat-template.js';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { generate, type GenerateOptions } from '../generate/generate.js';
import { dataOptionsFor } from './data-recipe.js';
import { loadModel } from '../load/load-model.js';
import { predictDataset } from './predict.js';
import { choiceOption, collect, floatOption, intOption } from './options.js';

interface GenerateFlags extends BaseFlags {
  model?: string;
  tokenizer?: string;
  adapter?: string[];
  prompt?: string;
  chat?: boolean;
  system?: string;
  chatTemplate?: string;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  seed: number;
  stop: string[];
  bos: boolean;
  backend: BackendChoice;
  computeDtype: ComputeDtypeChoice;
  stats: boolean;
  data?: string;
  split?: 'train' | 'valid' | 'test';
  output?: string;
  format?: 'auto' | 'text' | 'completion' | 'alpaca' | 'chat';
  columns?: string;
  template?: string;
}

export function registerGenerateCommand(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate text from a model (and optionally a LoRA adapter), streaming to stdout')
    .option(
      '-m, --model <path>',
      'model: HF folder, .gguf file, llama2.c .bin or a Hub id org/name[@revision] (default: the base the adapter was trained on)',
    )
    .option('--tokenizer <path>', 'tokenizer (default: the one next to the model)')
    .option('-a, --adapter <path>', 'LoRA adapter: PEFT folder or GGUF LoRA file', collect)
    .option('-p, --prompt <text>', 'prompt text (default: empty, i.e. start from BOS)')
    .option('--chat', "interactive chat using the model's chat template (reads lines from stdin)")
    .option('--system <text>', 'system message for --chat')
    .option(
      '--chat-template <file|name>',
      "chat template for --chat: a Jinja file, a tokenizer_config.json, or a built-in (chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca); default: as the adapter was trained, else the model's",
    )
    .option('-n, --max-tokens <n>', 'maximum new tokens', intOption('--max-tokens', 1), 256)
    .option(
      '-t, --temperature <t>',
      'sampling temperature (0 = greedy)',
      floatOption('--temperature', 0),
      0.8,
    )
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', intOption('--top-k', 0), 40)
    .option(
      '--top-p <p>',
      'nucleus sampling threshold (1 = off)',
      floatOption('--top-p', 0, 1),
      0.95,
    )
    .option(
      '--min-p <p>',
      'drop tokens below p × the top probability (0 = off)',
      floatOption('--min-p', 0, 1),
      0,
    )
    .option(
      '--repetition-penalty <r>',
      'penalty for tokens already in the context (1 = off)',
      floatOption('--repetition-penalty', 0),
      1,
    )
    .option('-s, --seed <n>', 'random seed', intOption('--seed', 0), 0)
    .option('--stop <text>', 'stop when this text appears (repeatable)', collect, [])
    .option('--no-bos', 'do not prepend BOS to the prompt')
    .option(
      '--backend <name>',
      'compute backend: cpu, webgpu (GPU), auto (a hardware GPU when present, else cpu) or ref',
      choiceOption('--backend', BACKEND_CHOICES),
      'cpu',
    )
    .option(
      '--compute-dtype <type>',
      'auto (default: bf16 where the CPU has AVX512_BF16, else f32), bf16, f32 or f16: precision of the frozen-base 4-bit matmuls, f32 accumulation (bf16: cpu with AVX512_BF16; f16: webgpu with shader-f16); LoRA, norms, loss and optimizer stay f32',
      choiceOption('--compute-dtype', COMPUTE_DTYPE_CHOICES),
      'auto',
    )
    .option('--stats', 'print tokens/s to stderr at the end')
    .option(
      '--data <path>',
      'predict every row of a dataset (file or folder) instead of one prompt: prompts rendered as in training, greedy unless --temperature',
    )
    .option(
      '--split <name>',
      'with --data and a folder: train, valid or test (default: test, else valid, else train)',
      choiceOption('--split', ['train', 'valid', 'test'] as const),
    )
    .option(
      '-o, --output <file>',
      'with --data: JSONL file for {prompt, prediction, reference} per row (default: stdout)',
    )
    .option(
      '--format <format>',
      'with --data: row format (default: as the adapter was trained, else auto)',
      choiceOption('--format', ['auto', 'text', 'completion', 'alpaca', 'chat'] as const),
    )
    .option(
      '--columns <map>',
      'with --data: map dataset columns, e.g. prompt=mr,completion=ref (default: as the adapter was trained)',
    )
    .option(
      '--template <text>',
      'with --data: prompt template with {column} placeholders (default: as the adapter was trained)',
    );
  addBaseOptions(cmd, ['quantize']);
  cmd.action(async (flags: GenerateFlags) => {
    if (
      [flags.chat, flags.prompt !== undefined, flags.data !== undefined].filter(Boolean).length > 1
    )
      throw new Error('use one of --prompt, --chat and --data');
    if (flags.data === undefined) {
      for (const key of ['split', 'output', 'format', 'columns', 'template'] as const) {
        if (flags[key] !== undefined) throw new Error(`--${key} goes with --data`);
      }
    }
    const adapterPath = oneAdapter(flags.adapter);
    const { base, recipe } = chooseBase(cmd, flags, adapterPath, (line) =>
      process.stderr.write(`${line}\n`),
    );
    const { model, tokenizer, checkpoint } = await loadModel({
      model: await resolveModelLocally(flags.model, adapterPath, recipe, flags.ggufFile),
      tokenizer: flags.tokenizer,
      adapter: adapterPath,
      backend: flags.backend,
      computeDtype: flags.computeDtype,
      ...buildOptionsOf(base),
    });
    const arena = model.backend.createArena(1 << 22, 'generate');
    const options: GenerateOptions = {
      maxTokens: flags.maxTokens,
      temperature: flags.temperature,
      topK: flags.topK,
      topP: flags.topP,
      minP: flags.minP,
      repetitionPenalty: flags.repetitionPenalty,
      seed: flags.seed,
      stopStrings: flags.stop,
    };
    if (flags.data !== undefined) {
      try {
        await predictDataset(
          model,
          tokenizer,
          {
            data: await localDataPath(flags.data),
            split: flags.split,
            output: flags.output ?? null,
            recipe: dataOptionsFor(cmd, flags, recipe, (line) => process.stderr.write(`${line}\n`)),
            // Predictions are greedy unless a temperature is asked for.
            generation: {
              ...options,
              temperature:
                cmd.getOptionValueSource('temperature') === 'cli' ? flags.temperature : 0,
            },
            contextLength: checkpoint.config.maxPositionEmbeddings,
          },
          (line) => process.stderr.write(`${line}\n`),
        );
      } finally {
        arena.dispose();
        model.dispose();
      }
      return;
    }
    const write = (s: string) => process.stdout.write(s);
    const report = (r: {
      tokens: number[];
      promptTokens: number;
      prefillSeconds: number;
      decodeSeconds: number;
    }) => {
      if (!flags.stats) return;
      const pp = r.promptTokens / Math.max(r.prefillSeconds, 1e-9);
      const tg = Math.max(r.tokens.length - 1, 0) / Math.max(r.decodeSeconds, 1e-9);
      process.stderr.write(
        `\n[prompt ${r.promptTokens} tokens, ${pp.toFixed(1)} tok/s; generated ${r.tokens.length} tokens, ${tg.toFixed(1)} tok/s]\n`,
      );
    };
    try {
      if (!flags.chat) {
        const text = flags.prompt ?? '';
        let ids = tokenizer.encode(text, { addSpecialTokens: false });
        if (flags.bos && tokenizer.bosId !== null) ids = [tokenizer.bosId, ...ids];
        if (ids.length === 0)
          throw new Error('empty prompt and the tokenizer has no BOS token: give --prompt');
        write(text);
        const r = await generate(model, tokenizer, ids, arena, options, (s) => write(s.text));
        write('\n');
        report(r);
        return;
      }
      const chosen =
        flags.chatTemplate !== undefined ? resolveChatTemplate(flags.chatTemplate) : null;
      const source = chosen?.source ?? recipe?.chatTemplate ?? tokenizer.chatTemplate;
      if (!source)
        throw new Error(
          'this model has no chat template: pass --chat-template FILE|NAME (e.g. chatml), or use --prompt',
        );
      // Errors inside the template name where it came from: the file given, or the model's tokenizer files.
      const file = chosen
        ? chosen.name
        : recipe?.chatTemplate
          ? undefined
          : tokenizer.chatTemplateFile;
      const template = new ChatTemplate(source, {
        bosToken: tokenizer.bosToken,
        eosToken: tokenizer.eosToken,
        ...(file !== undefined ? { file } : {}),
      });
      const history: ChatMessage[] = flags.system
        ? [{ role: 'system', content: flags.system }]
        : [];
      const rl = readline.createInterface({
        input: process.stdin,
        output: process.stdout,
        terminal: process.stdin.isTTY,
      });
      if (process.stdin.isTTY) write('chat — empty line or Ctrl-D to quit\n> ');
      for await (const line of rl) {
        if (line.trim() === '') break;
        history.push({ role: 'user', content: line });
        const rendered = template.render(history, true);
        const ids = tokenizer.encode(rendered, { addSpecialTokens: false });
        const r = await generate(
          model,
          tokenizer,
          ids,
          arena,
          { ...options, contextLength: ids.length + flags.maxTokens },
          (s) => write(s.text),
        );
        history.push({ role: 'assistant', content: r.text });
        write('\n');
        report(r);
        if (process.stdin.isTTY) write('> ');
      }
      rl.close();
    } finally {
      arena.dispose();
      model.dispose();
    }
  });
}
