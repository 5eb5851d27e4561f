import { isHubModelId, localDataPath, localModelPath } from './hub-args.js';
import path from 'node:path';
import type { Command } from 'commander';
import { Batcher } from '../data/batching.js';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { parseColumnMapping } from '../data/columns.js';
import { loadDataset } from '../data/dataset.js';
import { lengthAdvice } from '../data/length-advice.js';
import { PromptTemplate } from '../data/prompt-template.js';
import { generate } from '../generate/generate.js';
import { type LoraConfig, resolveTargets } from '../models/build.js';
import { checkLoraRank } from '../models/lora-rank.js';
import type { LlamaModel, ModelBatch } from '../models/llama.js';
import type { ProjectionName } from '../models/llama.js';
import type { Tokenizer } from '../tokenizer/types.js';
import { Trainer } from '../train/trainer.js';
import { warmupSteps } from '../train/schedule.js';
import { loadModel } from '../load/load-model.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { prepareOutputDir } from '../train/output-dir.js';
import { modelCard, modelName, writeRecipe } from './recipe.js';
import { printTrainingPlan, releaseBuildGarbage } from '../train/plan.js';
import { formatBytes, formatCount } from './options.js';
import { ProgressLine, bar, duration } from './progress.js';
import { resolveTrainConfig, type TrainConfig } from './train-config.js';
import { addTrainOptions, LOSS_CHUNK_ROWS, planOptionsOf, trainSettings } from './train-options.js';

export function registerTrainCommand(program: Command): void {
  const cmd = program
    .command('train')
    .description(
      'QLoRA fine-tuning: quantize the base to 4-bit, attach LoRA adapters, train them on your data.\nWith no --model and --data it runs the bundled demo (stories260K on a tiny-shakespeare excerpt).',
    );
  addTrainOptions(cmd);
  cmd.action(async (flags: Record<string, unknown>) => {
    const { values, fileKeys, demo, source } = trainSettings(cmd, flags);
    if (!demo && values.output === undefined)
      throw new Error('--output is required (the folder for the adapter and checkpoints)');
    if (!demo && (values.model === undefined || values.data === undefined))
      throw new Error('give both --model and --data (or neither, for the demo)');
    const config = resolveTrainConfig(values, source, fileKeys);
    await runTraining(config, demo);
  });
}

async function sample(
  model: LlamaModel,
  tokenizer: Tokenizer,
  prompt: string,
  tokens: number,
): Promise<string> {
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
  if (demo)
    log(
      `qlora train: no --model/--data given, running the demo: ${path.basename(config.model)} on ${path.basename(config.data)} → ${config.output}/`,
    );
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
  const { removed } = prepareOutputDir(config.output, {
    resume: Boolean(config.resume),
    overwrite: config.overwrite,
  });
  if (config.overwrite && removed.length > 0 && !config.resume)
    log(`--overwrite: removed the previous run's ${removed.join(', ')} from ${config.output}`);
  // A Hub id becomes its snapshot in the Hugging Face cache (downloaded when missing): the model
  // and the data, before the plan, so a gated model or a missing split stops the run here.
  const hubModel = isHubModelId(config.model);
  const modelPath = await localModelPath(config.model, { ggufFile: config.ggufFile });
  const dataPath = await localDataPath(config.data, { split: config.split });
  // The memory plan first (from the config alone), so a run that cannot fit is flagged before loading.
  const header = openCheckpoint(modelPath);
  try {
    // The rank against the model's projections first: a typo like --rank 100000 stops here, before
    // the plan or any allocation; a rank above min(in, out) only wastes memory, so it is a warning.
    for (const w of checkLoraRank(header.config, lora.r, resolveTargets(lora.targets)))
      log(`warning: ${w}`);
  } catch (err) {
    header.close();
    throw err;
  }
  const plan = await printTrainingPlan(
    header.config,
    planOptionsOf(config),
    hubModel ? config.model : path.basename(path.resolve(config.model)),
    log,
  );
  header.close();
  if (!plan.fits) {
    if (!config.force)
      throw new Error(
        'the plan above needs more memory than this machine has: lower --batch-size or --seq-len, turn on --gradient-checkpointing, or pass --force to try anyway',
      );
    log(
      "warning: the plan says this run does not fit in this machine's memory (see above); continuing because of --force",
    );
  }
  const baseName = hubModel ? config.model.split('@')[0]! : modelName(modelPath);
  const t0 = performance.now();
  const { model, tokenizer, checkpoint } = await loadModel({
    model: modelPath,
    tokenizer: config.tokenizer,
    backend: config.backend,
    computeDtype: config.computeDtype,
    quantization:
      config.quant === 'none'
        ? null
        : { quantType: config.quant, blocksize: config.blocksize, doubleQuant: config.doubleQuant },
    quantizeHead: config.quantizeHead,
    quantizeEmbedding: config.quantizeEmbeddings,
    lora,
    maxPositions: config.seqLen,
  });
  // Full-precision copies made while quantizing are garbage now: return them before training.
  await releaseBuildGarbage(model.backend);
  const c = checkpoint.config;
  const trainable = model.parameters().reduce((s, p) => s + p.value.size, 0);
  log(
    `model: ${c.architecture} ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize} (${checkpoint.source}); base ${config.quant === 'none' ? 'f32' : `${config.quant.toUpperCase()}${config.doubleQuant ? ' + double quant' : ''}`}; LoRA r=${lora.r} alpha=${lora.alpha} on ${model.loraLayers().length} projections: ${formatCount(trainable)} trainable parameters (${(performance.now() - t0) / 1000 < 10 ? ((performance.now() - t0) / 1000).toFixed(1) : Math.round((performance.now() - t0) / 1000)} s to load)`,
  );

  const be = model.backend;
  log(`backend: ${be.name}${be.describe ? ` (${be.describe()})` : ''}`);

  const chat = config.chatTemplate !== undefined ? resolveChatTemplate(config.chatTemplate) : null;
  const data = await loadDataset(dataPath, tokenizer, {
    maxSeqLen: config.seqLen,
    ...(config.split !== undefined ? { split: config.split } : {}),
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
  log(
    `data: ${data.format} format, ${st.examples} train examples (${formatCount(st.tokens)} tokens, ${formatCount(st.lossTokens)} with loss), ${data.valid.length} validation (${data.validSource})${st.badRows ? `, ${st.badRows} bad rows skipped` : ''}${st.overLength ? `, ${st.overLength} over-long (${data.truncation})` : ''}`,
  );
  const advice = lengthAdvice(st, {
    seqLen: config.seqLen,
    policy: data.truncation,
    format: data.format,
    contextLength: c.maxPositionEmbeddings || null,
  });
  for (const w of advice.warnings) log(`warning: ${w}`);
  if (advice.refusal) {
    if (!config.force) throw new Error(advice.refusal);
    log('continuing because of --force');
  }
  const padId = tokenizer.padId ?? tokenizer.eosId ?? 0;
  const trainBatcher = new Batcher(data.train, {
    batchSize: config.batchSize,
    seqLen: config.seqLen,
    packing: config.packing,
    shuffle: true,
    seed: config.seed,
    padId,
  });
  const validBatcher =
    data.valid.length > 0
      ? new Batcher(data.valid, {
          batchSize: config.batchSize,
          seqLen: config.seqLen,
          packing: config.packing,
          shuffle: false,
          padId,
        })
      : null;
  // Each epoch's own plan counts: shuffled packing can give an epoch a batch more or less than the first.
  if (config.loadBest && !validBatcher)
    throw new Error(
      '--load-best needs validation data to pick the best adapter (a valid file, or --valid-fraction > 0)',
    );
  const maxSteps =
    config.maxSteps ??
    Math.max(1, Math.ceil(trainBatcher.batchesInEpochs(config.epochs ?? 1) / config.gradAccum));
  const warmup = warmupSteps(maxSteps, config.warmupSteps, config.warmupRatio);
  log(
    `training: ${maxSteps} steps × ${config.gradAccum} × ${config.batchSize} × ${config.seqLen} tokens (${config.packing ? '~' : ''}${trainBatcher.batchesPerEpoch} batches per epoch), lr ${config.lr} ${config.schedule}, warm-up ${warmup}, ${config.optimizer}`,
  );

  if (config.samplePrompt !== undefined && config.sampleTokens > 0) {
    log(
      `\n--- sample before training ---\n${await sample(model, tokenizer, config.samplePrompt, config.sampleTokens)}\n`,
    );
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
      baseModel: baseName,
      recipe: {
        // A Hub model is recorded by its id (found again through the cache on any machine), except
        // one GGUF file of a repository, which is recorded by its path.
        baseModelPath:
          hubModel && config.ggufFile === undefined ? config.model : path.resolve(modelPath),
        quantization:
          config.quant === 'none'
            ? null
            : {
                quantType: config.quant,
                blocksize: config.blocksize,
                doubleQuant: config.doubleQuant,
                quantizeHead: config.quantizeHead,
                quantizeEmbeddings: config.quantizeEmbeddings,
              },
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
      onEval: (m) =>
        progress.log(
          `eval @ step ${m.step}: loss ${m.evalLoss.toFixed(4)}, perplexity ${m.perplexity.toFixed(2)}`,
        ),
      onCheckpoint: (dir) => progress.log(`checkpoint: ${dir}`),
      onResume: (dir, step) => progress.log(`resumed from ${dir} at step ${step}`),
      onLoadBest: (step, loss) =>
        progress.log(
          `--load-best: the final adapter holds the weights of step ${step ?? '?'} (lowest eval loss ${loss?.toFixed(4) ?? 'n/a'})`,
        ),
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
    log(
      `\n--- sample after training ---\n${await sample(model, tokenizer, config.samplePrompt, config.sampleTokens)}\n`,
    );
  }
  log(
    `done (${stopReason(summary.stoppedBy, config.maxSteps, config.epochs)}): ${summary.steps} steps, ${formatCount(summary.tokensSeen)} tokens (${formatCount(summary.lossTokensSeen)} with loss) in ${duration(summary.seconds)}` +
      `${summary.seconds > 0 ? `, ${Math.round(summary.tokensSeen / summary.seconds)} tok/s` : ''}; ` +
      `final train loss ${summary.finalTrainLoss?.toFixed(4) ?? 'n/a'}, eval loss ${summary.finalEvalLoss !== null ? `${summary.finalEvalLoss.toFixed(4)} (step ${summary.finalEvalStep})` : 'n/a'}; peak memory ${formatBytes(summary.peakRssBytes)}`,
  );
  // The recipe and a model card, next to the adapter.
  writeRecipe(
    config.output,
    config,
    modelCard({
      config,
      baseName,
      format: data.format,
      trainExamples: st.examples,
      validExamples: data.valid.length,
      steps: summary.steps,
      tokens: summary.tokensSeen,
      lossTokens: summary.lossTokensSeen,
      finalTrainLoss: summary.finalTrainLoss,
      finalEvalLoss: summary.finalEvalLoss,
      finalEvalStep: summary.finalEvalStep,
      bestStep: summary.bestStep,
      bestEvalLoss: summary.bestEvalLoss,
      stoppedBy: summary.stoppedBy,
    }),
  );
  if (config.loadBest && summary.bestStep !== null)
    log(
      `best: step ${summary.bestStep}, eval loss ${summary.bestEvalLoss?.toFixed(4)}; the adapter below holds its weights (checkpoint-${summary.steps} holds the last step's)`,
    );
  log(
    `adapter: ${path.join(summary.adapterDir, 'adapter_model.safetensors')} (+ adapter_config.json), metrics: ${path.join(config.output, 'metrics.jsonl')}, curve: ${path.join(config.output, 'loss.svg')}, recipe: ${path.join(config.output, 'config.yaml')}, model card: ${path.join(config.output, 'README.md')}`,
  );
  model.dispose();
  if (summary.stoppedBy === 'interrupt') process.exitCode = 130;
}

/** Why the run ended, in the words the user chose: the epochs asked for, or the step budget. */
function stopReason(
  stoppedBy: 'max-steps' | 'early-stopping' | 'interrupt',
  maxSteps: number | undefined,
  epochs: number | undefined,
): string {
  if (stoppedBy !== 'max-steps') return stoppedBy;
  if (maxSteps !== undefined) return 'max steps';
  const n = epochs ?? 1;
  return `${n} epoch${n === 1 ? '' : 's'}`;
}
