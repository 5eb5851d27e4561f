import { localDataPath } from './hub-args.js';
import {
  BACKEND_CHOICES,
  type BackendChoice,
  COMPUTE_DTYPE_CHOICES,
  type ComputeDtypeChoice,
} from '../backends/index.js';
import type { Command } from 'commander';
import { Batcher } from '../data/batching.js';
import { loadDataset } from '../data/dataset.js';
import { dataOptionsFor } from './data-recipe.js';
import {
  addBaseOptions,
  type BaseFlags,
  buildOptionsOf,
  chooseBase,
  oneAdapter,
  resolveModelLocally,
} from './base-options.js';
import { loadModel } from '../load/load-model.js';
import { choiceOption, collect, formatCount, intOption } from './options.js';

interface EvalFlags extends BaseFlags {
  model?: string;
  data: string;
  tokenizer?: string;
  adapter?: string[];
  seqLen: number;
  batchSize: number;
  format?: 'auto' | 'text' | 'completion' | 'alpaca' | 'chat';
  columns?: string;
  template?: string;
  chatTemplate?: string;
  split: 'train' | 'valid' | 'test' | 'all';
  backend: BackendChoice;
  computeDtype: ComputeDtypeChoice;
  json?: boolean;
}

/**
 * Mean next-token loss (nats) and perplexity of a model (optionally with an adapter) over a data
 * file, counting only loss tokens (completions / assistant turns for those formats).
 */
export function registerEvalCommand(program: Command): void {
  const cmd = program
    .command('eval')
    .description(
      'loss and perplexity of a model (+ adapter) over a dataset file (text, JSONL, CSV, …)',
    )
    .option(
      '-m, --model <path>',
      'model: HF folder, .gguf file, llama2.c .bin or a Hub id org/name[@revision] (default: the base the adapter was trained on)',
    )
    .requiredOption('-d, --data <path>', 'dataset file or folder')
    .option('--tokenizer <path>', 'tokenizer (default: the one next to the model)')
    .option('-a, --adapter <path>', 'LoRA adapter: PEFT folder or GGUF LoRA file', collect)
    .option('--seq-len <n>', 'tokens per sequence', intOption('--seq-len', 8), 512)
    .option('-b, --batch-size <n>', 'sequences per batch', intOption('--batch-size', 1), 4)
    .option(
      '--format <format>',
      'row format: auto, text, completion, alpaca, chat (default: as the adapter was trained, else auto)',
      choiceOption('--format', ['auto', 'text', 'completion', 'alpaca', 'chat'] as const),
    )
    .option(
      '--columns <map>',
      'map dataset columns, e.g. prompt=mr,completion=ref (default: as the adapter was trained)',
    )
    .option(
      '--template <text>',
      'prompt template with {column} placeholders (default: as the adapter was trained)',
    )
    .option(
      '--chat-template <file|name>',
      "chat template: a Jinja file, a tokenizer_config.json, or a built-in (chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca); default: as the adapter was trained, else the model's",
    )
    .option(
      '--split <name>',
      'which split of a folder dataset: train, valid, test, all',
      choiceOption('--split', ['train', 'valid', 'test', 'all'] as const),
      'all',
    )
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
    .option('--json', 'print the result as JSON');
  addBaseOptions(cmd, ['quantize']);
  cmd.action(async (flags: EvalFlags) => {
    const adapterPath = oneAdapter(flags.adapter);
    const { base, recipe } = chooseBase(cmd, flags, adapterPath, (line) =>
      process.stderr.write(`${line}\n`),
    );
    const { model, tokenizer } = await loadModel({
      model: await resolveModelLocally(flags.model, adapterPath, recipe, flags.ggufFile),
      tokenizer: flags.tokenizer,
      adapter: adapterPath,
      backend: flags.backend,
      computeDtype: flags.computeDtype,
      ...buildOptionsOf(base),
      maxPositions: flags.seqLen,
    });
    const data = await loadDataset(await localDataPath(flags.data), tokenizer, {
      maxSeqLen: flags.seqLen,
      ...dataOptionsFor(cmd, flags, recipe, (line) => process.stderr.write(`${line}\n`)),
      validFraction: 0,
    });
    const examples =
      flags.split === 'all'
        ? [...data.train, ...data.valid, ...(data.test ?? [])]
        : flags.split === 'train'
          ? data.train
          : flags.split === 'valid'
            ? data.valid
            : (data.test ?? []);
    if (examples.length === 0)
      throw new Error(`${flags.data}: no examples in split '${flags.split}'`);
    const batcher = new Batcher(examples, {
      batchSize: flags.batchSize,
      seqLen: flags.seqLen,
      shuffle: false,
      padId: tokenizer.padId ?? tokenizer.eosId ?? 0,
    });
    const arena = model.backend.createArena(1 << 22, 'eval');
    const layerArena = model.backend.createArena(1 << 16, 'eval-layer');
    let lossSum = 0;
    let tokens = 0;
    const t0 = performance.now();
    try {
      for (const batch of batcher.epoch(0)) {
        arena.reset();
        const r = await model.lossAndGradients(
          batch,
          arena,
          layerArena,
          {
            training: false,
            stepSeed: 0,
            gradientCheckpointing: false,
            lossChunkRows: 256,
            gradScale: 1,
          },
          false,
        );
        lossSum += r.lossSum;
        tokens += r.tokens;
      }
    } finally {
      arena.dispose();
      layerArena.dispose();
      model.dispose();
    }
    if (tokens === 0) throw new Error(`${flags.data}: no tokens carry loss`);
    const loss = lossSum / tokens;
    const seconds = (performance.now() - t0) / 1000;
    const result = { examples: examples.length, tokens, loss, perplexity: Math.exp(loss), seconds };
    if (flags.json) console.log(JSON.stringify(result));
    else
      console.log(
        `${examples.length} examples, ${formatCount(tokens)} loss tokens: loss ${loss.toFixed(4)} nats/token, perplexity ${result.perplexity.toFixed(3)} (${seconds.toFixed(1)} s)`,
      );
  });
}
