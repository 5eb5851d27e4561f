/**
 * What training, generation, checkpoints and PEFT saving need of a model: the `CausalLM`
 * interface, with the batch and step types it consumes. `LlamaModel` (llama.ts) implements it for
 * every family of the registry; nothing above src/models depends on a concrete model class.
 */
import type { Arena } from '../tensor/arena.js';
import type { Backend } from '../tensor/backend.js';
import type { DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import type { LoraLinear } from '../nn/lora.js';
import type { Param } from '../nn/param.js';
import type { LoraConfig } from './build.js';
import type { KvCache } from './kv-cache.js';

/** The sizes every caller of a model may need (a subset of the normalized config). */
export interface ModelDims {
  /** The family (models/registry.ts); llama when absent. */
  readonly architecture?: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly rmsNormEps: number;
  /**
   * Sliding-window span of the layers that slide (a query sees its own key and the window - 1
   * before it: docs/attention.md § 2), or null/absent for global attention everywhere.
   */
  readonly slidingWindow?: number | null;
  /**
   * Which layers slide (true) and which attend globally (false), one entry per layer (Qwen2's
   * max_window_layers, HF layer_types, Gemma's alternating local/global layers); null or absent:
   * every layer slides when slidingWindow is set. See LlamaModel.layerWindow.
   */
  readonly slidingLayers?: readonly boolean[] | null;
  /** Attention logit soft-cap (Gemma 2 attn_logit_softcapping), or null/absent. */
  readonly attnLogitSoftcap?: number | null;
  /** Final logit soft-cap (Gemma 2 final_logit_softcapping), or null/absent. */
  readonly finalLogitSoftcap?: number | null;
  /** Queries scaled by queryPreAttnScalar^-1/2 instead of head_dim^-1/2 (Gemma), or null/absent. */
  readonly queryPreAttnScalar?: number | null;
}

/**
 * The sliding window of layer `index` (what its attention passes as options.window), or null for a
 * global layer.
 */
export function layerWindowOf(dims: ModelDims, index: number): number | null {
  const w = dims.slidingWindow ?? null;
  if (w === null) return null;
  const sliding = dims.slidingLayers;
  return !sliding || sliding[index] === true ? w : null;
}

/** A training/eval batch as the model consumes it (see src/data for how batches are built). */
export interface ModelBatch {
  readonly batchSize: number;
  readonly seqLen: number;
  /** i32 [B*T] */
  readonly inputIds: Int32Array;
  /** i32 [B*T]: the token each position must predict, or -100. */
  readonly labels: Int32Array;
  /** i32 [B*T]: rotary positions (restart per packed example). */
  readonly positions: Int32Array;
  /** i32 [B*T] or null: packed-example ids; attention stays inside a segment. */
  readonly segmentIds: Int32Array | null;
}

export interface StepOptions {
  /** Dropout on (LoRA dropout). */
  readonly training: boolean;
  /** Seeds this step's dropout masks. */
  readonly stepSeed: number;
  /** Recompute each layer in backward instead of keeping its activations. */
  readonly gradientCheckpointing: boolean;
  /** Rows of logits alive at once in the loss. */
  readonly lossChunkRows: number;
  /** Multiplies the gradient (e.g. 1/gradAccum); the loss is the mean over counted tokens. */
  readonly gradScale: number;
  /** When given, wall-clock milliseconds of each phase are added to it (benchmarks, profiling). */
  readonly timings?: StepTimings;
}

/**
 * Where a step's time went (accumulated across calls). Kernels may run asynchronously (a device
 * queue), so when timings are asked for the model reads one element back at each phase boundary:
 * an in-order queue has then finished everything before it. Timing a step thus costs a few syncs.
 */
export interface StepTimings {
  /** Embedding and the decoder layers' forward pass. */
  forwardMs: number;
  /** Final norm, vocabulary projection, cross-entropy and its gradient back to the final hidden state. */
  lossMs: number;
  /** Backward through the layers, including recomputation under gradient checkpointing. */
  backwardMs: number;
  /** The share of backwardMs spent recomputing layer activations (gradient checkpointing). */
  recomputeMs: number;
}

export interface LossResult {
  /** Sum of per-token losses over counted tokens. */
  readonly lossSum: number;
  /** Tokens whose label is not -100. */
  readonly tokens: number;
}

/** A decoder-only language model with LoRA adapters: the door trainer, generate and checkpoints use. */
export interface CausalLM {
  readonly dims: ModelDims;
  readonly backend: Backend;
  readonly dtype: DType;
  /** The LoRA adapters' configuration when the model carries them. */
  readonly lora: LoraConfig | null;
  /** All trainable parameters (LoRA A and B), in a stable order (PEFT key names). */
  parameters(): Param[];
  loraLayers(): LoraLinear[];
  /** Loss of a batch and, when `backward`, its gradients into each Param.grad; reads the loss back. */
  lossAndGradients(
    batch: ModelBatch,
    arena: Arena,
    layerArena: Arena,
    options: StepOptions,
    backward?: boolean,
  ): Promise<LossResult>;
  /** lossAndGradients with the loss sum left on the backend in `lossSum` ([1]). */
  lossAndGradientsInto(
    batch: ModelBatch,
    arena: Arena,
    layerArena: Arena,
    options: StepOptions,
    backward: boolean,
    lossSum: Tensor,
  ): Promise<{ tokens: number }>;
  /**
   * Logits for the last `keepLast` positions of `tokens` appended to `cache` (prefill or decode):
   * a [keepLast, V] tensor in `arena`. `new KvCache(model, capacity)` makes a cache.
   */
  forwardCached(tokens: Int32Array, cache: KvCache, arena: Arena, keepLast?: number): Tensor;
  dispose(): void;
}
