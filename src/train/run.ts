/**
 * `train({ model, data, output, ...settings })`: a whole QLoRA run in one call, with the defaults of
 * `qlora train` (src/train/settings.ts) — the same code the command runs (src/cli/train.ts is this
 * plus progress printing, samples and the config.yaml/model card). In order: the output folder is
 * checked before anything is loaded, the LoRA rank against the model, the memory plan against the
 * machine; then the base is loaded in 4-bit with fresh adapters (or a model loaded by the caller is
 * used), the data's format detected and its rows tokenized, examples packed into batches, and the
 * Trainer runs with evaluation, checkpoints and atomic saves.
 */
import { resolveBackend } from '../backends/index.js';
import { parseColumnMapping } from '../data/columns.js';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { Batcher } from '../data/batching.js';
import { loadDataset, type LoadedDataset } from '../data/dataset.js';
import { lengthAdvice } from '../data/length-advice.js';
import { PromptTemplate } from '../data/prompt-template.js';
import type { DatasetRows } from '../data/sources.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { LlamaConfig } from '../io/config.js';
import { path } from '../io/host.js';
import { modelName } from '../io/model-name.js';
import { describeBase } from '../io/adapter-recipe.js';
import { keptTensorTypes, type LoadedModel, loadModel } from '../load/load-model.js';
import { resolveTargets } from '../models/build.js';
import { formatCount } from '../tensor/units.js';
import { checkLoraRank } from '../models/lora-rank.js';
import type { ModelBatch } from '../models/llama.js';
import type { Tokenizer } from '../tokenizer/types.js';
import { prepareOutputDir } from './output-dir.js';
import {
  keptGgufTypes,
  printTrainingPlan,
  releaseBuildGarbage,
  type TrainingPlan,
} from './plan.js';
import { warmupSteps } from './schedule.js';
import {
  loraConfigOf,
  planOptionsOf,
  resolveTrainSettings,
  trainerOptionsOf,
  type TrainSettings,
} from './settings.js';
import { Trainer, type TrainEvents, type TrainSummary } from './trainer.js';

/** Settings that say how the model is built: with a model loaded by the caller, they come from it. */
const BUILD_SETTINGS = [
  'tokenizer',
  'rank',
  'alpha',
  'dropout',
  'targets',
  'layers',
  'rslora',
  'init',
  'quant',
  'blocksize',
  'doubleQuant',
  'quantizeHead',
  'quantizeEmbeddings',
  'backend',
  'computeDtype',
] as const;

/** What a run has ready when training starts (given to onStart / onEnd). */
export interface TrainRun {
  readonly model: LoadedModel;
  readonly tokenizer: Tokenizer;
  readonly data: LoadedDataset;
  /** Every setting, defaults filled in (with a loaded model: its LoRA and 4-bit settings). */
  readonly settings: TrainSettings;
  readonly maxSteps: number;
  readonly warmupSteps: number;
  /** Batches in one pass over the training data (approximate with packing). */
  readonly batchesPerEpoch: number;
  readonly plan: TrainingPlan;
}

export interface TrainCallOptions extends Partial<TrainSettings>, TrainEvents {
  /** A model path (HF folder, .gguf, llama2.c .bin), or a model from loadModel({ lora }) (then the LoRA and 4-bit settings are its own). */
  readonly model: string | LoadedModel;
  /** A dataset path (file or MLX-style folder), or rows: an array, or { train, valid?, test? }. */
  readonly data: string | DatasetRows;
  /** The folder for the adapter, checkpoints, metrics.jsonl and loss.svg. */
  readonly output: string;
  /** With a dataset folder in the Hugging Face layout: the split to train on. */
  readonly split?: string;
  /** The base's name in adapter_config.json (default: its Hub id from config.json, else its file name). */
  readonly baseModelName?: string;
  /** The base as qlora_config.json records it (default: the model's absolute path). */
  readonly baseModelPath?: string;
  /** The model's name in the plan's heading (default: its file name). */
  readonly modelLabel?: string;
  /** Lines about the run (plan, model, data, warnings), as `qlora train` prints them; default: none. */
  readonly onLog?: (line: string) => void;
  /** After loading, before the first step (e.g. to sample from the model before training). */
  readonly onStart?: (run: TrainRun) => void | Promise<void>;
  /** After the last step, while the model is still loaded. */
  readonly onEnd?: (run: TrainRun, summary: TrainSummary) => void | Promise<void>;
}

export interface TrainResult extends TrainSummary {
  readonly outputDir: string;
  /** The final adapter's weights (adapter_config.json beside them). */
  readonly adapterPath: string;
  readonly metricsPath: string;
  readonly maxSteps: number;
  readonly format: LoadedDataset['format'];
  readonly trainExamples: number;
  readonly validExamples: number;
  readonly settings: TrainSettings;
}

function isLoaded(m: TrainCallOptions['model']): m is LoadedModel {
  return typeof m === 'object' && m !== null && 'model' in m && 'tokenizer' in m;
}

/** Runs QLoRA training as `qlora train --model … --data … --output …` does, with these settings over its defaults. */
export async function train(options: TrainCallOptions): Promise<TrainResult> {
  const {
    model: modelArg,
    data: dataArg,
    output,
    onLog,
    onStart,
    onEnd,
    onStep,
    onEval,
    onCheckpoint,
    onResume,
    onLoadBest,
    split,
    baseModelName,
    baseModelPath,
    modelLabel,
    ...given
  } = options;
  const log = onLog ?? (() => {});
  if (typeof output !== 'string' || output === '') throw new Error('train(): output is required');
  if (typeof modelArg !== 'string' && !isLoaded(modelArg))
    throw new Error('train(): model is a path or what loadModel() returned');
  const loadedArg = isLoaded(modelArg) ? modelArg : null;
  if (loadedArg) {
    const twice = BUILD_SETTINGS.filter((k) => given[k] !== undefined);
    if (twice.length > 0)
      throw new Error(
        `train(): ${twice.join(', ')} describe how the model is built; give them to loadModel(), not with a loaded model`,
      );
    if (!loadedArg.model.lora)
      throw new Error('train(): the model has no LoRA adapters: load it with loadModel({ lora })');
  }
  let settings = resolveTrainSettings(given);
  if (loadedArg) settings = { ...settings, ...settingsOfModel(loadedArg) };
  const lora = loadedArg ? loadedArg.model.lora! : loraConfigOf(settings);

  // The output folder first: an unusable or already used one fails before anything is loaded.
  const { removed } = prepareOutputDir(output, {
    resume: Boolean(settings.resume),
    overwrite: settings.overwrite,
  });
  if (settings.overwrite && removed.length > 0 && !settings.resume)
    log(`--overwrite: removed the previous run's ${removed.join(', ')} from ${output}`);

  // The memory plan (from the config alone), so a run that cannot fit is flagged before loading.
  let config: LlamaConfig;
  const label =
    modelLabel ??
    path.basename(path.resolve(loadedArg ? loadedArg.checkpoint.path : (modelArg as string)));
  if (loadedArg) config = loadedArg.checkpoint.config;
  else {
    const header = openCheckpoint(modelArg as string);
    try {
      // The rank against the model's projections first: a typo like --rank 100000 stops here, before
      // the plan or any allocation; a rank above min(in, out) only wastes memory, so it is a warning.
      for (const w of checkLoraRank(
        header.config,
        lora.r,
        resolveTargets(lora.targets, header.config),
      ))
        log(`warning: ${w}`);
      config = header.config;
      // A quantized GGUF re-quantized to NF4 (the default) or dequantized (none): say so once.
      if (settings.quant !== 'keep' && header.ggmlTypeOf) {
        const types = keptTensorTypes(header);
        const quantized = Object.keys(types).filter(
          (t) => t !== 'F32' && t !== 'F16' && t !== 'BF16',
        );
        if (quantized.length > 0)
          log(
            `note: this GGUF stores its projections as ${describeBase({ quantType: 'keep', tensorTypes: types }).replace(/^.*\((.*)\)$/, '$1')}; --quant ${settings.quant} ${settings.quant === 'none' ? 'dequantizes them to f32' : `dequantizes and re-quantizes them to ${settings.quant.toUpperCase()}`}, so the adapter learns other weights than llama.cpp serves: --quant keep trains on them as stored (recommended)`,
          );
      }
    } finally {
      header.close();
    }
  }
  // Speed is timed on the backend the run uses (resolved now: loading reuses it).
  const backend = loadedArg
    ? loadedArg.model.backend
    : await resolveBackend(settings.backend, { computeDtype: settings.computeDtype });
  // --quant keep plans each weight in the block type the file stores it in.
  const keptGguf =
    settings.quant === 'keep' && !loadedArg ? keptGgufTypes(modelArg as string) : undefined;
  const plan = await printTrainingPlan(
    config,
    { ...planOptionsOf(settings), ...(keptGguf ? { keptGguf } : {}) },
    label,
    log,
    { backend },
  );
  if (!plan.fits) {
    if (!settings.force)
      throw new Error(
        'the plan above needs more memory than this machine has: lower --batch-size or --seq-len, turn on --gradient-checkpointing, or pass --force to try anyway',
      );
    log(
      "warning: the plan says this run does not fit in this machine's memory (see above); continuing because of --force",
    );
  }

  const t0 = performance.now();
  const loaded =
    loadedArg ??
    (await loadModel({
      model: modelArg as string,
      tokenizer: settings.tokenizer,
      backend: settings.backend,
      computeDtype: settings.computeDtype,
      keepQuantized: settings.quant === 'keep',
      quantization:
        settings.quant === 'none' || settings.quant === 'keep'
          ? null
          : {
              quantType: settings.quant,
              blocksize: settings.blocksize,
              doubleQuant: settings.doubleQuant,
            },
      quantizeHead: settings.quantizeHead,
      quantizeEmbedding: settings.quantizeEmbeddings,
      lora,
      maxPositions: settings.seqLen,
    }));
  // A model this call loaded is this call's to free; one the caller loaded stays theirs.
  const owned = loadedArg === null;
  try {
    if (owned) await releaseBuildGarbage(loaded.model.backend);
    return await runLoaded(
      loaded,
      settings,
      dataArg,
      output,
      plan,
      (performance.now() - t0) / 1000,
      log,
      { onStep, onEval, onCheckpoint, onResume, onLoadBest },
      { split, baseModelName, baseModelPath },
      onStart,
      onEnd,
    );
  } finally {
    if (owned) loaded.model.dispose();
  }
}

/** A loaded model's LoRA and 4-bit settings, in the settings' terms. */
function settingsOfModel(m: LoadedModel): Partial<TrainSettings> {
  const l = m.model.lora!;
  const q = m.quantization;
  return {
    rank: l.r,
    alpha: l.alpha,
    dropout: l.dropout,
    rslora: l.useRslora,
    init: l.init,
    targets: l.targets === 'all-linear' ? 'all-linear' : [...l.targets],
    ...(l.layers ? { layers: [...l.layers] } : {}),
    quant: q ? q.quantType : 'none',
    ...(q && q.quantType !== 'keep' ? { blocksize: q.blocksize, doubleQuant: q.doubleQuant } : {}),
    quantizeHead: (q?.quantType !== 'keep' && q?.quantizeHead) || false,
    quantizeEmbeddings: (q?.quantType !== 'keep' && q?.quantizeEmbeddings) || false,
  };
}

async function runLoaded(
  loaded: LoadedModel,
  settings: TrainSettings,
  dataArg: string | DatasetRows,
  output: string,
  plan: TrainingPlan,
  loadSeconds: number,
  log: (line: string) => void,
  events: TrainEvents,
  names: Pick<TrainCallOptions, 'split' | 'baseModelName' | 'baseModelPath'>,
  onStart: TrainCallOptions['onStart'],
  onEnd: TrainCallOptions['onEnd'],
): Promise<TrainResult> {
  const { model, tokenizer, checkpoint } = loaded;
  const c = checkpoint.config;
  const lora = model.lora!;
  const trainable = model.parameters().reduce((s, p) => s + p.value.size, 0);
  const q = loaded.quantization;
  log(
    `model: ${c.architecture} ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize} (${checkpoint.source}); base ${!q ? 'f32' : q.quantType === 'keep' ? describeBase(q) : `${q.quantType.toUpperCase()}${q.doubleQuant ? ' + double quant' : ''}`}; LoRA r=${lora.r} alpha=${lora.alpha} on ${model.loraLayers().length} projections: ${formatCount(trainable)} trainable parameters (${loadSeconds < 10 ? loadSeconds.toFixed(1) : Math.round(loadSeconds)} s to load)`,
  );
  const be = model.backend;
  log(`backend: ${be.name}${be.describe ? ` (${be.describe()})` : ''}`);

  const chat =
    settings.chatTemplate !== undefined ? resolveChatTemplate(settings.chatTemplate) : null;
  const columns = settings.columns ? parseColumnMapping(settings.columns) : undefined;
  const data = await loadDataset(dataArg, tokenizer, {
    maxSeqLen: settings.seqLen,
    ...(names.split !== undefined ? { split: names.split } : {}),
    ...(chat ? { chatTemplate: chat.source } : {}),
    format: settings.format,
    columns,
    promptTemplate: settings.template ? new PromptTemplate(settings.template) : undefined,
    trainOnPrompt: settings.trainOnPrompt,
    truncation: settings.truncation,
    skipBadRows: settings.skipBadRows,
    maxRowBytes: settings.maxRowBytes,
    validFraction: settings.validFraction,
    seed: settings.seed,
  });
  const st = data.stats.train;
  log(
    `data: ${data.format} format, ${st.examples} train examples (${formatCount(st.tokens)} tokens, ${formatCount(st.lossTokens)} with loss), ${data.valid.length} validation (${data.validSource})${st.badRows ? `, ${st.badRows} bad rows skipped` : ''}${st.overLength ? `, ${st.overLength} over-long (${data.truncation})` : ''}`,
  );
  const advice = lengthAdvice(st, {
    seqLen: settings.seqLen,
    policy: data.truncation,
    format: data.format,
    contextLength: c.maxPositionEmbeddings || null,
  });
  for (const w of advice.warnings) log(`warning: ${w}`);
  if (advice.refusal) {
    if (!settings.force) throw new Error(advice.refusal);
    log('continuing because of --force');
  }
  const padId = tokenizer.padId ?? tokenizer.eosId ?? 0;
  const trainBatcher = new Batcher(data.train, {
    batchSize: settings.batchSize,
    seqLen: settings.seqLen,
    packing: settings.packing,
    shuffle: true,
    seed: settings.seed,
    padId,
  });
  const validBatcher =
    data.valid.length > 0
      ? new Batcher(data.valid, {
          batchSize: settings.batchSize,
          seqLen: settings.seqLen,
          packing: settings.packing,
          shuffle: false,
          padId,
        })
      : null;
  if (settings.loadBest && !validBatcher)
    throw new Error(
      '--load-best needs validation data to pick the best adapter (a valid file, or --valid-fraction > 0)',
    );
  // Each epoch's own plan counts: shuffled packing can give an epoch a batch more or less than the first.
  const maxSteps =
    settings.maxSteps ??
    Math.max(1, Math.ceil(trainBatcher.batchesInEpochs(settings.epochs ?? 1) / settings.gradAccum));
  const warmup = warmupSteps(maxSteps, settings.warmupSteps, settings.warmupRatio);
  log(
    `training: ${maxSteps} steps × ${settings.gradAccum} × ${settings.batchSize} × ${settings.seqLen} tokens (${settings.packing ? '~' : ''}${trainBatcher.batchesPerEpoch} batches per epoch), lr ${settings.lr} ${settings.schedule}, warm-up ${warmup}, ${settings.optimizer}`,
  );
  const run: TrainRun = {
    model: loaded,
    tokenizer,
    data,
    settings,
    maxSteps,
    warmupSteps: warmup,
    batchesPerEpoch: trainBatcher.batchesPerEpoch,
    plan,
  };
  await onStart?.(run);

  const evalBatches = validBatcher
    ? () => {
        const out: ModelBatch[] = [];
        for (const b of validBatcher.epoch(0)) {
          if (out.length >= settings.evalBatches) break;
          out.push(b);
        }
        return out;
      }
    : null;
  const modelPath = checkpoint.path;
  const trainer = new Trainer(
    model,
    trainerOptionsOf(settings, {
      outputDir: output,
      maxSteps,
      // PEFT's base_model_name_or_path: the model's name (Hub id when known), not this machine's path.
      baseModel: names.baseModelName ?? modelName(modelPath),
      recipe: {
        baseModelPath: names.baseModelPath ?? path.resolve(modelPath),
        quantization: q,
        data: {
          format: data.format,
          columns: columns ?? null,
          template: settings.template ?? null,
          chatTemplateName: chat?.name ?? null,
          trainOnPrompt: settings.trainOnPrompt,
          seqLen: settings.seqLen,
        },
        chatTemplate: chat?.source ?? (data.format === 'chat' ? tokenizer.chatTemplate : null),
      },
      arenaBytes: plan.arenaBytes,
    }),
    trainBatcher.source(),
    evalBatches,
    events,
  );
  let summary: TrainSummary;
  try {
    summary = await trainer.run();
  } finally {
    trainer.dispose();
  }
  await onEnd?.(run, summary);
  return {
    ...summary,
    outputDir: output,
    adapterPath: path.join(summary.adapterDir, 'adapter_model.safetensors'),
    metricsPath: path.join(output, 'metrics.jsonl'),
    maxSteps,
    format: data.format,
    trainExamples: st.examples,
    validExamples: data.valid.length,
    settings,
  };
}
