/**
 * The training worker: the library itself, running in a Web Worker on WebGPU. The user's files are
 * mounted into a memory file system (read by Blob slices with FileReaderSync, so the synchronous
 * readers of src/io run unchanged and a model is read tensor by tensor, never whole); the Trainer
 * is the CLI's; outputs are written to the memory file system and checkpoints are copied into the
 * Origin Private File System so a stopped run can be resumed later, even after a reload.
 */
import { installHost, type HostPath } from '../src/io/host.js';
import { MemoryFs } from '../src/io/memory-fs.js';
import { posixPath } from '../src/io/posix-path.js';
import { type AdapterSummary, getGpu, summarizeAdapter } from '../src/backends/webgpu/gpu.js';
import type { Backend } from '../src/tensor/backend.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import type { LlamaConfig } from '../src/io/config.js';
import { loadPeftAdapter } from '../src/io/peft.js';
import { type AdapterRecipe, type DataRecipe, RECIPE_FILE } from '../src/io/adapter-recipe.js';
import { buildLlama, type LoraConfig } from '../src/models/build.js';
import type { LlamaModel, ModelBatch } from '../src/models/llama.js';
import { loadTokenizer, tokenizerPathFor } from '../src/tokenizer/index.js';
import type { Tokenizer } from '../src/tokenizer/types.js';
import { Batcher } from '../src/data/batching.js';
import { type ColumnMapping, parseColumnMapping } from '../src/data/columns.js';
import { type LoadedDataset, loadDataset } from '../src/data/dataset.js';
import { BRACKET_STYLE, inspectReport, maskedSegments } from '../src/data/inspect.js';
import { PromptTemplate } from '../src/data/prompt-template.js';
import { generate } from '../src/generate/generate.js';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { deviceFit } from '../src/train/device-fit.js';
import { formatPlan, planTraining, type TrainingPlan } from '../src/train/plan.js';
import { warmupSteps } from '../src/train/schedule.js';
import { LOSS_CHUNK_ROWS } from '../src/train/settings.js';
import { Trainer } from '../src/train/trainer.js';
import {
  type OpfsDir,
  copyIntoOpfs,
  copyFromOpfs,
  opfsRoot,
  readOpfsText,
  removeOpfs,
  writeOpfsText,
} from './opfs.js';
import type {
  DataOptions,
  InspectView,
  ModelSummary,
  Reply,
  Request,
  Resumable,
  RunOptions,
} from './protocol.js';

declare const self: {
  postMessage(m: unknown, transfer?: Transferable[]): void;
  onmessage: ((e: { data: Request }) => void) | null;
};
declare const navigator: { gpu?: GPU; deviceMemory?: number; hardwareConcurrency?: number };

const memfs = new MemoryFs();
const interruptHandlers = new Set<() => void>();
installHost({
  fs: memfs.asHostFs(),
  path: posixPath as unknown as HostPath,
  process: {
    pid: 1,
    cpuCount: () => navigator.hardwareConcurrency ?? 1,
    // The planner's RAM check is replaced by the device check (deviceFit) here.
    totalMemoryBytes: () => Number.MAX_SAFE_INTEGER,
    peakRssBytes: () => 0,
    onInterrupt: (handler) => {
      interruptHandlers.add(handler);
      return () => interruptHandlers.delete(handler);
    },
    // A macrotask: the page's 'stop' message runs between steps.
    yieldToEvents: () => new Promise<void>((resolve) => setTimeout(resolve, 0)),
  },
});

const OUT = '/out';
const OPFS_RUN = 'qlora-run';

const post = (m: Reply, transfer?: Transferable[]) => self.postMessage(m, transfer);
const status = (text: string) => post({ type: 'status', text });

let adapter: AdapterSummary | null = null;
let backend: Backend | null = null;
let modelPath: string | null = null;
let modelName = '';
let config: LlamaConfig | null = null;
let tokenizer: Tokenizer | null = null;
let dataPath: string | null = null;
let dataName = '';
let dataset: LoadedDataset | null = null;
let datasetKey = '';
let training = false;
/** Stop pressed while the model was still loading: do not start the loop. */
let stopRequested = false;

async function checkGpu(): Promise<void> {
  // Never hang on a missing GPU: no navigator.gpu, or an adapter request that yields null, is a clear message.
  const gpu = navigator.gpu ?? (await getGpu());
  if (!gpu) {
    post({
      type: 'gpu',
      ok: false,
      message:
        'This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge or Firefox, or Chromium with --enable-unsafe-webgpu.',
    });
    return;
  }
  const a = await Promise.race([
    gpu.requestAdapter({ powerPreference: 'high-performance' }),
    new Promise<null>((resolve) => setTimeout(() => resolve(null), 10_000)),
  ]);
  if (!a) {
    post({
      type: 'gpu',
      ok: false,
      message:
        'WebGPU is present but gave no GPU adapter (blocked or unsupported GPU/driver). Check chrome://gpu, or start the browser with --enable-unsafe-webgpu.',
    });
    return;
  }
  adapter = summarizeAdapter(a);
  post({ type: 'gpu', ok: true, adapter });
}

async function getBackend(name: RunOptions['backend']): Promise<Backend> {
  if (backend?.name === name) return backend;
  // Loaded on first use, so a backend that cannot start (e.g. kernels it lacks) is an error message
  // when training starts, not a worker that dies while the page is still picking files.
  if (name === 'ref') {
    const { RefBackend } = await import('../src/backends/ref/index.js');
    backend = new RefBackend();
  } else {
    const { createWebGpuBackend } = await import('../src/backends/webgpu/index.js');
    backend = await createWebGpuBackend();
  }
  return backend;
}

function countParameters(c: LlamaConfig): number {
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const layer =
    c.hiddenSize * (q + 2 * kv) +
    q * c.hiddenSize +
    3 * c.hiddenSize * c.intermediateSize +
    2 * c.hiddenSize;
  return (
    c.numLayers * layer + c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize
  );
}

function openModel(files: readonly { path: string; file: File }[], folder: string | null): void {
  for (const p of memfs.listFiles('/model')) memfs.rmSync(`/model/${p}`);
  for (const f of files) memfs.mount(`/model/${f.path}`, f.file);
  if (folder !== null) {
    modelPath = `/model/${folder}`;
    modelName = folder;
  } else {
    const main = files.find((f) => /\.(gguf|bin)$/i.test(f.path)) ?? files[0];
    if (!main) throw new Error('no model file was picked');
    modelPath = `/model/${main.path}`;
    modelName = main.path;
  }
  const ck = openCheckpoint(modelPath);
  try {
    config = ck.config;
    const tokPath = tokenizerPathFor(modelPath);
    tokenizer = loadTokenizer(tokPath, { vocabSize: ck.config.vocabSize });
    dataset = null;
    const summary: ModelSummary = {
      name: modelName,
      source: ck.source,
      architecture: ck.config.architecture,
      layers: ck.config.numLayers,
      hidden: ck.config.hiddenSize,
      vocab: ck.config.vocabSize,
      parameters: countParameters(ck.config),
      tokenizer: `${posixPath.basename(tokPath)} (${tokenizer.vocabSize} tokens)`,
    };
    post({ type: 'model', summary });
  } finally {
    ck.close();
  }
}

// The base the page trains on: NF4, blocks of 64, double-quantized absmax (as QLoRA does).
const BASE_QUANT = { quantType: 'nf4', blocksize: 64, doubleQuant: true } as const;

/**
 * What the adapter was trained on, saved beside it (qlora_config.json) as the CLI saves it, so
 * `qlora generate/eval/export` on the downloaded folder use the same 4-bit base and data recipe.
 */
/** The --columns mapping the user typed (the same for the dataset and the recipe saved with the adapter). */
function columnsOf(o: DataOptions): ColumnMapping | null {
  return o.columns.trim() ? parseColumnMapping(o.columns) : null;
}

function adapterRecipe(o: RunOptions, format: DataRecipe['format']): AdapterRecipe {
  return {
    baseModelPath: null,
    quantization: {
      ...BASE_QUANT,
      quantizeHead: o.quantizeEmbeddingAndHead,
      quantizeEmbeddings: o.quantizeEmbeddingAndHead,
    },
    data: {
      format,
      columns: columnsOf(o),
      template: o.template.trim() ? o.template : null,
      chatTemplateName: null,
      trainOnPrompt: o.trainOnPrompt,
      seqLen: o.seqLen,
    },
    chatTemplate: null,
  };
}

function datasetOptions(o: DataOptions) {
  return {
    maxSeqLen: o.seqLen,
    format: o.format,
    columns: columnsOf(o) ?? undefined,
    promptTemplate: o.template.trim() ? new PromptTemplate(o.template) : undefined,
    trainOnPrompt: o.trainOnPrompt,
    validFraction: o.validFraction,
    seed: o.seed,
    skipBadRows: true,
  };
}

async function loadData(o: DataOptions): Promise<LoadedDataset> {
  if (!tokenizer || !modelPath)
    throw new Error('pick a model first (the data is tokenized with its tokenizer)');
  if (!dataPath) throw new Error('pick a data file');
  const key = JSON.stringify([modelPath, dataPath, o]);
  if (dataset && key === datasetKey) return dataset;
  dataset = await loadDataset(dataPath, tokenizer, datasetOptions(o));
  datasetKey = key;
  return dataset;
}

async function inspect(o: DataOptions): Promise<void> {
  const data = await loadData(o);
  const lines = inspectReport(data, tokenizer!, {
    path: dataName,
    tokenizerPath: posixPath.basename(tokenizerPathFor(modelPath!)),
    formatWasGiven: o.format !== 'auto',
    maxSeqLen: o.seqLen,
    show: 0,
    style: BRACKET_STYLE,
  });
  const view: InspectView = {
    file: dataName,
    format: data.format,
    formatNote: lines.find((l) => l.startsWith('format'))?.slice(14) ?? data.format,
    lines,
    examples: data.train.slice(0, 3).map((ex) => maskedSegments(tokenizer!, ex, 600).segments),
    trainExamples: data.train.length,
    validExamples: data.valid.length,
    batchesPerEpoch: 0,
  };
  post({ type: 'inspect', view });
}

function planFor(o: RunOptions): Promise<TrainingPlan> {
  if (!config) throw new Error('pick a model first');
  return planTraining(config, {
    seqLen: o.seqLen,
    batchSize: o.batchSize,
    rank: o.rank,
    targets: 'all-linear',
    gradientCheckpointing: true,
    optimizer: 'adamw',
    lossChunkRows: LOSS_CHUNK_ROWS,
    quantization: { blocksize: 64, doubleQuant: true },
    loraDropout: 0,
    presizedArenas: true,
    quantizeEmbedding: o.quantizeEmbeddingAndHead,
    quantizeHead: o.quantizeEmbeddingAndHead,
  });
}

async function plan(o: RunOptions): Promise<void> {
  const p = await planFor(o);
  if (!adapter) {
    post({ type: 'plan', plan: { fits: false, lines: [], reasons: ['no WebGPU adapter'] } });
    return;
  }
  const limits = {
    maxBufferSize: adapter.limits.maxBufferSize ?? 256 * 2 ** 20,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize ?? 128 * 2 ** 20,
  };
  // A software adapter computes in system RAM; navigator.deviceMemory (GiB, capped at 8) is a floor for it.
  const budget =
    adapter.isFallback && navigator.deviceMemory ? navigator.deviceMemory * 2 ** 30 : null;
  const fit = deviceFit(config!, p, limits, budget);
  const lines = formatPlan(p, modelName).filter(
    (l) => !/runtime|predicted speed|predicted peak|warning/.test(l),
  );
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  lines.push(`  on the GPU at peak ${mib(fit.deviceBytes).padStart(11)}`);
  lines.push(
    `  largest tensor      ${mib(fit.largest[0]!.bytes).padStart(11)}   ${fit.largest[0]!.what} (weights up to ${mib(limits.maxBufferSize)}, activations up to ${mib(fit.bindingLimit)})`,
  );
  post({ type: 'plan', plan: { fits: fit.fits, lines, reasons: fit.reasons } });
}

/** Greedy continuation of the prompt, as `qlora generate -t 0` prints it (prompt + text). */
async function sample(model: LlamaModel, prompt: string, tokens: number): Promise<string> {
  const tok = tokenizer!;
  const arena = model.backend.createArena(1 << 20, 'sample');
  try {
    let ids = tok.encode(prompt, { addSpecialTokens: false });
    if (tok.bosId !== null) ids = [tok.bosId, ...ids];
    const r = await generate(model, tok, ids, arena, { maxTokens: tokens, temperature: 0 });
    return prompt + r.text;
  } finally {
    arena.dispose();
  }
}

function loraConfig(o: RunOptions): LoraConfig {
  return {
    r: o.rank,
    alpha: o.alpha,
    dropout: 0,
    useRslora: false,
    init: 'kaiming',
    seed: o.seed,
    targets: 'all-linear',
    layers: null,
  };
}

async function resumable(): Promise<Resumable | null> {
  try {
    const root = await opfsRoot();
    const meta = await readOpfsText(root, `${OPFS_RUN}/run.json`);
    return meta ? (JSON.parse(meta) as Resumable) : null;
  } catch {
    return null;
  }
}

async function persist(root: OpfsDir, dir: string, step: number): Promise<void> {
  // The newest checkpoint and the metrics replace what OPFS held: one resumable run at a time.
  await removeOpfs(root, OPFS_RUN);
  await copyIntoOpfs(memfs, dir, root, `${OPFS_RUN}/${posixPath.basename(dir)}`);
  if (memfs.existsSync(`${OUT}/metrics.jsonl`))
    await copyIntoOpfs(memfs, `${OUT}/metrics.jsonl`, root, `${OPFS_RUN}/metrics.jsonl`);
  const run: Resumable = { step, model: modelName, data: dataName };
  await writeOpfsText(root, `${OPFS_RUN}/run.json`, JSON.stringify(run));
  post({ type: 'resumable', run });
}

function readHistory(): { train: [number, number][]; eval: [number, number][] } {
  const out = { train: [] as [number, number][], eval: [] as [number, number][] };
  if (!memfs.existsSync(`${OUT}/metrics.jsonl`)) return out;
  for (const line of (memfs.readFileSync(`${OUT}/metrics.jsonl`, 'utf8') as string).split('\n')) {
    if (!line.trim()) continue;
    // metrics.jsonl rows use the HF Trainer's names: train rows carry `loss`, eval rows `eval_loss`.
    const r = JSON.parse(line) as { step: number; loss?: number; eval_loss?: number };
    if (typeof r.loss === 'number') out.train.push([r.step, r.loss]);
    if (typeof r.eval_loss === 'number') out.eval.push([r.step, r.eval_loss]);
  }
  return out;
}

async function train(o: RunOptions, resume: boolean): Promise<void> {
  if (!config || !modelPath || !tokenizer) throw new Error('pick a model first');
  if (training) throw new Error('training is already running');
  training = true;
  stopRequested = false;
  let model: LlamaModel | null = null;
  try {
    const data = await loadData(o);
    if (data.train.length === 0) throw new Error('the data gave no training examples');
    const lora = loraConfig(o);
    const be = await getBackend(o.backend);
    status(
      `loading ${modelName} onto ${be.name === 'webgpu' ? 'the GPU' : `the ${be.name} backend`} (4-bit NF4, tensor by tensor)…`,
    );
    const ck = openCheckpoint(modelPath);
    try {
      let loaded = 0;
      model = await buildLlama(ck.config, ck, {
        backend: be,
        quantization: BASE_QUANT,
        quantizeEmbedding: o.quantizeEmbeddingAndHead,
        quantizeHead: o.quantizeEmbeddingAndHead,
        lora,
        maxPositions: o.seqLen,
        onTensor: (name: string) => {
          loaded++;
          if (loaded % 8 === 0)
            status(`loading ${modelName}: ${loaded} of ${ck.tensorNames.length} tensors (${name})`);
        },
      });
    } finally {
      ck.close();
    }
    const padId = tokenizer.padId ?? tokenizer.eosId ?? 0;
    const trainBatcher = new Batcher(data.train, {
      batchSize: o.batchSize,
      seqLen: o.seqLen,
      packing: true,
      shuffle: true,
      seed: o.seed,
      padId,
    });
    const validBatcher =
      data.valid.length > 0
        ? new Batcher(data.valid, {
            batchSize: o.batchSize,
            seqLen: o.seqLen,
            packing: true,
            shuffle: false,
            padId,
          })
        : null;
    const maxSteps =
      o.steps > 0 ? o.steps : Math.max(1, Math.ceil(o.epochs * trainBatcher.batchesPerEpoch));
    const p = await planFor(o);

    // Resume: bring the saved checkpoint and metrics back from OPFS into the memory file system.
    memfs.rmSync(OUT, { recursive: true, force: true });
    memfs.mkdirSync(OUT, { recursive: true });
    const root = await opfsRoot().catch(() => null);
    let resumedAt = 0;
    if (resume) {
      const run = await resumable();
      if (!root || !run) throw new Error('there is no saved run to resume');
      if (run.model !== modelName || run.data !== dataName) {
        throw new Error(
          `the saved run is for ${run.model} on ${run.data}; pick those files to resume it`,
        );
      }
      await copyFromOpfs(root, OPFS_RUN, memfs, OUT);
      memfs.rmSync(`${OUT}/run.json`, { force: true });
      resumedAt = run.step;
    }
    if (stopRequested) throw new Error('stopped before the first step');
    post({ type: 'started', maxSteps, resumedAt, history: readHistory() });

    if (o.samplePrompt && o.sampleTokens > 0 && !resume) {
      status('sampling before training…');
      post({
        type: 'sample',
        when: 'before',
        text: await sample(model, o.samplePrompt, o.sampleTokens),
      });
    }
    status(`training: ${maxSteps} steps of ${o.batchSize} × ${o.seqLen} tokens`);
    const evalBatches = validBatcher
      ? () => {
          const out: ModelBatch[] = [];
          for (const b of validBatcher.epoch(0)) {
            if (out.length >= 4) break;
            out.push(b);
          }
          return out;
        }
      : null;
    const trainer = new Trainer(
      model,
      {
        outputDir: OUT,
        maxSteps,
        lr: o.lr,
        schedule: 'cosine',
        warmupSteps: warmupSteps(maxSteps, undefined, 0.05),
        gradAccum: 1,
        maxGradNorm: 1,
        weightDecay: 0,
        optimizer: 'adamw',
        seed: o.seed,
        gradientCheckpointing: true,
        lossChunkRows: LOSS_CHUNK_ROWS,
        evalEvery: o.evalEvery,
        saveEvery: o.saveEvery,
        keepCheckpoints: 1,
        earlyStoppingPatience: 0,
        onNonFinite: 'stop',
        resume,
        baseModel: modelName,
        arenaBytes: p.arenaBytes,
        recipe: adapterRecipe(o, data.format),
      },
      trainBatcher.source(),
      evalBatches,
      {
        onStep: (m) => post({ type: 'step', m, maxSteps }),
        onEval: (m) => post({ type: 'eval', m }),
        onCheckpoint: (dir, step) => {
          post({ type: 'checkpoint', step });
          if (root)
            persistQueue = persistQueue
              .then(() => persist(root, dir, step))
              .catch((e) =>
                status(
                  `could not save the checkpoint in the browser's storage: ${(e as Error).message}`,
                ),
              );
        },
      },
    );
    let summary;
    try {
      summary = await trainer.run();
    } finally {
      trainer.dispose();
    }
    await persistQueue;
    if (o.samplePrompt && o.sampleTokens > 0) {
      status('sampling after training…');
      post({
        type: 'sample',
        when: 'after',
        text: await sample(model, o.samplePrompt, o.sampleTokens),
      });
    }
    // The downloads: PEFT files as trained, and the same adapter as a GGUF LoRA for llama.cpp.
    exportGgufLora(loadPeftAdapter(OUT), config, `${OUT}/adapter.gguf`, {
      name: `${modelName} LoRA`,
    });
    const files = [];
    for (const name of [
      'adapter_model.safetensors',
      'adapter_config.json',
      RECIPE_FILE,
      'adapter.gguf',
      'metrics.jsonl',
      'loss.svg',
    ]) {
      if (memfs.existsSync(`${OUT}/${name}`))
        files.push({ name, bytes: await memfs.readBytes(`${OUT}/${name}`) });
    }
    post(
      { type: 'done', stoppedBy: summary.stoppedBy, steps: summary.steps, files },
      files.map((f) => f.bytes.buffer as ArrayBuffer),
    );
  } finally {
    model?.dispose();
    training = false;
  }
}

let persistQueue: Promise<void> = Promise.resolve();

async function handle(req: Request): Promise<void> {
  switch (req.type) {
    case 'gpu':
      await checkGpu();
      post({ type: 'resumable', run: await resumable() });
      return;
    case 'model':
      openModel(req.files, req.folder);
      return;
    case 'data':
      for (const p of memfs.listFiles('/data')) memfs.rmSync(`/data/${p}`);
      dataName = req.file.name;
      dataPath = `/data/${req.file.name}`;
      memfs.mount(dataPath, req.file);
      dataset = null;
      await inspect(req.options);
      return;
    case 'inspect':
      await inspect(req.options);
      return;
    case 'plan':
      await plan(req.options);
      return;
    case 'train':
      await train(req.options, req.resume);
      return;
    case 'stop':
      stopRequested = true;
      for (const h of interruptHandlers) h();
      return;
  }
}

self.onmessage = (e) => {
  const req = e.data;
  handle(req).catch((err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    post({ type: 'error', during: req.type, message });
  });
};
