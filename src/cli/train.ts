import { BACKEND_CHOICES } from '../backends/index.js';
import path from 'node:path';
import type { Command } from 'commander';
import { Batcher } from '../data/batching.js';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { parseColumnMapping } from '../data/columns.js';
import { loadDataset } from '../data/dataset.js';
import { lengthAdvice } from '../data/length-advice.js';
import { PromptTemplate, unescapeCommandLine } from '../data/prompt-template.js';
import { generate } from '../generate/generate.js';
import { type LoraConfig, resolveTargets } from '../models/build.js';
import { checkLoraRank } from '../models/lora-rank.js';
import type { LlamaModel, ModelBatch } from '../models/llama.js';
import { PROJECTIONS, type ProjectionName } from '../models/llama.js';
import type { Tokenizer } from '../tokenizer/types.js';
import { Trainer } from '../train/trainer.js';
import { warmupSteps } from '../train/schedule.js';
import { loadModel } from './load-model.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { prepareOutputDir } from '../train/output-dir.js';
import { modelCard, modelName, writeRecipe } from './recipe.js';
import { printTrainingPlan, releaseBuildGarbage } from '../train/plan.js';
import { choiceOption, floatOption, formatBytes, formatCount, intOption } from './options.js';
import { ProgressLine, bar, duration } from './progress.js';
import { DEMO, readConfigFile, resolveTrainConfig, type TrainConfig } from './train-config.js';

/** Rows of logits alive at once in the loss. */
const LOSS_CHUNK_ROWS = 256;

/** Settings of the embedded demo (`qlora train` with no model and no data). */
const DEMO_SETTINGS: Partial<TrainConfig> = {
  model: DEMO.model,
  data: DEMO.data,
  output: DEMO.output,
  seqLen: 128,
  batchSize: 8,
  maxSteps: 120,
  lr: 3e-3,
  rank: 8,
  alpha: 16,
  dropout: 0,
  evalEvery: 20,
  saveEvery: 0,
  warmupRatio: 0.05,
  validFraction: 0.1,
  samplePrompt: 'ROMEO:',
  sampleTokens: 48,
  // The demo's folder is the demo's own: running it again replaces the last demo run.
  overwrite: true,
};

function list(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean);
}

function intList(value: string): number[] {
  return list(value).map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--layers: '${s}' is not a layer index`);
    return n;
  });
}

export function registerTrainCommand(program: Command): void {
  const cmd = program
    .command('train')
    .description('QLoRA fine-tuning: quantize the base to 4-bit, attach LoRA adapters, train them on your data.\nWith no --model and --data it runs the bundled demo (stories260K on a tiny-shakespeare excerpt).')
    .option('-m, --model <path>', 'base model: HF folder, .gguf file, or llama2.c .bin')
    .option('-d, --data <path>', 'dataset: .jsonl/.json/.csv/.tsv/.txt file, or a folder with train.*/valid.*')
    .option('-o, --output <dir>', `output folder for the adapter, checkpoints, metrics.jsonl and loss.svg (demo: ${DEMO.output})`)
    .option('-c, --config <file>', 'YAML file with any of these settings (flags override it); keys like max_steps or max-steps')
    .option('--tokenizer <path>', 'tokenizer (default: the one next to the model)')
    .option('--max-steps <n>', 'optimizer steps to run', intOption('--max-steps', 1))
    .option('--epochs <n>', 'passes over the training data (instead of --max-steps)', floatOption('--epochs', 0))
    .option('--lr <lr>', 'peak learning rate (default 2e-4)', floatOption('--lr', 0))
    .option('--schedule <kind>', 'lr schedule: constant, linear, cosine (default cosine)', choiceOption('--schedule', ['constant', 'linear', 'cosine'] as const))
    .option('--warmup-steps <n>', 'linear warm-up steps', intOption('--warmup-steps', 0))
    .option('--warmup-ratio <r>', 'warm-up as a fraction of all steps (default 0.03)', floatOption('--warmup-ratio', 0, 1))
    .option('-r, --rank <r>', 'LoRA rank (default 16)', intOption('--rank', 1))
    .option('--alpha <a>', 'LoRA alpha; scaling = alpha/rank (default 32)', floatOption('--alpha', 0))
    .option('--dropout <p>', 'LoRA dropout on the adapter input (default 0.05)', floatOption('--dropout', 0, 0.999))
    .option('--targets <list>', `projections to adapt: all-linear or a comma list of ${PROJECTIONS.join(',')} (default all-linear)`)
    .option('--layers <list>', 'only these layer indices (comma list; default all)')
    .option('--rslora', 'rank-stabilized LoRA: scaling = alpha/sqrt(rank)')
    .option('--init <kind>', 'LoRA A init: kaiming (PEFT default) or gaussian', choiceOption('--init', ['kaiming', 'gaussian'] as const))
    .option('-b, --batch-size <n>', 'sequences per micro-batch (default 4)', intOption('--batch-size', 1))
    .option('--grad-accum <n>', 'micro-batches per optimizer step (default 1)', intOption('--grad-accum', 1))
    .option('--seq-len <n>', 'tokens per sequence (default 512)', intOption('--seq-len', 8))
    .option('--no-packing', 'one example per row with padding (default: pack several examples per row)')
    .option('--eval-every <n>', 'evaluate every n steps; 0 = only at the end (default 100)', intOption('--eval-every', 0))
    .option('--eval-batches <n>', 'validation batches per evaluation (default 20)', intOption('--eval-batches', 1))
    .option('--save-every <n>', 'checkpoint every n steps; 0 = only at the end (default 100)', intOption('--save-every', 0))
    .option('--keep-checkpoints <k>', 'keep the newest k checkpoints (default 3)', intOption('--keep-checkpoints', 1))
    .option('--load-best', 'make the final adapter the one with the lowest eval loss (as HF load_best_model_at_end); checkpoints still hold the last step')
    .option('--early-stopping <n>', 'stop after n evaluations without improvement (default off)', intOption('--early-stopping', 0))
    .option('--resume [checkpoint]', 'continue from the newest checkpoint in --output (or this checkpoint folder)')
    .option('--overwrite', 'replace the run in a non-empty --output folder (its files are removed first; without it such a folder is refused)')
    .option('--optimizer <kind>', 'adamw (fp32 states) or adamw8bit (bitsandbytes-style 8-bit states)', choiceOption('--optimizer', ['adamw', 'adamw8bit'] as const))
    .option('--weight-decay <w>', 'decoupled weight decay (default 0)', floatOption('--weight-decay', 0))
    .option('--max-grad-norm <g>', 'clip the global gradient norm; 0 = off (default 1)', floatOption('--max-grad-norm', 0))
    .option('--seed <n>', 'seed for initialisation, dropout and data order (default 42)', intOption('--seed', 0))
    .option('--quant <type>', 'base weights: nf4 (default), fp4, or none (plain LoRA)', choiceOption('--quant', ['nf4', 'fp4', 'none'] as const))
    .option('--blocksize <n>', '4-bit block size, 32..4096 (default 64)', intOption('--blocksize', 32))
    .option('--no-double-quant', 'keep absmax in fp32 (default: 8-bit double quantization)')
    .option('--quantize-head', 'store an untied lm_head in 4-bit too (default: embeddings, norms and lm_head stay f32)')
    .option('--quantize-embeddings', 'store the embedding table in 4-bit too (a tied lm_head shares it)')
    .option('--gradient-checkpointing', 'recompute layer activations in backward (less memory, ~30% more time)')
    .option('--skip-nonfinite', 'skip steps with a NaN/Inf loss or gradient instead of stopping (within the limits below)')
    .option('--max-consecutive-skips <n>', 'with --skip-nonfinite: stop (exit 1) after n skipped steps in a row (default 5)', intOption('--max-consecutive-skips', 1))
    .option('--max-skipped-steps <n>', 'with --skip-nonfinite: stop (exit 1) after n skipped steps in all (default 10% of the steps, at least 5)', intOption('--max-skipped-steps', 1))
    .option('--format <format>', 'row format: auto, text, completion, alpaca, chat (default auto)', choiceOption('--format', ['auto', 'text', 'completion', 'alpaca', 'chat'] as const))
    .option('--columns <map>', 'map dataset columns, e.g. prompt=mr,completion=ref')
    .option('--template <text>', 'prompt template with {column} placeholders')
    .option('--chat-template <file|name>', 'chat template for chat rows instead of the model\'s: a Jinja file, a tokenizer_config.json, or a built-in (chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca)')
    .option('--train-on-prompt', 'put loss on prompts and user turns too')
    .option('--valid-fraction <f>', 'held-out validation fraction when there is no validation file (default 0.05)', floatOption('--valid-fraction', 0, 0.99))
    .option('--truncation <policy>', 'over-long examples: drop, truncate-left, truncate-right, split', choiceOption('--truncation', ['drop', 'truncate-left', 'truncate-right', 'split'] as const))
    .option('--skip-bad-rows', 'count and skip malformed rows instead of stopping')
    .option('--max-row-bytes <n>', 'longest dataset row (JSONL line, CSV record, JSON element, text document) in bytes; longer rows are bad rows (default 1048576)', intOption('--max-row-bytes', 1))
    .option('--backend <name>', 'compute backend: cpu (default), webgpu (GPU), auto (a hardware GPU when present, else cpu) or ref', choiceOption('--backend', BACKEND_CHOICES))
    .option('--force', 'train even when the plan exceeds this machine\'s memory or most examples lose their loss tokens to --seq-len')
    .option('--sample-prompt <text>', 'print a sample for this prompt before and after training')
    .option('--sample-tokens <n>', 'tokens in each sample (default 64)', intOption('--sample-tokens', 0));
  cmd.action(async (flags: Record<string, unknown>) => {
    const fromCli: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(flags)) {
      if (key === 'config' || cmd.getOptionValueSource(key) !== 'cli') continue;
      if (key === 'targets') fromCli.targets = value === 'all-linear' ? 'all-linear' : list(String(value));
      else if (key === 'layers') fromCli.layers = intList(String(value));
      else if (key === 'template') fromCli.template = unescapeCommandLine(String(value));
      else if (key === 'resume') fromCli.resume = value;
      else fromCli[key] = value;
    }
    // --no-packing / --no-double-quant default to true in commander: only an explicit flag counts.
    const file = typeof flags.config === 'string' ? readConfigFile(flags.config) : {};
    const demo = fromCli.model === undefined && fromCli.data === undefined && file.model === undefined && file.data === undefined;
    const merged = { ...(demo ? DEMO_SETTINGS : {}), ...file, ...fromCli };
    if (!demo && merged.output === undefined) throw new Error('--output is required (the folder for the adapter and checkpoints)');
    if (!demo && (merged.model === undefined || merged.data === undefined)) throw new Error('give both --model and --data (or neither, for the demo)');
    const config = resolveTrainConfig(merged, typeof flags.config === 'string' ? flags.config : 'options');
    await runTraining(config, demo);
  });
}

async function sample(model: LlamaModel, tokenizer: Tokenizer, prompt: string, tokens: number): Promise<string> {
  const arena = model.backend.createArena(1 << 20, 'sample');
  try {
    let ids = tokenizer.encode(prompt, { addSpecialTokens: false });
    if (tokenizer.bosId !== null) ids = [tokenizer.bosId, ...ids];
    const r = await generate(model, tokenizer, ids, arena, { maxTokens: tokens, temperature: 0 });
    return prompt + r.text;
  } finally {
    arena.dispose();
  }
}

export async function runTraining(config: TrainConfig, demo: boolean): Promise<void> {
  const log = (s: string) => process.stderr.write(`${s}\n`);
  if (demo) log(`qlora train: no --model/--data given, running the demo: ${path.basename(config.model)} on ${path.basename(config.data)} → ${config.output}/`);
  const lora: LoraConfig = {
    r: config.rank,
    alpha: config.alpha,
    dropout: config.dropout,
    useRslora: config.rslora,
    init: config.init,
    seed: config.seed,
    targets: config.targets === 'all-linear' ? 'all-linear' : (config.targets as ProjectionName[]),
    layers: config.layers ?? null,
  };
  // The output folder first: an unusable or already used one fails before anything is loaded.
  const { removed } = prepareOutputDir(config.output, { resume: Boolean(config.resume), overwrite: config.overwrite });
  if (config.overwrite && removed.length > 0 && !config.resume) log(`--overwrite: removed the previous run's ${removed.join(', ')} from ${config.output}`);
  // The memory plan first (from the config alone), so a run that cannot fit is flagged before loading.
  const header = openCheckpoint(config.model);
  try {
    // The rank against the model's projections first: a typo like --rank 100000 stops here, before
    // the plan or any allocation; a rank above min(in, out) only wastes memory, so it is a warning.
    for (const w of checkLoraRank(header.config, lora.r, resolveTargets(lora.targets))) log(`warning: ${w}`);
  } catch (err) {
    header.close();
    throw err;
  }
  const plan = printTrainingPlan(header.config, {
    seqLen: config.seqLen,
    batchSize: config.batchSize,
    rank: config.rank,
    targets: lora.targets,
    gradientCheckpointing: config.gradientCheckpointing,
    optimizer: config.optimizer,
    lossChunkRows: LOSS_CHUNK_ROWS,
    quantization: config.quant === 'none' ? null : { blocksize: config.blocksize, doubleQuant: config.doubleQuant },
    loraDropout: config.dropout,
    gradAccum: config.gradAccum,
    presizedArenas: true,
    quantizeHead: config.quantizeHead,
    quantizeEmbedding: config.quantizeEmbeddings,
  }, path.basename(path.resolve(config.model)), log);
  header.close();
  if (!plan.fits) {
    if (!config.force) throw new Error('the plan above needs more memory than this machine has: lower --batch-size or --seq-len, turn on --gradient-checkpointing, or pass --force to try anyway');
    log('warning: the plan says this run does not fit in this machine\'s memory (see above); continuing because of --force');
  }
  const t0 = performance.now();
  const { model, tokenizer, checkpoint } = await loadModel({
    model: config.model,
    tokenizer: config.tokenizer,
    backend: config.backend,
    quantization: config.quant === 'none' ? null : { quantType: config.quant, blocksize: config.blocksize, doubleQuant: config.doubleQuant },
    quantizeHead: config.quantizeHead,
    quantizeEmbedding: config.quantizeEmbeddings,
    lora,
    maxPositions: config.seqLen,
  });
  // Full-precision copies made while quantizing are garbage now: return them before training.
  await releaseBuildGarbage(model.backend);
  const c = checkpoint.config;
  const trainable = model.parameters().reduce((s, p) => s + p.value.size, 0);
  log(`model: ${c.architecture} ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize} (${checkpoint.source}); base ${config.quant === 'none' ? 'f32' : `${config.quant.toUpperCase()}${config.doubleQuant ? ' + double quant' : ''}`}; LoRA r=${lora.r} alpha=${lora.alpha} on ${model.loraLayers().length} projections: ${formatCount(trainable)} trainable parameters (${(performance.now() - t0) / 1000 < 10 ? ((performance.now() - t0) / 1000).toFixed(1) : Math.round((performance.now() - t0) / 1000)} s to load)`);

  const chat = config.chatTemplate !== undefined ? resolveChatTemplate(config.chatTemplate) : null;
  const data = await loadDataset(config.data, tokenizer, {
    maxSeqLen: config.seqLen,
    ...(chat ? { chatTemplate: chat.source } : {}),
    format: config.format,
    columns: config.columns ? parseColumnMapping(config.columns) : undefined,
    promptTemplate: config.template ? new PromptTemplate(config.template) : undefined,
    trainOnPrompt: config.trainOnPrompt,
    truncation: config.truncation,
    skipBadRows: config.skipBadRows,
    maxRowBytes: config.maxRowBytes,
    validFraction: config.validFraction,
    seed: config.seed,
  });
  const st = data.stats.train;
  log(`data: ${data.format} format, ${st.examples} train examples (${formatCount(st.tokens)} tokens, ${formatCount(st.lossTokens)} with loss), ${data.valid.length} validation (${data.validSource})${st.badRows ? `, ${st.badRows} bad rows skipped` : ''}${st.overLength ? `, ${st.overLength} over-long (${data.truncation})` : ''}`);
  const advice = lengthAdvice(st, { seqLen: config.seqLen, policy: data.truncation, format: data.format, contextLength: c.maxPositionEmbeddings || null });
  for (const w of advice.warnings) log(`warning: ${w}`);
  if (advice.refusal) {
    if (!config.force) throw new Error(advice.refusal);
    log('continuing because of --force');
  }
  const padId = tokenizer.padId ?? tokenizer.eosId ?? 0;
  const trainBatcher = new Batcher(data.train, { batchSize: config.batchSize, seqLen: config.seqLen, packing: config.packing, shuffle: true, seed: config.seed, padId });
  const validBatcher = data.valid.length > 0 ? new Batcher(data.valid, { batchSize: config.batchSize, seqLen: config.seqLen, packing: config.packing, shuffle: false, padId }) : null;
  // Each epoch's own plan counts: shuffled packing can give an epoch a batch more or less than the first.
  if (config.loadBest && !validBatcher) throw new Error('--load-best needs validation data to pick the best adapter (a valid file, or --valid-fraction > 0)');
  const maxSteps = config.maxSteps ?? Math.max(1, Math.ceil(trainBatcher.batchesInEpochs(config.epochs ?? 1) / config.gradAccum));
  const warmup = warmupSteps(maxSteps, config.warmupSteps, config.warmupRatio);
  log(`training: ${maxSteps} steps × ${config.gradAccum} × ${config.batchSize} × ${config.seqLen} tokens (${config.packing ? '~' : ''}${trainBatcher.batchesPerEpoch} batches per epoch), lr ${config.lr} ${config.schedule}, warm-up ${warmup}, ${config.optimizer}`);

  if (config.samplePrompt !== undefined && config.sampleTokens > 0) {
    log(`\n--- sample before training ---\n${await sample(model, tokenizer, config.samplePrompt, config.sampleTokens)}\n`);
  }
  const progress = new ProgressLine();
  const evalBatches = validBatcher
    ? () => {
        const out: ModelBatch[] = [];
        for (const b of validBatcher.epoch(0)) {
          if (out.length >= config.evalBatches) break;
          out.push(b);
        }
        return out;
      }
    : null;
  const trainer = new Trainer(
    model,
    lora,
    {
      outputDir: config.output,
      maxSteps,
      lr: config.lr,
      schedule: config.schedule,
      warmupSteps: warmup,
      gradAccum: config.gradAccum,
      maxGradNorm: config.maxGradNorm,
      weightDecay: config.weightDecay,
      optimizer: config.optimizer,
      seed: config.seed,
      gradientCheckpointing: config.gradientCheckpointing,
      lossChunkRows: LOSS_CHUNK_ROWS,
      evalEvery: config.evalEvery,
      saveEvery: config.saveEvery,
      keepCheckpoints: config.keepCheckpoints,
      earlyStoppingPatience: config.earlyStopping,
      onNonFinite: config.skipNonfinite ? 'skip' : 'stop',
      maxConsecutiveSkips: config.maxConsecutiveSkips,
      maxSkippedSteps: config.maxSkippedSteps,
      resume: config.resume,
      overwrite: config.overwrite,
      loadBest: config.loadBest,
      // PEFT's base_model_name_or_path: the model's name (Hub id when known), not this machine's path;
      // the path is in config.yaml.
      baseModel: modelName(config.model),
      recipe: {
        baseModelPath: path.resolve(config.model),
        quantization:
          config.quant === 'none'
            ? null
            : { quantType: config.quant, blocksize: config.blocksize, doubleQuant: config.doubleQuant, quantizeHead: config.quantizeHead, quantizeEmbeddings: config.quantizeEmbeddings },
        data: {
          format: data.format,
          columns: config.columns ? parseColumnMapping(config.columns) : null,
          template: config.template ?? null,
          chatTemplateName: chat?.name ?? null,
          trainOnPrompt: config.trainOnPrompt,
          seqLen: config.seqLen,
        },
        chatTemplate: chat?.source ?? (data.format === 'chat' ? tokenizer.chatTemplate : null),
      },
      arenaBytes: plan.arenaBytes,
    },
    trainBatcher.source(),
    evalBatches,
    {
      onStep: (m) => {
        const eta = ((maxSteps - m.step) * m.elapsedSeconds) / Math.max(m.step, 1);
        progress.update(
          `step ${m.step}/${maxSteps} ${bar(m.step / maxSteps)} ${m.epoch !== undefined ? `epoch ${m.epoch.toFixed(2)} ` : ''}loss ${m.loss.toFixed(4)} lr ${m.lr.toExponential(2)} ${Math.round(m.tokensPerSecond)} tok/s ETA ${duration(eta)}${m.skipped ? ' (skipped: non-finite)' : ''}`,
          m.step === maxSteps,
        );
      },
      onEval: (m) => progress.log(`eval @ step ${m.step}: loss ${m.evalLoss.toFixed(4)}, perplexity ${m.perplexity.toFixed(2)}`),
      onCheckpoint: (dir) => progress.log(`checkpoint: ${dir}`),
      onResume: (dir, step) => progress.log(`resumed from ${dir} at step ${step}`),
      onLoadBest: (step, loss) => progress.log(`--load-best: the final adapter holds the weights of step ${step ?? '?'} (lowest eval loss ${loss?.toFixed(4) ?? 'n/a'})`),
    },
  );
  let summary;
  try {
    summary = await trainer.run();
  } finally {
    progress.done();
    trainer.dispose();
  }
  if (config.samplePrompt !== undefined && config.sampleTokens > 0) {
    log(`\n--- sample after training ---\n${await sample(model, tokenizer, config.samplePrompt, config.sampleTokens)}\n`);
  }
  log(
    `done (${summary.stoppedBy}): ${summary.steps} steps, ${formatCount(summary.tokensSeen)} tokens (${formatCount(summary.lossTokensSeen)} with loss) in ${duration(summary.seconds)}` +
      `${summary.seconds > 0 ? `, ${Math.round(summary.tokensSeen / summary.seconds)} tok/s` : ''}; ` +
      `final train loss ${summary.finalTrainLoss?.toFixed(4) ?? 'n/a'}, eval loss ${summary.finalEvalLoss !== null ? `${summary.finalEvalLoss.toFixed(4)} (step ${summary.finalEvalStep})` : 'n/a'}; peak memory ${formatBytes(summary.peakRssBytes)}`,
  );
  // The recipe and a model card, next to the adapter.
  writeRecipe(config.output, config, modelCard({
    config, baseName: modelName(config.model), format: data.format, trainExamples: st.examples, validExamples: data.valid.length,
    steps: summary.steps, tokens: summary.tokensSeen, lossTokens: summary.lossTokensSeen, finalTrainLoss: summary.finalTrainLoss,
    finalEvalLoss: summary.finalEvalLoss, finalEvalStep: summary.finalEvalStep, bestStep: summary.bestStep, bestEvalLoss: summary.bestEvalLoss,
    stoppedBy: summary.stoppedBy,
  }));
  if (config.loadBest && summary.bestStep !== null) log(`best: step ${summary.bestStep}, eval loss ${summary.bestEvalLoss?.toFixed(4)}; the adapter below holds its weights (checkpoint-${summary.steps} holds the last step's)`);
  log(`adapter: ${path.join(summary.adapterDir, 'adapter_model.safetensors')} (+ adapter_config.json), metrics: ${path.join(config.output, 'metrics.jsonl')}, curve: ${path.join(config.output, 'loss.svg')}, recipe: ${path.join(config.output, 'config.yaml')}, model card: ${path.join(config.output, 'README.md')}`);
  model.dispose();
  if (summary.stoppedBy === 'interrupt') process.exitCode = 130;
}
