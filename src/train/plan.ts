/**
 * The memory and speed planner: predicts the peak resident memory of a QLoRA training run and its
 * throughput from the model shape and training options alone, before any weight is loaded.
 *
 * Memory is counted the way the code allocates it: every native tensor is a 64-byte-rounded,
 * zero-filled (hence resident) block; per-step temporaries come from two bump arenas whose growth
 * policy (src/tensor/arena.ts) is replayed here allocation by allocation, in the order
 * LlamaModel.lossAndGradients makes them (src/models/llama.ts). Keep the two in step: the plan test
 * compares the prediction with the measured peak RSS of a real run.
 *
 * Speed is FLOP accounting (docs/performance.md § FLOP accounting) divided by calibrated rates:
 * GEMM work at a fraction of the FMA peak, attention at its own rate, and memory-bound passes at a
 * bandwidth.
 */
import { fs, hostProcess, nodeBuiltin, path } from '../io/host.js';
import type { BuildConfig } from '../models/build.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { configFromHf, type LlamaConfig, loadHfConfig } from '../io/config.js';
import { PROJECTIONS, type ProjectionName } from '../models/llama.js';
import type { Backend } from '../tensor/backend.js';
import { BYTES_PER_ELEMENT, type DType } from '../tensor/dtype.js';
import { chunkSizes, growChunkSize, MAX_CHUNK_BYTES } from '../tensor/arena.js';

export interface PlanOptions {
  readonly seqLen: number;
  readonly batchSize: number;
  /** LoRA rank; 0 plans inference-only memory for the base. */
  readonly rank: number;
  readonly targets: readonly ProjectionName[] | 'all-linear';
  readonly gradientCheckpointing: boolean;
  readonly optimizer: 'adamw' | 'adamw8bit';
  /** Rows of logits alive at once in the loss (StepOptions.lossChunkRows). */
  readonly lossChunkRows: number;
  /** 4-bit NF4/FP4 base (with or without double quantization), or a full-precision f32 base. */
  readonly quantization: { readonly blocksize: number; readonly doubleQuant: boolean } | null;
  /** LoRA dropout > 0 keeps a dropped-out copy of every adapted input. */
  readonly loraDropout: number;
  /** Micro-batches per optimizer step (does not change peak memory; shown for tokens/step). */
  readonly gradAccum?: number;
  /** The step arenas are created at plan.arenaBytes (true) or grow from 1 MiB (false). */
  readonly presizedArenas: boolean;
  /** An untied lm_head stored in 4-bit too (BuildOptions.quantizeHead). */
  readonly quantizeHead?: boolean;
  /** The embedding table stored in 4-bit too (BuildOptions.quantizeEmbedding). */
  readonly quantizeEmbedding?: boolean;
}

export const PLAN_DEFAULTS: PlanOptions = {
  seqLen: 512,
  batchSize: 1,
  rank: 16,
  targets: 'all-linear',
  gradientCheckpointing: true,
  optimizer: 'adamw',
  lossChunkRows: 256,
  quantization: { blocksize: 64, doubleQuant: true },
  loraDropout: 0,
  presizedArenas: true,
};

/** Machine facts the speed model needs. */
export interface MachineModel {
  /** Measured fp32 FMA peak of all threads, FLOP/s (the engine bench's number). */
  readonly peakFlops: number;
  /** Fraction of the peak dense GEMMs reach at these shapes. */
  readonly gemmEfficiency: number;
  /** Fraction of the peak the 4-bit GEMMs (dequantizing into packed panels) reach. */
  readonly gemm4bitEfficiency: number;
  /** Fraction of the peak the skinny LoRA products (one side of size r) reach. */
  readonly loraEfficiency: number;
  /** Fraction of the peak flash attention reaches. */
  readonly attentionEfficiency: number;
  /** Bytes/s of the memory-bound passes (norms, RoPE, SwiGLU, residuals, loss). */
  readonly bandwidth: number;
  readonly totalMemoryBytes: number;
}

/**
 * Defaults for the project's 2-core machine (AMD EPYC, AVX-512) when idle: FMA peak 2 × ≈270
 * GFLOP/s (benchFmaPeak, one thread), efficiencies fitted to `npm run bench:train` on an idle
 * machine (stories15M to Llama-2-7B within 3%; docs/performance.md). Pass measured values for
 * other machines.
 */
export function defaultMachine(overrides: Partial<MachineModel> = {}): MachineModel {
  return {
    peakFlops: 540e9,
    gemmEfficiency: 0.8,
    gemm4bitEfficiency: 0.85,
    loraEfficiency: 0.4,
    attentionEfficiency: 0.4,
    bandwidth: 25e9,
    totalMemoryBytes: hostProcess.totalMemoryBytes(),
    ...overrides,
  };
}

/**
 * Resident memory beyond the native tensors: Node.js with tsx, the addon and the library loaded
 * (≈90 MiB at start), V8 code and heap growth, allocator slack, kernel thread stacks (measured).
 */
export const RUNTIME_BYTES = 120 * 2 ** 20;

/** Per-thread GEMM/attention scratch (packed panels, 4-bit scale rows) kept between calls. */
const WORKSPACE_PER_THREAD_BYTES = 2 * 2 ** 20;

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

export interface ParameterCounts {
  /** Parameters of the projections (what is quantized). */
  readonly projections: number;
  readonly embedding: number;
  /** 0 when tied to the embedding. */
  readonly lmHead: number;
  readonly norms: number;
  readonly lora: number;
  /** All base parameters (projections + embedding + lm_head + norms). */
  readonly base: number;
}

export interface FlopsPerToken {
  /** Forward FLOPs (projections, vocabulary, LoRA, attention). */
  readonly forward: number;
  /** Backward FLOPs: input gradients through frozen weights, LoRA gradients, attention backward. */
  readonly backward: number;
  /** Extra forward of the layers under gradient checkpointing (not model FLOPs). */
  readonly recompute: number;
}

export interface TrainingPlan {
  readonly options: PlanOptions;
  readonly params: ParameterCounts;
  readonly memory: MemoryBreakdown;
  readonly peakBytes: number;
  /** Bits per parameter of the resident base weights: all of them, and the quantized projections alone. */
  readonly baseBitsPerParam: number;
  readonly projectionBitsPerParam: number;
  readonly flopsPerToken: FlopsPerToken;
  readonly tokensPerSecond: number;
  /** Model-FLOP utilisation the predicted speed implies (forward + backward, not recompute). */
  readonly mfu: number;
  readonly fits: boolean;
  /** Bytes each Trainer arena needs at its peak: create them this size (createArena) so they never grow. */
  readonly arenaBytes: { readonly step: number; readonly layer: number };
  readonly machine: MachineModel;
  readonly warnings: string[];
}

/** The shape facts the planner needs (BuildConfig without rope details). */
export type PlanModel = Pick<
  BuildConfig,
  | 'vocabSize'
  | 'hiddenSize'
  | 'intermediateSize'
  | 'numLayers'
  | 'numHeads'
  | 'numKvHeads'
  | 'headDim'
  | 'tieWordEmbeddings'
  | 'maxPositionEmbeddings'
  | 'attentionBias'
> &
  Partial<Pick<BuildConfig, 'attentionOutputBias' | 'mlpBias'>>;

const ALIGN = 64;
const roundUp = (bytes: number) => Math.ceil(bytes / ALIGN) * ALIGN;
/** One native tensor: 64-byte rounded (memory.cc), at least 64. */
const block = (elements: number, dtype: DType = 'f32') =>
  Math.max(ALIGN, roundUp(elements * BYTES_PER_ELEMENT[dtype]));

/**
 * Replays HostArena's policy (src/tensor/arena.ts): chunks of max(request, last chunk, 1 MiB),
 * unused chunk tails wasted, chunks merged into one (or as few as the block limit allows) on reset.
 * `capacity` is what stays resident.
 */
export class SimulatedArena {
  private chunks: number[] = [];
  private chunkIndex = 0;
  private offset = 0;
  private usedInEarlierChunks = 0;
  peakInUse = 0;

  constructor(
    initialBytes: number,
    private readonly maxChunkBytes: number = MAX_CHUNK_BYTES,
  ) {
    this.chunks = chunkSizes(Math.max(0, initialBytes), maxChunkBytes);
  }

  get capacity(): number {
    return this.chunks.reduce((s, c) => s + c, 0);
  }

  alloc(elements: number, dtype: DType = 'f32'): void {
    const bytes = roundUp(elements * BYTES_PER_ELEMENT[dtype]);
    let chunk = this.chunks[this.chunkIndex];
    if (chunk === undefined || this.offset + bytes > chunk) {
      this.usedInEarlierChunks += this.offset;
      this.offset = 0;
      this.chunkIndex = chunk !== undefined ? this.chunkIndex + 1 : this.chunkIndex;
      chunk = this.chunks[this.chunkIndex];
      if (chunk === undefined || bytes > chunk) {
        const last = this.chunks[this.chunks.length - 1];
        chunk = growChunkSize(bytes, last ?? 0, this.maxChunkBytes);
        this.chunks.splice(this.chunkIndex, 0, chunk);
      }
    }
    this.offset += bytes;
    this.peakInUse = Math.max(this.peakInUse, this.usedInEarlierChunks + this.offset);
  }

  reset(): void {
    const merged = chunkSizes(this.capacity, this.maxChunkBytes);
    if (merged.length < this.chunks.length) this.chunks = merged;
    this.chunkIndex = 0;
    this.offset = 0;
    this.usedInEarlierChunks = 0;
  }
}

interface ProjShape {
  readonly name: ProjectionName;
  readonly rows: number;
  readonly cols: number;
}

function projectionShapes(m: PlanModel): ProjShape[] {
  const q = m.numHeads * m.headDim;
  const kv = m.numKvHeads * m.headDim;
  const d = m.hiddenSize;
  const f = m.intermediateSize;
  const dims: Record<ProjectionName, [number, number]> = {
    q_proj: [q, d],
    k_proj: [kv, d],
    v_proj: [kv, d],
    o_proj: [d, q],
    gate_proj: [f, d],
    up_proj: [f, d],
    down_proj: [d, f],
  };
  return PROJECTIONS.map((name) => ({ name, rows: dims[name][0], cols: dims[name][1] }));
}

function targetSet(targets: PlanOptions['targets'], rank: number): Set<ProjectionName> {
  if (rank <= 0) return new Set();
  return new Set(targets === 'all-linear' ? PROJECTIONS : targets);
}

function hasBias(m: PlanModel, name: ProjectionName): boolean {
  if (name === 'q_proj' || name === 'k_proj' || name === 'v_proj') return m.attentionBias;
  if (name === 'o_proj') return m.attentionOutputBias ?? false;
  return m.mlpBias ?? false;
}

/** Resident bytes of one frozen projection as Linear4bit / DenseLinear hold it. */
function projectionBytes(rows: number, cols: number, q: PlanOptions['quantization']): number {
  const n = rows * cols;
  if (!q) return block(n);
  const nblocks = Math.ceil(n / q.blocksize);
  let bytes = block(Math.ceil(n / 2), 'u8') + block(16);
  if (q.doubleQuant) bytes += block(nblocks, 'u8') + block(Math.ceil(nblocks / 256)) + block(256);
  else bytes += block(nblocks);
  return bytes;
}

/** Bytes of a projection's quantized payload alone (packed codes + absmax state), for bits/param. */
function projectionPayloadBytes(
  rows: number,
  cols: number,
  q: PlanOptions['quantization'],
): number {
  const n = rows * cols;
  if (!q) return n * 4;
  const nblocks = Math.ceil(n / q.blocksize);
  return Math.ceil(n / 2) + (q.doubleQuant ? nblocks + Math.ceil(nblocks / 256) * 4 : nblocks * 4);
}

export function parameterCounts(
  m: PlanModel,
  o: Pick<PlanOptions, 'rank' | 'targets'>,
): ParameterCounts {
  const projs = projectionShapes(m);
  const targets = targetSet(o.targets, o.rank);
  let projections = 0;
  let lora = 0;
  for (const p of projs) {
    projections += p.rows * p.cols;
    if (targets.has(p.name)) lora += o.rank * (p.rows + p.cols);
  }
  projections *= m.numLayers;
  lora *= m.numLayers;
  const embedding = m.vocabSize * m.hiddenSize;
  const lmHead = m.tieWordEmbeddings ? 0 : embedding;
  const norms = (2 * m.numLayers + 1) * m.hiddenSize;
  return {
    projections,
    embedding,
    lmHead,
    norms,
    lora,
    base: projections + embedding + lmHead + norms,
  };
}

/**
 * The two arenas of the Trainer ('step' and 'layer', 1 MiB each to start), replaying
 * LlamaModel.lossAndGradients' allocations so the merged capacities settle where the real ones do.
 */
export function planArenas(
  m: PlanModel,
  options: Partial<PlanOptions> = {},
  initialBytes: { step: number; layer: number } = { step: 1 << 20, layer: 1 << 20 },
): { step: SimulatedArena; layer: SimulatedArena } {
  const o: PlanOptions = { ...PLAN_DEFAULTS, ...options };
  const step = new SimulatedArena(initialBytes.step);
  const layer = new SimulatedArena(initialBytes.layer);
  const n = o.batchSize * o.seqLen;
  const d = m.hiddenSize;
  const f = m.intermediateSize;
  const qDim = m.numHeads * m.headDim;
  const kvDim = m.numKvHeads * m.headDim;
  const targets = targetSet(o.targets, o.rank);
  const dropout = o.loraDropout > 0;
  const ckpt = o.gradientCheckpointing;
  const projs = new Map(projectionShapes(m).map((p) => [p.name, p]));
  // LoraLinear.forward: a dropped-out input copy (training with dropout), then t = xa·Aᵀ [n, r].
  const loraForward = (a: SimulatedArena, name: ProjectionName) => {
    if (!targets.has(name)) return;
    if (dropout) a.alloc(n * projs.get(name)!.cols);
    a.alloc(n * o.rank);
  };
  // LoraLinear.backward: dt [n, r], and with dropout a temporary input gradient [n, in].
  const loraBackward = (a: SimulatedArena, name: ProjectionName, needDx: boolean) => {
    if (!targets.has(name)) return;
    a.alloc(n * o.rank);
    if (needDx && dropout) a.alloc(n * projs.get(name)!.cols);
  };
  // LlamaModel.layerForward: tape in `a`, output in `out`.
  const layerForward = (a: SimulatedArena, out: SimulatedArena) => {
    a.alloc(n * d); // a
    a.alloc(n); // rstd1
    a.alloc(n * qDim);
    a.alloc(n * kvDim);
    a.alloc(n * kvDim);
    loraForward(a, 'q_proj');
    loraForward(a, 'k_proj');
    loraForward(a, 'v_proj');
    a.alloc(n * qDim); // attn
    a.alloc(o.batchSize * m.numHeads * o.seqLen); // lse
    a.alloc(n * d); // x1
    loraForward(a, 'o_proj');
    a.alloc(n * d); // b
    a.alloc(n); // rstd2
    a.alloc(n * f); // g
    a.alloc(n * f); // u
    loraForward(a, 'gate_proj');
    loraForward(a, 'up_proj');
    a.alloc(n * f); // m
    out.alloc(n * d); // layer output
    loraForward(a, 'down_proj');
  };
  // LlamaModel.layerBackward temporaries (all in the layer arena).
  const layerBackward = (a: SimulatedArena, needDx: boolean) => {
    a.alloc(n * f); // dm
    loraBackward(a, 'down_proj', true);
    a.alloc(n * f); // dg
    a.alloc(n * f); // du
    a.alloc(n * d); // db
    loraBackward(a, 'gate_proj', true);
    loraBackward(a, 'up_proj', true);
    a.alloc(n * d); // dx1
    a.alloc(n * qDim); // dattn
    loraBackward(a, 'o_proj', true);
    a.alloc(n * qDim); // dq
    a.alloc(n * kvDim); // dk
    a.alloc(n * kvDim); // dv
    if (needDx) a.alloc(n * d); // da
    loraBackward(a, 'q_proj', needDx);
    loraBackward(a, 'k_proj', needDx);
    loraBackward(a, 'v_proj', needDx);
  };
  // Two training steps (capacities settle after the first merge), then an evaluation forward
  // (Trainer.evaluate uses the same arenas; it keeps no tapes).
  for (const backward of [true, true, false]) {
    const keepTapes = backward && !ckpt;
    step.reset();
    step.alloc(n, 'i32'); // ids
    step.alloc(n, 'i32'); // positions
    step.alloc(n, 'i32'); // labels
    step.alloc(n * d); // embedding output
    for (let i = 0; i < m.numLayers; i++) {
      layerForward(keepTapes ? step : layer, step);
      if (!keepTapes) layer.reset();
    }
    step.alloc(n * d); // hf
    step.alloc(n); // rstdF
    if (backward) step.alloc(n * d); // dhf
    step.alloc(n); // losses
    step.alloc(Math.max(1, Math.min(n, o.lossChunkRows)) * m.vocabSize); // logits chunk
    if (!backward) continue;
    step.alloc(n * d); // dx ping
    step.alloc(n * d); // dx pong
    for (let i = m.numLayers - 1; i >= 0; i--) {
      layer.reset();
      if (ckpt) layerForward(layer, layer);
      layerBackward(layer, i > 0);
    }
    layer.reset();
  }
  step.reset();
  return { step, layer };
}

/** FLOPs per token (multiply-add = 2), counting causal attention's actual half of the scores. */
export function flopsPerToken(
  m: PlanModel,
  o: PlanOptions,
): FlopsPerToken & { gemm: number; gemm4bit: number; lora: number; attention: number } {
  const c = parameterCounts(m, o);
  const qDim = m.numHeads * m.headDim;
  const T = o.seqLen;
  const vocab = m.vocabSize * m.hiddenSize;
  const proj = c.projections;
  const loraFwd = 2 * c.lora;
  // Causal attention: scores and P·V over on average T/2 keys, 2 FLOPs per multiply-add.
  const attnFwd = m.numLayers * 2 * 2 * (T / 2) * qDim;
  const forward = 2 * proj + 2 * vocab + loraFwd + attnFwd;
  // Input gradients through every frozen matrix (+ lm_head), LoRA: dB, dt, dA, dx (4 products),
  // attention backward ≈ 2.5× its forward (recomputed scores, dQ, dK, dV).
  const backward = 2 * proj + 2 * vocab + 2 * loraFwd + 2.5 * attnFwd;
  const recompute = o.gradientCheckpointing ? 2 * proj + loraFwd + attnFwd : 0;
  const quantized = o.quantization !== null;
  const projWork = 2 * proj * (o.gradientCheckpointing ? 3 : 2);
  return {
    forward,
    backward,
    recompute,
    gemm: 4 * vocab + (quantized ? 0 : projWork),
    gemm4bit: quantized ? projWork : 0,
    lora: loraFwd * (o.gradientCheckpointing ? 4 : 3),
    attention: attnFwd * (o.gradientCheckpointing ? 4.5 : 3.5),
  };
}

/** Bytes moved per token by the memory-bound passes (reads + writes of activations, f32). */
function memoryBoundBytesPerToken(m: PlanModel, o: PlanOptions): number {
  const d = m.hiddenSize;
  const f = m.intermediateSize;
  const qDim = m.numHeads * m.headDim;
  // Per layer: 2 norms (+ backward), RoPE on q,k (+ inverse), SwiGLU (+ backward), residual adds,
  // roughly 40 d-sized and 8 f-sized passes forward+backward; the loss reads/writes V logits 3×.
  const perLayer = (40 * d + 8 * f + 6 * qDim) * 4 * (o.gradientCheckpointing ? 1.3 : 1);
  return m.numLayers * perLayer + 3 * 2 * m.vocabSize * 4;
}

/** Predicts peak memory and speed of QLoRA training of model `m` with options `o` on `machine`. */
export function planTraining(
  m: PlanModel,
  options: Partial<PlanOptions> = {},
  machine: MachineModel = defaultMachine(),
): TrainingPlan {
  const o: PlanOptions = { ...PLAN_DEFAULTS, ...options };
  for (const [k, v] of [
    ['seqLen', o.seqLen],
    ['batchSize', o.batchSize],
    ['lossChunkRows', o.lossChunkRows],
  ] as const) {
    if (!Number.isInteger(v) || v < 1)
      throw new Error(`plan: ${k} must be a positive integer, got ${v}`);
  }
  if (!Number.isInteger(o.rank) || o.rank < 0)
    throw new Error(`plan: rank must be a non-negative integer, got ${o.rank}`);
  const params = parameterCounts(m, o);
  const projs = projectionShapes(m);
  const targets = targetSet(o.targets, o.rank);
  const warnings: string[] = [];

  let projectionBytesTotal = 0;
  let payload = 0;
  let biasBytes = 0;
  for (const p of projs) {
    projectionBytesTotal += projectionBytes(p.rows, p.cols, o.quantization);
    payload += projectionPayloadBytes(p.rows, p.cols, o.quantization);
    if (hasBias(m, p.name)) biasBytes += block(p.rows);
  }
  projectionBytesTotal *= m.numLayers;
  payload *= m.numLayers;
  biasBytes *= m.numLayers;
  // Rotary tables: min(2048, max positions) rows to start, grown to max(seqLen, 2×) on demand (build.ts).
  const ropeStart = Math.min(2048, Math.max(m.maxPositionEmbeddings, 1));
  const ropeRows = o.seqLen > ropeStart ? Math.max(o.seqLen, 2 * ropeStart) : ropeStart;
  const headBytes = !params.lmHead
    ? 0
    : o.quantizeHead && o.quantization
      ? projectionBytes(m.vocabSize, m.hiddenSize, o.quantization)
      : block(params.lmHead);
  const embeddingBytes =
    o.quantizeEmbedding && o.quantization
      ? projectionBytes(m.vocabSize, m.hiddenSize, o.quantization)
      : block(params.embedding);
  const embedBytes = embeddingBytes + headBytes;
  const normBytes = (2 * m.numLayers + 1) * block(m.hiddenSize);
  const baseWeights =
    projectionBytesTotal +
    biasBytes +
    embedBytes +
    normBytes +
    2 * block((ropeRows * m.headDim) / 2);

  let adapters = 0;
  let optimizerStates = 0;
  for (const p of projs) {
    if (!targets.has(p.name)) continue;
    const a = o.rank * p.cols;
    const b = p.rows * o.rank;
    adapters += block(a) + block(b);
    for (const size of [a, b]) {
      // AdamW: fp32 m and v tensors. AdamW8bit: u8 codes + f32 absmax per 256 in JS arrays, fp32
      // below bnb's 4096-element threshold.
      optimizerStates +=
        o.optimizer === 'adamw' || size < 4096
          ? 2 * block(size)
          : 2 * size + 2 * 4 * Math.ceil(size / 256);
    }
  }
  adapters *= m.numLayers;
  optimizerStates *= m.numLayers;
  const gradients = adapters;

  // Arenas created at their planned size (createArena(plan.arenaBytes.…)) never grow: no chunk
  // tails, no merges (whose freed chunks linger in the malloc heap). Growing from 1 MiB is what a
  // caller that ignores the plan gets.
  const grown = params.lora > 0 ? planArenas(m, o) : null;
  const arenaBytes = grown
    ? { step: grown.step.peakInUse, layer: grown.layer.peakInUse }
    : { step: 1 << 20, layer: 1 << 20 };
  const arenas = grown ? (o.presizedArenas ? planArenas(m, o, arenaBytes) : grown) : null;
  const threads = hostProcess.cpuCount();
  const activations = arenas ? arenas.step.capacity : 0;
  const workspace = (arenas ? arenas.layer.capacity : 0) + threads * WORKSPACE_PER_THREAD_BYTES;
  const memory: MemoryBreakdown = {
    runtime: RUNTIME_BYTES,
    baseWeights,
    adapters,
    gradients,
    optimizerStates,
    activations,
    workspace,
  };
  const peakBytes = Object.values(memory).reduce((s, v) => s + v, 0);

  const flops = flopsPerToken(m, o);
  const p = machine.peakFlops;
  const secondsPerToken =
    flops.gemm / (p * machine.gemmEfficiency) +
    flops.gemm4bit / (p * machine.gemm4bitEfficiency) +
    flops.lora / (p * machine.loraEfficiency) +
    flops.attention / (p * machine.attentionEfficiency) +
    memoryBoundBytesPerToken(m, o) / machine.bandwidth;
  const tokensPerSecond = 1 / secondsPerToken;
  const mfu = ((flops.forward + flops.backward) * tokensPerSecond) / p;

  const fits = peakBytes <= machine.totalMemoryBytes;
  if (!fits) {
    warnings.push(
      `predicted peak ${formatBytes(peakBytes)} exceeds this machine's ${formatBytes(machine.totalMemoryBytes)} of RAM: ` +
        `${o.gradientCheckpointing ? '' : 'enable gradient checkpointing, '}lower --batch-size or --seq-len, or use --optimizer adamw8bit`,
    );
  } else if (peakBytes > 0.85 * machine.totalMemoryBytes) {
    warnings.push(
      `predicted peak ${formatBytes(peakBytes)} is within 15% of this machine's ${formatBytes(machine.totalMemoryBytes)} of RAM`,
    );
  }
  if (!o.quantization)
    warnings.push('the base is full precision (f32): 8× the memory of a 4-bit base');
  return {
    options: o,
    params,
    memory,
    peakBytes,
    baseBitsPerParam: (8 * (payload + embedBytes + normBytes)) / params.base,
    projectionBitsPerParam: (8 * payload) / params.projections,
    flopsPerToken: { forward: flops.forward, backward: flops.backward, recompute: flops.recompute },
    tokensPerSecond,
    mfu,
    fits,
    arenaBytes,
    machine,
    warnings,
  };
}

export function formatBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
}

function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** The plan as the lines `qlora plan` and `qlora train` print. */
export function formatPlan(plan: TrainingPlan, label = 'model'): string[] {
  const o = plan.options;
  const m = plan.memory;
  const q = o.quantization
    ? `4-bit, blocksize ${o.quantization.blocksize}${o.quantization.doubleQuant ? ', double quant' : ''}`
    : 'f32';
  const rows: [string, number, string][] = [
    [
      'base weights',
      m.baseWeights,
      `${formatCount(plan.params.base)} params, ${plan.baseBitsPerParam.toFixed(2)} bits/param (projections ${plan.projectionBitsPerParam.toFixed(2)})`,
    ],
    ['adapters', m.adapters, `${formatCount(plan.params.lora)} LoRA params`],
    ['gradients', m.gradients, 'f32'],
    ['optimizer states', m.optimizerStates, o.optimizer],
    [
      'activations',
      m.activations,
      o.gradientCheckpointing
        ? 'layer inputs (checkpoints), loss buffers'
        : 'all layer tapes, loss buffers',
    ],
    ['workspace', m.workspace, "one layer's temporaries, kernel scratch"],
    ['runtime', m.runtime, 'Node.js, V8 heap, addon'],
  ];
  const lines = [
    `plan for ${label}: batch ${o.batchSize} × seq ${o.seqLen}, LoRA r=${o.rank} on ${o.targets === 'all-linear' ? 'all linear layers' : o.targets.join(',')}, ` +
      `${o.optimizer}, base ${q}, gradient checkpointing ${o.gradientCheckpointing ? 'on' : 'off'}`,
    ...rows.map(
      ([name, bytes, note]) => `  ${name.padEnd(17)} ${formatBytes(bytes).padStart(11)}   ${note}`,
    ),
    `  ${'predicted peak'.padEnd(17)} ${formatBytes(plan.peakBytes).padStart(11)}   of ${formatBytes(plan.machine.totalMemoryBytes)} RAM`,
    `  ${'predicted speed'.padEnd(17)} ${plan.tokensPerSecond.toFixed(plan.tokensPerSecond < 10 ? 2 : 0).padStart(7)} tok/s   ` +
      `(${((plan.flopsPerToken.forward + plan.flopsPerToken.backward) / 1e9).toFixed(2)} GFLOP/token` +
      `${plan.flopsPerToken.recompute ? ` + ${(plan.flopsPerToken.recompute / 1e9).toFixed(2)} recompute` : ''}, ` +
      `${(plan.mfu * 100).toFixed(0)}% of ${(plan.machine.peakFlops / 1e9).toFixed(0)} GFLOP/s)`,
  ];
  for (const w of plan.warnings) lines.push(`  warning: ${w}`);
  return lines;
}

/**
 * What `qlora train` calls before loading weights: prints the plan and returns it (callers may
 * stop when `fits` is false).
 */
export function printTrainingPlan(
  m: PlanModel,
  options: Partial<PlanOptions>,
  label: string,
  log: (line: string) => void = console.log,
  machine: MachineModel = defaultMachine(),
): TrainingPlan {
  const plan = planTraining(m, options, machine);
  for (const line of formatPlan(plan, label)) log(line);
  return plan;
}

// ---- named shapes ------------------------------------------------------------------------------

/** The package's fixtures folder (computed on use: import.meta.url is a file: URL only in Node). */
const fixturesDir = (): string =>
  nodeBuiltin<typeof import('node:url')>('node:url')!.fileURLToPath(
    new URL('../../fixtures/', import.meta.url),
  );

/** HF config.json fields of the shapes the benchmarks and `qlora plan` know by name. */
const NAMED_HF_CONFIGS: Record<string, () => Record<string, unknown>> = {
  // llama2.c TinyStories models (tied classifier, 256 / 1024 context).
  stories15m: () => ({
    model_type: 'llama',
    hidden_size: 288,
    num_hidden_layers: 6,
    num_attention_heads: 6,
    intermediate_size: 768,
    vocab_size: 32000,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  }),
  stories110m: () => ({
    model_type: 'llama',
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 2048,
    vocab_size: 32000,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  }),
  tinyllama: () =>
    JSON.parse(
      fs.readFileSync(path.join(fixturesDir(), 'tinyllama-config.json'), 'utf8'),
    ) as Record<string, unknown>,
  'llama2-7b': () => ({
    model_type: 'llama',
    hidden_size: 4096,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    intermediate_size: 11008,
    vocab_size: 32000,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: false,
  }),
};

const ALIASES: Record<string, string> = {
  '15m': 'stories15m',
  '110m': 'stories110m',
  'tinyllama-1.1b': 'tinyllama',
  '1.1b': 'tinyllama',
  '7b': 'llama2-7b',
  'llama-2-7b': 'llama2-7b',
};

export const NAMED_SHAPES: readonly string[] = Object.keys(NAMED_HF_CONFIGS);

/** The config of a named shape (stories15m, stories110m, tinyllama, llama2-7b, or an alias), or null. */
export function namedShape(name: string): LlamaConfig | null {
  const key = ALIASES[name.toLowerCase()] ?? name.toLowerCase();
  const make = NAMED_HF_CONFIGS[key];
  return make ? configFromHf(make(), `${key} shape`) : null;
}

/** A named shape or the config of a checkpoint on disk (HF folder/config.json, GGUF, llama2.c .bin). */
export function resolvePlanModel(spec: string): { config: LlamaConfig; label: string } {
  const named = namedShape(spec);
  if (named) return { config: named, label: ALIASES[spec.toLowerCase()] ?? spec.toLowerCase() };
  if (!fs.existsSync(spec)) {
    throw new Error(`${spec}: not a model path nor a known shape (${NAMED_SHAPES.join(', ')})`);
  }
  if (path.basename(spec) === 'config.json') return { config: loadHfConfig(spec), label: spec };
  const ck = openCheckpoint(spec);
  try {
    return { config: ck.config, label: spec };
  } finally {
    ck.close();
  }
}

// ---- build garbage -------------------------------------------------------------------------------

/**
 * Frees what building a model leaves behind before training starts. Every tensor arrives as a JS
 * Float32Array that is copied into native memory and dropped; V8 collects those only when JS
 * allocates enough to need a GC, which a training loop (native kernels, few JS objects) never does.
 * The mid-sized ones also leave holes in the malloc heap between long-lived native tensors, which
 * stay resident until trimmed. On Llama-2-7B the two together kept ≈0.6 GB resident through
 * training (6.09 GiB peak against the 5.57 GiB the plan counts); the plan assumes this ran after
 * building. Returns what could be done (a collector / a native trim).
 */
export async function releaseBuildGarbage(
  backend?: Backend,
): Promise<{ collected: boolean; trimmed: boolean }> {
  let gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) {
    try {
      // Without --expose-gc on the command line: expose it now and take it from a fresh context.
      nodeBuiltin<typeof import('node:v8')>('node:v8')!.setFlagsFromString('--expose-gc');
      gc = nodeBuiltin<typeof import('node:vm')>('node:vm')!.runInNewContext('gc') as () => void;
    } catch {
      gc = undefined;
    }
  }
  if (gc) {
    gc();
    // ArrayBuffer backing stores are released by a sweeper after the collection: give it a moment.
    await new Promise((resolve) => setTimeout(resolve, 50));
    gc();
  }
  // The backend trims its allocator when it can (cpu: malloc_trim); others have nothing to trim.
  const trimmed = backend?.trimMemory?.() ?? false;
  return { collected: gc !== undefined, trimmed };
}
