/**
 * The memory plan, measured rather than replayed: the model is built and the real training step
 * (Trainer.computeGradients + Trainer.update: forward, loss, backward, clipping, the optimizer) and
 * the real evaluation pass (Trainer.evaluate) run on the counting backend (backends/counting.ts),
 * whose tensors have shapes and byte counts but no storage and whose kernels do nothing. The step
 * arenas are the real ChunkArena with its growth policy, so their capacities are the ones a run
 * reaches, and a change to the model or the trainer changes the plan with nothing to keep in step.
 *
 * What the counting backend cannot see is added as measured constants: the Node.js runtime and
 * the kernels' per-thread scratch.
 */
import { CountingBackend } from '../backends/counting.js';
import { hostProcess } from '../io/host.js';
import { MAX_CHUNK_BYTES } from '../tensor/arena.js';
import { type BuildConfig, buildLlama, type LoraConfig } from '../models/build.js';
import { Linear4bit } from '../nn/linear.js';
import { LoraLinear } from '../nn/lora.js';
import type { LlamaModel, ModelBatch } from '../models/llama.js';
import { PROJECTIONS } from '../models/llama.js';
import { syntheticSource } from '../models/synthetic.js';
import type { Packed4bitWeight } from '../tensor/backend.js';
import { Tensor } from '../tensor/tensor.js';
import type { PlanOptions } from './plan.js';
import { type KernelCall, recordKernels } from './plan-kernels.js';
import type { PlanModel } from './plan-shapes.js';
import { type BatchSource, Trainer, type TrainOptions } from './trainer.js';

/**
 * Resident memory beyond the native tensors: Node.js with tsx, the addon and the library loaded
 * (≈90 MiB at start), V8 code and heap growth, allocator slack, kernel thread stacks (measured).
 */
export const RUNTIME_BYTES = 120 * 2 ** 20;

/** Per-thread GEMM/attention scratch (packed panels, 4-bit scale rows) kept between calls. */
export const WORKSPACE_PER_THREAD_BYTES = 2 * 2 ** 20;

export interface MemoryBreakdown {
  /** Node.js, V8 heap, the addon. */
  readonly runtime: number;
  /** Frozen weights: 4-bit projections (+ absmax state), f32 embedding / lm_head / norms, rotary tables. */
  readonly baseWeights: number;
  /** LoRA A and B. */
  readonly adapters: number;
  readonly gradients: number;
  readonly optimizerStates: number;
  /** The step arena: layer inputs (checkpoints) or full tapes, loss buffers, gradient ping-pong. */
  readonly activations: number;
  /** The per-layer arena (one layer's tape and backward temporaries) and kernel scratch. */
  readonly workspace: number;
}

export interface MeasuredMemory {
  readonly memory: MemoryBreakdown;
  /** The most the counting backend held at once, plus runtime and kernel scratch. */
  readonly peakBytes: number;
  /**
   * The most the backend itself holds at once (weights, adapters, gradients, states, arenas): what
   * the native allocator's high-water mark reads in a real run (CpuBackend.memoryStats().peakBytes).
   */
  readonly backendPeakBytes: number;
  /** The most each arena had in use: create the Trainer's arenas this size and they never grow. */
  readonly arenaBytes: { readonly step: number; readonly layer: number };
  /** Bytes of the resident base's quantized payload (packed codes + absmax state), all and projections. */
  readonly payloadBytes: { readonly base: number; readonly projections: number };
  /**
   * Why the real run would stop (a tensor larger than one memory block of this runtime), or null.
   * The figures are then those of a runtime without that limit.
   */
  readonly refusal: string | null;
  /**
   * The kernel calls of one training step (forward, loss, backward, clipping, optimizer), in order,
   * by shape (plan-kernels.ts): what the speed plan times. Empty when nothing is trained (rank 0).
   */
  readonly stepKernels: readonly KernelCall[];
  /**
   * Seconds that step spent in JavaScript between its kernels (model and trainer code, arena
   * bookkeeping; recordKernels), measured on this machine: the speed plan adds it to the kernels'.
   */
  readonly stepHostSeconds: number;
  /** Tokens that step processes (batch × seq; one sequence when the batch was scaled, see refusal). */
  readonly stepTokens: number;
}

/** The config a shape is built with (rope and norm details do not change memory: defaults). */
function buildConfigOf(m: PlanModel): BuildConfig {
  return {
    ...m,
    rmsNormEps: m.rmsNormEps ?? 1e-5,
    ropeTheta: m.ropeTheta ?? 10000,
    ropeScaling: m.ropeScaling ?? null,
  };
}

/**
 * A batch of the planned shape, packed as the Batcher packs one (segment ids included). Its values
 * do not change memory, so every field is the same zero array: one allocation, never written, so
 * even an absurd batch (the plan exists to refuse those) costs address space rather than memory.
 */
function planBatch(o: PlanOptions): ModelBatch {
  const zeros = new Int32Array(o.batchSize * o.seqLen);
  return {
    batchSize: o.batchSize,
    seqLen: o.seqLen,
    inputIds: zeros,
    labels: zeros,
    positions: zeros,
    segmentIds: zeros,
  };
}

function trainOptions(o: PlanOptions, arenaBytes?: TrainOptions['arenaBytes']): TrainOptions {
  return {
    outputDir: '',
    maxSteps: 2,
    lr: 1e-4,
    schedule: 'constant',
    warmupSteps: 0,
    gradAccum: o.gradAccum ?? 1,
    maxGradNorm: 1,
    weightDecay: 0,
    optimizer: o.optimizer,
    seed: 0,
    gradientCheckpointing: o.gradientCheckpointing,
    lossChunkRows: o.lossChunkRows,
    evalEvery: 0,
    saveEvery: 0,
    keepCheckpoints: 1,
    earlyStoppingPatience: 0,
    onNonFinite: 'stop',
    resume: false,
    baseModel: null,
    ...(arenaBytes ? { arenaBytes } : {}),
  };
}

/** Bytes of a 4-bit weight's own payload: packed codes and absmax state (not the shared code tables). */
function payload4bit(w: Packed4bitWeight): number {
  return (
    w.packed.size + w.absmax.size * (w.nested ? 1 : 4) + (w.nested ? w.nested.absmax.size * 4 : 0)
  );
}

function basePayload(model: LlamaModel): { base: number; projections: number } {
  let projections = 0;
  for (const layer of model.layers) {
    for (const name of PROJECTIONS) {
      const p = layer.proj[name];
      if (!p) continue;
      const base = p instanceof LoraLinear ? p.base : p;
      projections += base instanceof Linear4bit ? payload4bit(base.weight) : base.weightBytes;
    }
  }
  const tableBytes = (t: Tensor | Packed4bitWeight) =>
    t instanceof Tensor ? t.size * 4 : payload4bit(t);
  let other = tableBytes(model.embedding) + model.finalNorm.size * 4;
  if (!model.tiedEmbeddings) {
    const head = model.lmHead;
    other += head instanceof Linear4bit ? payload4bit(head.weight) : head.weightBytes;
  }
  for (const layer of model.layers) {
    for (const norm of [layer.attnNorm, layer.ffnNorm, layer.qNorm, layer.kNorm])
      other += (norm?.size ?? 0) * 4;
  }
  return { base: projections + other, projections };
}

/**
 * Builds `m` on the counting backend and runs what a training run does with it: two optimizer
 * steps and an evaluation from 1 MiB arenas (what they grow to gives `arenaBytes`), then, when the
 * arenas are presized as `qlora train` creates them, a step and an evaluation on arenas of that size.
 */
export async function measureTrainingMemory(m: PlanModel, o: PlanOptions): Promise<MeasuredMemory> {
  const tokens = o.batchSize * o.seqLen;
  const embedded = tokens * m.hiddenSize * 4;
  if (o.batchSize > 1 && embedded > MAX_CHUNK_BYTES) {
    // The embedding output [tokens, hidden] alone is past the largest block: the arena refuses
    // this run before its first layer. Running its step here would cost host memory and time in
    // proportion to the batch for a run that cannot start, so one sequence is measured and the
    // arenas scaled by the batch size (an estimate: said so in the refusal).
    const one = await measureTrainingMemory(m, { ...o, batchSize: 1 });
    const scratch = one.memory.workspace - one.arenaBytes.layer;
    const step = one.memory.activations * o.batchSize;
    const layer = (one.memory.workspace - scratch) * o.batchSize;
    const grown = step + layer - one.memory.activations - (one.memory.workspace - scratch);
    return {
      ...one,
      memory: { ...one.memory, activations: step, workspace: layer + scratch },
      peakBytes: one.peakBytes + grown,
      backendPeakBytes: one.backendPeakBytes + grown,
      arenaBytes: { step, layer },
      stepTokens: o.seqLen,
      refusal:
        `a batch of ${tokens} tokens needs a [${tokens}, ${m.hiddenSize}] f32 activation of ${embedded} bytes, ` +
        `more than the largest block this runtime can hold (${MAX_CHUNK_BYTES} bytes; the activations shown are ` +
        `one sequence's × ${o.batchSize}); use a smaller batch or sequence length`,
    };
  }
  try {
    return await measure(m, o, new CountingBackend());
  } catch (e) {
    // The arena refuses a tensor no block of this runtime can hold: the run would stop there.
    // Say so, and size the run as if blocks were unbounded.
    const message = (e as Error).message;
    if (!/more than the largest block/.test(message)) throw e;
    const unbounded = await measure(m, o, new CountingBackend(Number.MAX_SAFE_INTEGER));
    return { ...unbounded, refusal: message };
  }
}

async function measure(m: PlanModel, o: PlanOptions, be: CountingBackend): Promise<MeasuredMemory> {
  const config = buildConfigOf(m);
  const lora: LoraConfig = {
    r: o.rank,
    alpha: 2 * o.rank,
    dropout: o.loraDropout,
    useRslora: false,
    init: 'kaiming',
    seed: 0,
    targets: o.targets,
    layers: null,
  };
  const training = o.rank > 0;
  const kept = o.keptGguf ?? null;
  const keptType =
    kept === null
      ? null
      : typeof kept === 'function'
        ? kept
        : (name: string) => (/_proj\.weight$/.test(name) ? kept : null);
  const synthetic = syntheticSource(config);
  const model = await buildLlama(
    config,
    keptType ? { ...synthetic, ggmlTypeOf: keptType } : synthetic,
    {
      backend: be,
      keepQuantized: keptType !== null,
      quantization:
        o.quantization && !keptType
          ? {
              quantType: 'nf4',
              blocksize: o.quantization.blocksize,
              doubleQuant: o.quantization.doubleQuant,
            }
          : null,
      lora: training ? lora : null,
      quantizeHead: o.quantizeHead ?? false,
      quantizeEmbedding: o.quantizeEmbedding ?? false,
      // As `qlora train` builds it: rotary tables for the sequence length.
      maxPositions: o.seqLen,
    },
  );
  const allocated = () => be.memoryStats().allocatedBytes;
  const params = model.parameters();
  const adapters = params.reduce((s, p) => s + be.bytesOf(p.value), 0);
  const batch = planBatch(o);
  const source: BatchSource = {
    next: () => batch,
    cursor: () => 0,
    restore: () => {},
  };
  const evalBatches = () => [batch];
  const trainers: Trainer[] = [];
  try {
    const trainer = (arenaBytes?: TrainOptions['arenaBytes']) => {
      const t = new Trainer(model, trainOptions(o, arenaBytes), source, evalBatches);
      trainers.push(t);
      return t;
    };
    // Growing from 1 MiB: the peaks each arena reaches are what a presized arena needs.
    const grow = trainer();
    const beforeOptimizer = allocated();
    const optimizer = training ? grow.createOptimizer() : null;
    const optimizerStates = allocated() - beforeOptimizer;
    let stepKernels: KernelCall[] = [];
    let stepHostSeconds = 0;
    const steps = async (t: Trainer, count: number, record: boolean) => {
      for (let s = 0; s < (optimizer ? count : 0); s++) {
        const step = async () => {
          const g = await t.computeGradients(s);
          t.update(optimizer!, g.gradNorm, 1e-4);
        };
        // The second step's kernels (steady state: the first also sizes the arenas) are what the
        // speed plan times.
        if (record && s === 1)
          ({ calls: stepKernels, hostSeconds: stepHostSeconds } = await recordKernels(be, step));
        else await step();
      }
      await t.evaluate();
    };
    await steps(grow, 2, true);
    const grown = grow.arenaStats();
    const arenaBytes = {
      step: grown.step.peakBytes,
      layer: grown.layer.peakBytes,
    };
    let arenas = grown;
    if (o.presizedArenas) {
      grow.dispose();
      trainers.pop();
      // The peak of a presized run is its own: the growing run's chunk tails never exist in it.
      be.resetPeak();
      const sized = trainer(arenaBytes);
      await steps(sized, 1, false);
      arenas = sized.arenaStats();
    }
    const gradients = params.reduce((s, p) => s + (p.grad ? be.bytesOf(p.grad) : 0), 0);
    const arenaCapacity = arenas.step.capacity + arenas.layer.capacity;
    // Everything else the backend holds now: the frozen base (and the trainer's few statistics).
    const baseWeights = allocated() - arenaCapacity - adapters - gradients - optimizerStates;
    const scratch = hostProcess.cpuCount() * WORKSPACE_PER_THREAD_BYTES;
    const memory: MemoryBreakdown = {
      runtime: RUNTIME_BYTES,
      baseWeights,
      adapters,
      gradients,
      optimizerStates,
      activations: arenas.step.capacity,
      workspace: arenas.layer.capacity + scratch,
    };
    const steady = Object.values(memory).reduce((s, v) => s + v, 0);
    const backendPeakBytes = be.memoryStats().peakBytes;
    optimizer?.dispose();
    return {
      memory,
      peakBytes: Math.max(steady, RUNTIME_BYTES + scratch + backendPeakBytes),
      backendPeakBytes,
      arenaBytes,
      payloadBytes: basePayload(model),
      refusal: null,
      stepKernels,
      stepHostSeconds,
      stepTokens: o.batchSize * o.seqLen,
    };
  } finally {
    for (const t of trainers) t.dispose();
    model.dispose();
  }
}
