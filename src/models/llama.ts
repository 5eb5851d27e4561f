import type { Arena } from '../tensor/arena.js';
import type { Backend, Packed4bitWeight, RopeLayout } from '../tensor/backend.js';
import type { DType } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { DenseLinear, type FrozenLinear, Linear4bit } from '../nn/linear.js';
import { disposePacked4bit } from '../quant/upload.js';
import { LoraLinear, type LoraSaved } from '../nn/lora.js';
import type { LoraConfig } from './build.js';
import type { Param } from '../nn/param.js';
import { PROJECTIONS, type ProjectionName } from './family.js';
import {
  type CausalLM,
  layerWindowOf,
  type LossResult,
  type ModelBatch,
  type ModelDims,
  type StepOptions,
} from './causal-lm.js';
import { KvCache } from './kv-cache.js';
import { familyOf } from './registry.js';

/**
 * The shape facts the forward pass needs (a subset of the normalized config). Mistral-style
 * `slidingWindow`: attention here is full, so longer sequences are refused.
 */
export type LlamaDims = ModelDims;

/** A projection: a frozen base, optionally wrapped by a trainable LoRA adapter. */
export type Projection = FrozenLinear | LoraLinear;

export { PROJECTIONS, type ProjectionName } from './family.js';
export { KvCache } from './kv-cache.js';
export type {
  CausalLM,
  LossResult,
  ModelBatch,
  ModelDims,
  StepOptions,
  StepTimings,
} from './causal-lm.js';

export interface LlamaLayer {
  readonly attnNorm: Tensor;
  readonly ffnNorm: Tensor;
  /** Per-head RMSNorm weights [head_dim] of q and k (families with attention.qkNorm), else absent. */
  readonly qNorm?: Tensor;
  readonly kNorm?: Tensor;
  /**
   * RMSNorm weights [d] of the attention output and the MLP output before each residual add
   * (Gemma 2/3), else absent.
   */
  readonly postAttnNorm?: Tensor;
  readonly postFfnNorm?: Tensor;
  /**
   * The family's projections by role: q/k/v/o/gate/up/down, or for fused families (Phi-3)
   * qkv_proj, o_proj, gate_up_proj, down_proj.
   */
  readonly proj: Partial<Record<ProjectionName, Projection>>;
}

/** The inputs of one layer's forward (LlamaModel.layerForward). */
export interface LayerForwardOptions {
  /** The layer input [n, d]. */
  readonly x: Tensor;
  readonly shape: { readonly batch: number; readonly seq: number };
  /** i32 [n] rotary positions. */
  readonly positions: Tensor;
  /** i32 [batch, seq] packed-example ids, or null. */
  readonly segmentIds: Tensor | null;
  /** Where the tape (what backward needs) and temporaries go. */
  readonly arena: Arena;
  /** Where the output goes. */
  readonly outArena: Arena;
  /** Dropout on. */
  readonly training: boolean;
  readonly stepSeed: number;
  /** Keys/values go to this cache and attention reads its prefix; null: this call's k/v only. */
  readonly cache: KvCache | null;
}

/** The inputs of one layer's backward (LlamaModel.layerBackward). */
export interface LayerBackwardOptions {
  /** What the layer's forward kept. */
  readonly tape: LayerTape;
  /** Gradient of the layer output. */
  readonly dOut: Tensor;
  readonly shape: { readonly batch: number; readonly seq: number };
  readonly positions: Tensor;
  readonly segmentIds: Tensor | null;
  /** Temporaries. */
  readonly arena: Arena;
  /** Where the gradient of the layer input goes (must not alias dOut); null: not needed. */
  readonly dx: Tensor | null;
}

/** Rotary tables [maxPos, headDim/2] on the model's backend, with their layout. */
export interface RopeState {
  cos: Tensor;
  sin: Tensor;
  readonly layout: RopeLayout;
  /** Rows in the tables; they are rebuilt larger when a longer sequence arrives. */
  maxPositions: number;
  /**
   * The sliding layers' own tables (Gemma 3's rope_local_base_freq, unscaled), same size, or
   * null/absent: every layer rotates with cos/sin.
   */
  local?: { cos: Tensor; sin: Tensor } | null;
  /**
   * LongRoPE (Phi-3): tables with the long factors, used by a call whose positions reach beyond
   * `longFrom` (original_max_position_embeddings), as transformers switches by the call's
   * max(position) + 1; null/absent: cos/sin always.
   */
  long?: { cos: Tensor; sin: Tensor } | null;
  longFrom?: number | null;
}

/** Everything one layer's forward keeps for its backward. */
export interface LayerTape {
  x: Tensor;
  a: Tensor;
  rstd1: Tensor;
  /** q and k before their per-head norms, and its statistics (qk-norm families only). */
  qPre?: Tensor;
  kPre?: Tensor;
  rstdQ?: Tensor;
  rstdK?: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  attn: Tensor;
  lse: Tensor;
  x1: Tensor;
  /** o_proj's output and the statistics of its post-norm (layers with postAttnNorm). */
  o?: Tensor;
  rstdPostAttn?: Tensor;
  b: Tensor;
  rstd2: Tensor;
  g: Tensor;
  u: Tensor;
  m: Tensor;
  /** down_proj's output and the statistics of its post-norm (layers with postFfnNorm). */
  down?: Tensor;
  rstdPostFfn?: Tensor;
  lora: Partial<Record<ProjectionName, LoraSaved>>;
}

/**
 * The decoder of every registered family (Llama 1/2/3, Mistral, Qwen2, Qwen3, TinyLlama, SmolLM2;
 * models/families/) with an explicit forward and backward per layer, in the style of llm.c: the
 * Llama block plus each family's variants (per-head q/k RMSNorm when the layers carry qNorm/kNorm).
 * Weights use the Hugging Face layout (Q/K rows in rotate_half order); embeddings, norms and
 * lm_head stay full precision, projections may be 4-bit and may carry LoRA adapters. Only LoRA
 * parameters receive gradients.
 */
export class LlamaModel implements CausalLM {
  constructor(
    readonly dims: LlamaDims,
    readonly backend: Backend,
    readonly dtype: DType,
    /** [V, d] in full precision, or a 4-bit table (BuildOptions.quantizeEmbedding). */
    readonly embedding: Tensor | Packed4bitWeight,
    readonly layers: LlamaLayer[],
    readonly finalNorm: Tensor,
    /** The vocabulary projection [V, d]: the embedding table itself when tied, else dense or 4-bit. */
    readonly lmHead: FrozenLinear,
    readonly rope: RopeState,
    /**
     * The LoRA adapters' configuration (rank, alpha, targets, …) when the projections carry them:
     * what the trainer fingerprints and saves with the adapter, so it is never passed twice.
     */
    readonly lora: LoraConfig | null = null,
  ) {
    const family = familyOf(dims);
    this.geglu = family.activation === 'gelu_tanh';
    // transformers rounds sqrt(hidden_size) to the model dtype before multiplying (Gemma).
    const scale = Math.sqrt(dims.hiddenSize);
    this.embeddingScale =
      family.embeddingScale === 'sqrt-hidden' ? (dtype === 'f64' ? scale : Math.fround(scale)) : 1;
  }

  /** The MLP is GeGLU with tanh GELU (Gemma) rather than SwiGLU. */
  private readonly geglu: boolean;
  /** What the embedding output is multiplied by (Gemma: sqrt(hidden)), else 1. */
  readonly embeddingScale: number;

  /** Whether this call's positions select LongRoPE's long tables (set by ensureRope). */
  private ropeLong = false;

  /** The rotary tables of layer `index`: the sliding layers' own when the model has them. */
  private ropeOf(index: number): { cos: Tensor; sin: Tensor } {
    const local = this.rope.local ?? null;
    if (local && this.layerWindow(index) !== null) return local;
    const long = this.rope.long ?? null;
    return long && this.ropeLong ? long : this.rope;
  }

  /** A projection of the layer by role; the family's table decides which exist. */
  private projOf(layer: LlamaLayer, name: ProjectionName): Projection {
    const p = layer.proj[name];
    if (!p) throw new Error(`this ${this.dims.architecture ?? 'llama'} model has no ${name}`);
    return p;
  }

  /**
   * The sliding window of layer `index` (what its attention passes as options.window), or null for
   * a global layer: the per-layer hook families with local and global layers build on.
   */
  layerWindow(index: number): number | null {
    return layerWindowOf(this.dims, index);
  }

  /** The attention options of layer `index` (scale, window, soft-cap) without segment ids. */
  private attentionOptions(index: number): {
    scale: number;
    window: number | null;
    softcap: number | null;
  } {
    return {
      // Gemma scales queries by query_pre_attn_scalar^-1/2.
      scale: 1 / Math.sqrt(this.dims.queryPreAttnScalar ?? this.dims.headDim),
      window: this.layerWindow(index),
      softcap: this.dims.attnLogitSoftcap ?? null,
    };
  }

  get tiedEmbeddings(): boolean {
    return (
      (this.lmHead instanceof DenseLinear || this.lmHead instanceof Linear4bit) &&
      this.lmHead.weight === this.embedding
    );
  }

  /** All trainable parameters (LoRA A and B), in a stable order. */
  parameters(): Param[] {
    const out: Param[] = [];
    for (const layer of this.layers) {
      for (const name of PROJECTIONS) {
        const p = layer.proj[name];
        if (p instanceof LoraLinear) out.push(...p.parameters());
      }
    }
    return out;
  }

  loraLayers(): LoraLinear[] {
    const out: LoraLinear[] = [];
    for (const layer of this.layers) {
      for (const name of PROJECTIONS) {
        const p = layer.proj[name];
        if (p instanceof LoraLinear) out.push(p);
      }
    }
    return out;
  }

  // ---- forward pieces ------------------------------------------------------------------------

  private project(
    name: ProjectionName,
    p: Projection,
    x: Tensor,
    y: Tensor,
    arena: Arena,
    training: boolean,
    seed: number,
    tape: LayerTape | null,
  ): void {
    if (p instanceof LoraLinear) {
      const saved = p.forward(x, y, arena, training, seed);
      if (tape) tape.lora[name] = saved;
    } else {
      p.forward(x, y);
    }
  }

  private projectBack(
    name: ProjectionName,
    p: Projection,
    dy: Tensor,
    dx: Tensor | null,
    accumulate: boolean,
    tape: LayerTape,
    arena: Arena,
  ): void {
    if (p instanceof LoraLinear) {
      const saved = tape.lora[name];
      if (!saved) throw new Error(`missing saved activations for ${p.name}`);
      p.backward(dy, saved, dx, accumulate, arena);
    } else if (dx) {
      p.inputGrad(dy, dx, accumulate);
    }
  }

  /** Embedding lookup into a new [n, d] tensor. */
  embed(ids: Tensor, arena: Arena): Tensor {
    const x = arena.alloc([ids.size, this.dims.hiddenSize], this.dtype);
    const table = this.embedding;
    if (table instanceof Tensor) this.backend.embedding(ids, table, x);
    else this.backend.embedding4bit(ids, table, x);
    if (this.embeddingScale !== 1) this.backend.scale(x, this.embeddingScale, x);
    return x;
  }

  /**
   * One decoder layer: returns its output (allocated in `outArena`) and the tape (in `arena`).
   * kv: where keys/values go — the fresh k/v of this call, or a KV cache (then attention reads the
   * cache prefix).
   */
  layerForward(index: number, o: LayerForwardOptions): { out: Tensor; tape: LayerTape } {
    const { x, shape, positions, segmentIds, arena, outArena, training, stepSeed, cache } = o;
    const be = this.backend;
    const d = this.dims;
    const layer = this.layers[index]!;
    const n = x.shape[0]!;
    const { batch, seq } = shape;
    const qDim = d.numHeads * d.headDim;
    const kvDim = d.numKvHeads * d.headDim;
    const tape: LayerTape = { lora: {} } as LayerTape;
    tape.x = x;
    tape.a = arena.alloc([n, d.hiddenSize], this.dtype);
    tape.rstd1 = arena.alloc([n], this.dtype);
    be.rmsnorm(x, layer.attnNorm, d.rmsNormEps, tape.a, tape.rstd1);
    const layerSeed = (stepSeed + index * 0x9e3779b1) >>> 0;
    tape.q = arena.alloc([n, qDim], this.dtype);
    tape.k = arena.alloc([n, kvDim], this.dtype);
    tape.v = arena.alloc([n, kvDim], this.dtype);
    const qkv = layer.proj.qkv_proj;
    if (qkv) {
      // Phi-3: one fused product (one LoRA over its whole output), split into q | k | v columns.
      const fused = arena.alloc([n, qDim + 2 * kvDim], this.dtype);
      this.project('qkv_proj', qkv, tape.a, fused, arena, training, layerSeed, tape);
      be.copyColumns(fused, 0, tape.q, 0, qDim);
      be.copyColumns(fused, qDim, tape.k, 0, kvDim);
      be.copyColumns(fused, qDim + kvDim, tape.v, 0, kvDim);
    } else {
      for (const [name, y] of [
        ['q_proj', tape.q],
        ['k_proj', tape.k],
        ['v_proj', tape.v],
      ] as const)
        this.project(name, this.projOf(layer, name), tape.a, y, arena, training, layerSeed, tape);
    }
    // Per-head RMSNorm of q and k over head_dim (Qwen3): the rmsnorm kernel on [n·heads, head_dim]
    // rows is exactly that, forward and backward.
    if (layer.qNorm && layer.kNorm) {
      tape.qPre = tape.q;
      tape.kPre = tape.k;
      tape.q = arena.alloc([n, qDim], this.dtype);
      tape.k = arena.alloc([n, kvDim], this.dtype);
      tape.rstdQ = arena.alloc([n * d.numHeads], this.dtype);
      tape.rstdK = arena.alloc([n * d.numKvHeads], this.dtype);
      const heads = (t: Tensor, h: number): Tensor => t.view([n * h, d.headDim]);
      be.rmsnorm(
        heads(tape.qPre, d.numHeads),
        layer.qNorm,
        d.rmsNormEps,
        heads(tape.q, d.numHeads),
        tape.rstdQ,
      );
      be.rmsnorm(
        heads(tape.kPre, d.numKvHeads),
        layer.kNorm,
        d.rmsNormEps,
        heads(tape.k, d.numKvHeads),
        tape.rstdK,
      );
    }
    const q4 = tape.q.view([batch, seq, d.numHeads, d.headDim]);
    const k4 = tape.k.view([batch, seq, d.numKvHeads, d.headDim]);
    const rope = this.ropeOf(index);
    be.rope(q4, positions, rope.cos, rope.sin, this.rope.layout, false, q4);
    be.rope(k4, positions, rope.cos, rope.sin, this.rope.layout, false, k4);
    tape.attn = arena.alloc([n, qDim], this.dtype);
    tape.lse = arena.alloc([batch, d.numHeads, seq], this.dtype);
    const attention = this.attentionOptions(index);
    if (cache) {
      // The cached keys end at this call's last position (a sliding layer's cache may have dropped
      // keys older than its window from the front), and attention places queries at the end of the
      // keys, so the window applies to them unchanged.
      const { k, v } = cache.append(index, tape.k, tape.v);
      be.attention(
        q4,
        k,
        v,
        tape.attn.view([batch, seq, d.numHeads, d.headDim]),
        tape.lse,
        attention,
      );
    } else {
      be.attention(
        q4,
        k4,
        tape.v.view([batch, seq, d.numKvHeads, d.headDim]),
        tape.attn.view([batch, seq, d.numHeads, d.headDim]),
        tape.lse,
        { ...attention, segmentIds },
      );
    }
    tape.x1 = arena.alloc([n, d.hiddenSize], this.dtype);
    const oProj = this.projOf(layer, 'o_proj');
    this.project('o_proj', oProj, tape.attn, tape.x1, arena, training, layerSeed, tape);
    if (layer.postAttnNorm) {
      // Gemma: x1 = x + rmsnorm(o_proj(attn)).
      tape.o = tape.x1;
      tape.x1 = arena.alloc([n, d.hiddenSize], this.dtype);
      tape.rstdPostAttn = arena.alloc([n], this.dtype);
      be.rmsnorm(tape.o, layer.postAttnNorm, d.rmsNormEps, tape.x1, tape.rstdPostAttn);
    }
    be.add(tape.x1, x, tape.x1);
    tape.b = arena.alloc([n, d.hiddenSize], this.dtype);
    tape.rstd2 = arena.alloc([n], this.dtype);
    be.rmsnorm(tape.x1, layer.ffnNorm, d.rmsNormEps, tape.b, tape.rstd2);
    tape.g = arena.alloc([n, d.intermediateSize], this.dtype);
    tape.u = arena.alloc([n, d.intermediateSize], this.dtype);
    const gateUp = layer.proj.gate_up_proj;
    if (gateUp) {
      // Phi-3: one fused product, split into gate | up columns.
      const I = d.intermediateSize;
      const fused = arena.alloc([n, 2 * I], this.dtype);
      this.project('gate_up_proj', gateUp, tape.b, fused, arena, training, layerSeed, tape);
      be.copyColumns(fused, 0, tape.g, 0, I);
      be.copyColumns(fused, I, tape.u, 0, I);
    } else {
      for (const [name, y] of [
        ['gate_proj', tape.g],
        ['up_proj', tape.u],
      ] as const)
        this.project(name, this.projOf(layer, name), tape.b, y, arena, training, layerSeed, tape);
    }
    const downProj = this.projOf(layer, 'down_proj');
    tape.m = arena.alloc([n, d.intermediateSize], this.dtype);
    if (this.geglu) be.geglu(tape.g, tape.u, tape.m);
    else be.swiglu(tape.g, tape.u, tape.m);
    const out = outArena.alloc([n, d.hiddenSize], this.dtype);
    if (layer.postFfnNorm) {
      // Gemma: out = x1 + rmsnorm(down(m)).
      tape.down = arena.alloc([n, d.hiddenSize], this.dtype);
      tape.rstdPostFfn = arena.alloc([n], this.dtype);
      this.project('down_proj', downProj, tape.m, tape.down, arena, training, layerSeed, tape);
      be.rmsnorm(tape.down, layer.postFfnNorm, d.rmsNormEps, out, tape.rstdPostFfn);
    } else {
      this.project('down_proj', downProj, tape.m, out, arena, training, layerSeed, tape);
    }
    be.add(out, tape.x1, out);
    return { out, tape };
  }

  /**
   * Backward through one layer: given dOut (gradient of the layer output), accumulates LoRA
   * gradients and writes dx (gradient of the layer input) when given. Temporaries come from
   * `arena`; dx must not alias dOut.
   */
  layerBackward(index: number, o: LayerBackwardOptions): void {
    const { tape, dOut, shape, positions, segmentIds, arena, dx } = o;
    const be = this.backend;
    const d = this.dims;
    const layer = this.layers[index]!;
    const n = dOut.shape[0]!;
    const { batch, seq } = shape;
    const qDim = d.numHeads * d.headDim;
    const kvDim = d.numKvHeads * d.headDim;
    // MLP: out = x1 + [postnorm](down(act(gate(b)) · up(b))), b = rmsnorm(x1)
    let dDown = dOut;
    if (layer.postFfnNorm && tape.down && tape.rstdPostFfn) {
      dDown = arena.alloc([n, d.hiddenSize], this.dtype);
      be.rmsnormBackward(dOut, tape.down, layer.postFfnNorm, tape.rstdPostFfn, dDown, null);
    }
    const dm = arena.alloc([n, d.intermediateSize], this.dtype);
    this.projectBack('down_proj', this.projOf(layer, 'down_proj'), dDown, dm, false, tape, arena);
    const dg = arena.alloc([n, d.intermediateSize], this.dtype);
    const du = arena.alloc([n, d.intermediateSize], this.dtype);
    if (this.geglu) be.gegluBackward(dm, tape.g, tape.u, dg, du);
    else be.swigluBackward(dm, tape.g, tape.u, dg, du);
    const db = arena.alloc([n, d.hiddenSize], this.dtype);
    const gateUp = layer.proj.gate_up_proj;
    if (gateUp) {
      // The fused product's output gradient: dgate | dup columns.
      const I = d.intermediateSize;
      const dFused = arena.alloc([n, 2 * I], this.dtype);
      be.copyColumns(dg, 0, dFused, 0, I);
      be.copyColumns(du, 0, dFused, I, I);
      this.projectBack('gate_up_proj', gateUp, dFused, db, false, tape, arena);
    } else {
      this.projectBack('gate_proj', this.projOf(layer, 'gate_proj'), dg, db, false, tape, arena);
      this.projectBack('up_proj', this.projOf(layer, 'up_proj'), du, db, true, tape, arena);
    }
    const dx1 = arena.alloc([n, d.hiddenSize], this.dtype);
    be.rmsnormBackward(db, tape.x1, layer.ffnNorm, tape.rstd2, dx1, null);
    be.add(dx1, dOut, dx1);
    // Attention: x1 = x + [postnorm](o(attn(rope(q(a)), rope(k(a)), v(a)))), a = rmsnorm(x)
    let dO = dx1;
    if (layer.postAttnNorm && tape.o && tape.rstdPostAttn) {
      dO = arena.alloc([n, d.hiddenSize], this.dtype);
      be.rmsnormBackward(dx1, tape.o, layer.postAttnNorm, tape.rstdPostAttn, dO, null);
    }
    const dattn = arena.alloc([n, qDim], this.dtype);
    this.projectBack('o_proj', this.projOf(layer, 'o_proj'), dO, dattn, false, tape, arena);
    const dq = arena.alloc([n, qDim], this.dtype);
    const dk = arena.alloc([n, kvDim], this.dtype);
    const dv = arena.alloc([n, kvDim], this.dtype);
    const q4 = (t: Tensor) => t.view([batch, seq, d.numHeads, d.headDim]);
    const kv4 = (t: Tensor) => t.view([batch, seq, d.numKvHeads, d.headDim]);
    be.attentionBackward(
      q4(dattn),
      q4(tape.q),
      kv4(tape.k),
      kv4(tape.v),
      q4(tape.attn),
      tape.lse,
      q4(dq),
      kv4(dk),
      kv4(dv),
      { ...this.attentionOptions(index), segmentIds },
    );
    const rope = this.ropeOf(index);
    be.rope(q4(dq), positions, rope.cos, rope.sin, this.rope.layout, true, q4(dq));
    be.rope(kv4(dk), positions, rope.cos, rope.sin, this.rope.layout, true, kv4(dk));
    let dqPre = dq;
    let dkPre = dk;
    if (layer.qNorm && layer.kNorm && tape.qPre && tape.kPre && tape.rstdQ && tape.rstdK) {
      const heads = (t: Tensor, h: number): Tensor => t.view([n * h, d.headDim]);
      dqPre = arena.alloc([n, qDim], this.dtype);
      dkPre = arena.alloc([n, kvDim], this.dtype);
      const [hq, hk] = [d.numHeads, d.numKvHeads];
      be.rmsnormBackward(
        heads(dq, hq),
        heads(tape.qPre, hq),
        layer.qNorm,
        tape.rstdQ,
        heads(dqPre, hq),
        null,
      );
      be.rmsnormBackward(
        heads(dk, hk),
        heads(tape.kPre, hk),
        layer.kNorm,
        tape.rstdK,
        heads(dkPre, hk),
        null,
      );
    }
    const da = dx ? arena.alloc([n, d.hiddenSize], this.dtype) : null;
    const qkv = layer.proj.qkv_proj;
    if (qkv) {
      const dFused = arena.alloc([n, qDim + 2 * kvDim], this.dtype);
      be.copyColumns(dqPre, 0, dFused, 0, qDim);
      be.copyColumns(dkPre, 0, dFused, qDim, kvDim);
      be.copyColumns(dv, 0, dFused, qDim + kvDim, kvDim);
      this.projectBack('qkv_proj', qkv, dFused, da, false, tape, arena);
    } else {
      this.projectBack('q_proj', this.projOf(layer, 'q_proj'), dqPre, da, false, tape, arena);
      this.projectBack('k_proj', this.projOf(layer, 'k_proj'), dkPre, da, true, tape, arena);
      this.projectBack('v_proj', this.projOf(layer, 'v_proj'), dv, da, true, tape, arena);
    }
    if (!da || !dx) return;
    be.rmsnormBackward(da, tape.x, layer.attnNorm, tape.rstd1, dx, null);
    be.add(dx, dx1, dx);
  }

  // ---- whole-model entry points -------------------------------------------------------------------

  private batchTensors(
    batch: ModelBatch,
    arena: Arena,
  ): { ids: Tensor; positions: Tensor; segments: Tensor | null; labels: Tensor } {
    const n = batch.batchSize * batch.seqLen;
    for (const [what, arr] of [
      ['inputIds', batch.inputIds],
      ['labels', batch.labels],
      ['positions', batch.positions],
    ] as const) {
      if (arr.length !== n)
        throw new Error(`batch.${what} has ${arr.length} entries, expected ${n}`);
    }
    const ids = arena.alloc([n], 'i32');
    ids.write(batch.inputIds);
    const positions = arena.alloc([n], 'i32');
    positions.write(batch.positions);
    const labels = arena.alloc([n], 'i32');
    labels.write(batch.labels);
    let segments: Tensor | null = null;
    if (batch.segmentIds) {
      segments = arena.alloc([batch.batchSize, batch.seqLen], 'i32');
      segments.write(batch.segmentIds);
    }
    this.ensureRope(batch.positions);
    return { ids, positions, segments, labels };
  }

  /** Grows the rotary tables when a position exceeds them. */
  ensureRope(positions: ArrayLike<number>): void {
    let max = 0;
    for (let i = 0; i < positions.length; i++) max = Math.max(max, positions[i]!);
    if (max >= this.rope.maxPositions) this.onRopeOverflow(max + 1);
    const longFrom = this.rope.longFrom ?? null;
    this.ropeLong = longFrom !== null && max + 1 > longFrom;
  }

  /** Replaced by the builder with a function that rebuilds the tables for at least `positions`. */
  onRopeOverflow: (positions: number) => void = (positions) => {
    throw new Error(
      `position ${positions - 1} exceeds the rotary table (${this.rope.maxPositions})`,
    );
  };

  /**
   * Loss of a batch and, when training, its gradients: forward through all layers, chunked
   * cross-entropy fused with its backward, then backward through the layers (recomputing each
   * layer's activations first when gradient checkpointing is on). LoRA gradients accumulate into
   * each Param.grad (call zeroGrad on them first). Reads the loss back (see lossAndGradientsInto
   * for the variant that leaves it on the device).
   */
  async lossAndGradients(
    batch: ModelBatch,
    arena: Arena,
    layerArena: Arena,
    options: StepOptions,
    backward = true,
  ): Promise<LossResult> {
    // A long-lived scalar rather than an arena tensor: the step arena then holds what the
    // Trainer's steps hold (lossAndGradientsInto), which is what the memory planner measures.
    this.lossScratch ??= this.backend.zeros([1], this.dtype);
    const { tokens } = await this.lossAndGradientsInto(
      batch,
      arena,
      layerArena,
      options,
      backward,
      this.lossScratch,
    );
    return { lossSum: (await this.lossScratch.read())[0]!, tokens };
  }

  private lossScratch: Tensor | null = null;

  /**
   * lossAndGradients with the loss sum (over counted tokens) written to `lossSum` ([1], e.g. one
   * element of a statistics tensor) on the backend instead of read back, so a training step can
   * read its losses and gradient norm in one transfer. Returns the number of counted tokens.
   */
  async lossAndGradientsInto(
    batch: ModelBatch,
    arena: Arena,
    layerArena: Arena,
    options: StepOptions,
    backward: boolean,
    lossSum: Tensor,
  ): Promise<{ tokens: number }> {
    const be = this.backend;
    const d = this.dims;
    const n = batch.batchSize * batch.seqLen;
    const shape = { batch: batch.batchSize, seq: batch.seqLen };
    const timings = options.timings;
    let mark = timings ? performance.now() : 0;
    // Milliseconds since the last mark, measured once `probe` can be read back (see StepTimings).
    const lap = async (probe: Tensor): Promise<number> => {
      await be.read(firstElement(probe));
      const now = performance.now();
      const ms = now - mark;
      mark = now;
      return ms;
    };
    const { ids, positions, segments, labels } = this.batchTensors(batch, arena);
    let tokens = 0;
    const labelIds = batch.labels;
    for (let i = 0; i < labelIds.length; i++) if (labelIds[i] !== -100) tokens++;

    const ckpt = options.gradientCheckpointing && backward;
    // Tapes are kept only for a backward without checkpointing; otherwise each layer's
    // temporaries live in layerArena and are recycled (evaluation keeps only layer outputs).
    const keepTapes = backward && !ckpt;
    const inputs: Tensor[] = [];
    const tapes: LayerTape[] = [];
    let x = this.embed(ids, arena);
    for (let i = 0; i < this.layers.length; i++) {
      inputs.push(x);
      const scratch = keepTapes ? arena : layerArena;
      const { out, tape } = this.layerForward(i, {
        x,
        shape,
        positions,
        segmentIds: segments,
        arena: scratch,
        outArena: arena,
        training: options.training,
        stepSeed: options.stepSeed,
        cache: null,
      });
      if (keepTapes) tapes.push(tape);
      else layerArena.reset();
      x = out;
    }
    if (timings) timings.forwardMs += await lap(x);
    // Final norm + chunked vocabulary projection and cross-entropy (+ its gradient).
    const hf = arena.alloc([n, d.hiddenSize], this.dtype);
    const rstdF = arena.alloc([n], this.dtype);
    be.rmsnorm(x, this.finalNorm, d.rmsNormEps, hf, rstdF);
    const dhf = backward ? arena.alloc([n, d.hiddenSize], this.dtype) : null;
    const losses = arena.alloc([n], this.dtype);
    const chunk = Math.max(1, Math.min(n, options.lossChunkRows));
    const logitsBuf = arena.alloc([chunk, d.vocabSize], this.dtype);
    const gradScale = tokens > 0 ? options.gradScale / tokens : 0;
    for (let r0 = 0; r0 < n; r0 += chunk) {
      const r1 = Math.min(n, r0 + chunk);
      const logits = logitsBuf.rows(0, r1 - r0);
      this.lmHead.forward(hf.rows(r0, r1), logits);
      be.crossEntropy(
        logits,
        labels.rows(r0, r1),
        -100,
        losses.rows(r0, r1),
        backward ? logits : null,
        gradScale,
        { softcap: d.finalLogitSoftcap ?? null },
      );
      if (dhf) this.lmHead.inputGrad(logits, dhf.rows(r0, r1), false);
    }
    be.sum(losses, lossSum, false);
    if (timings) timings.lossMs += await lap(lossSum);
    if (!backward || !dhf) return { tokens };

    // Layer-input gradients ping-pong between two buffers; each layer's temporaries live in
    // layerArena, recycled per layer, so backward memory does not grow with depth.
    const dxBuffers = [
      arena.alloc([n, d.hiddenSize], this.dtype),
      arena.alloc([n, d.hiddenSize], this.dtype),
    ] as const;
    let dOut = dxBuffers[0];
    be.rmsnormBackward(dhf, x, this.finalNorm, rstdF, dOut, null);
    for (let i = this.layers.length - 1; i >= 0; i--) {
      layerArena.reset();
      let tape: LayerTape;
      if (ckpt) {
        if (timings) await be.read(firstElement(dOut));
        const t0 = timings ? performance.now() : 0;
        tape = this.layerForward(i, {
          x: inputs[i]!,
          shape,
          positions,
          segmentIds: segments,
          arena: layerArena,
          outArena: layerArena,
          training: options.training,
          stepSeed: options.stepSeed,
          cache: null,
        }).tape;
        if (timings) {
          await be.read(firstElement(dOut));
          timings.recomputeMs += performance.now() - t0;
        }
      } else {
        tape = tapes[i]!;
      }
      const dx = i > 0 ? (dOut === dxBuffers[0] ? dxBuffers[1] : dxBuffers[0]) : null;
      this.layerBackward(i, {
        tape,
        dOut,
        shape,
        positions,
        segmentIds: segments,
        arena: layerArena,
        dx,
      });
      if (dx) dOut = dx;
    }
    layerArena.reset();
    // A device queue runs in order: reading any tensor waits for every kernel queued before.
    if (timings) timings.backwardMs += await lap(dOut);
    return { tokens };
  }

  /**
   * Logits for the last `keepLast` positions of `tokens` appended to the cache (prefill or decode).
   * Returns a [keepLast, V] tensor in `arena`.
   */
  forwardCached(tokens: Int32Array, cache: KvCache, arena: Arena, keepLast = 1): Tensor {
    const be = this.backend;
    const d = this.dims;
    const n = tokens.length;
    if (n === 0) throw new Error('forwardCached: no tokens');
    if (cache.length + n > cache.capacity) {
      throw new Error(
        `context full: ${cache.length} + ${n} tokens exceed the cache capacity ${cache.capacity}`,
      );
    }
    const ids = arena.alloc([n], 'i32');
    ids.write(tokens);
    const posArr = new Int32Array(n);
    for (let i = 0; i < n; i++) posArr[i] = cache.length + i;
    this.ensureRope(posArr);
    const positions = arena.alloc([n], 'i32');
    positions.write(posArr);
    let x = this.embed(ids, arena);
    for (let i = 0; i < this.layers.length; i++) {
      x = this.layerForward(i, {
        x,
        shape: { batch: 1, seq: n },
        positions,
        segmentIds: null,
        arena,
        outArena: arena,
        training: false,
        stepSeed: 0,
        cache,
      }).out;
    }
    cache.commit(n);
    const keep = Math.min(keepLast, n);
    const last = x.rows(n - keep, n);
    const h = arena.alloc([keep, d.hiddenSize], this.dtype);
    const rstd = arena.alloc([keep], this.dtype);
    be.rmsnorm(last, this.finalNorm, d.rmsNormEps, h, rstd);
    const logits = arena.alloc([keep, d.vocabSize], this.dtype);
    this.lmHead.forward(h, logits);
    const cap = d.finalLogitSoftcap ?? null;
    if (cap !== null) be.softcap(logits, cap, logits);
    return logits;
  }

  dispose(): void {
    const tied = this.tiedEmbeddings;
    if (this.embedding instanceof Tensor) this.embedding.dispose();
    else disposePacked4bit(this.embedding);
    if (!tied) this.lmHead.dispose();
    this.finalNorm.dispose();
    for (const layer of this.layers) {
      layer.attnNorm.dispose();
      layer.ffnNorm.dispose();
      layer.qNorm?.dispose();
      layer.kNorm?.dispose();
      layer.postAttnNorm?.dispose();
      layer.postFfnNorm?.dispose();
      for (const name of PROJECTIONS) layer.proj[name]?.dispose();
    }
    this.rope.cos.dispose();
    this.rope.sin.dispose();
    this.rope.local?.cos.dispose();
    this.rope.local?.sin.dispose();
    this.rope.long?.cos.dispose();
    this.rope.long?.sin.dispose();
    this.lossScratch?.dispose();
    this.lossScratch = null;
  }
}

/** A one-element view (a cheap read-back that still waits for the queue). */
function firstElement(t: Tensor): Tensor {
  return t.view([t.size]).rows(0, Math.min(1, t.size));
}
