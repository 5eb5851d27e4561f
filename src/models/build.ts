import type { Backend, Packed4bitWeight } from '../tensor/backend.js';
import type { DType } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { DenseLinear, type FrozenLinear, Linear4bit, LinearGgml } from '../nn/linear.js';
import {
  type GgmlHostWeight,
  type GgmlQuantType,
  ggmlRowBytes,
  uploadGgml,
} from '../quant/ggml-blocks.js';
import { LoraLinear, type LoraOptions } from '../nn/lora.js';
import type { Quantized4bit, Quantize4bitOptions } from '../quant/quantize4bit.js';
import { allocPacked4bit, uploadPacked4bit } from '../quant/upload.js';
import { ropeTables, type RopeScaling, type RopeVariant } from '../backends/rope-tables.js';
import { checkLoraRank, projectionShapes } from './lora-rank.js';
import {
  ggmlKernelsOf,
  holdsShapesOnly,
  type HostQuantize4bit,
  quantizerFor,
} from '../backends/capabilities.js';
import {
  type LlamaDims,
  type LlamaLayer,
  LlamaModel,
  type Projection,
  type RopeState,
} from './llama.js';
import { type LayerNormName, PROJECTIONS, type ProjectionName, projectionKey } from './family.js';
import {
  familyOf,
  familyTargets,
  projectionHasBias as familyBias,
  tensorTable,
} from './registry.js';

/** What the builder needs to know about a model (LlamaConfig satisfies it). */
export interface BuildConfig extends LlamaDims {
  /** The family (models/registry.ts) whose tensor table and variants apply; llama when absent. */
  readonly architecture?: string;
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling | null;
  /** Rotated dims per head when partial (Phi-4-mini), else null/absent. */
  readonly rotaryDim?: number | null;
  readonly maxPositionEmbeddings: number;
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2). */
  readonly attentionBias: boolean;
  /** o_proj carries a bias. */
  readonly attentionOutputBias?: boolean;
  /** gate/up/down carry biases. */
  readonly mlpBias?: boolean;
  /** Rope base of the sliding layers (Gemma 3), unscaled; null/absent: ropeTheta everywhere. */
  readonly ropeLocalTheta?: number | null;
}

/** Whether projection `name` has a bias under config `c` (the family's table says). */
export function projectionHasBias(c: BuildConfig, name: ProjectionName): boolean {
  return familyBias(c, name);
}

/** Tensors by Hugging Face name, in HF layout ([out, in], Q/K rows in rotate_half order), loaded one at a time. */
export interface TensorSource {
  has(name: string): boolean;
  load(name: string): Float32Array | Promise<Float32Array>;
  /** A projection weight already stored in 4-bit (bitsandbytes checkpoints): used as is. */
  loadQuantized?(name: string): Quantized4bit | null;
  /**
   * GGUF: the block format a weight is stored in when it is one the backends can keep as stored
   * (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K), else null (F32, F16, ...). Read from the header: no data.
   */
  ggmlTypeOf?(name: string): GgmlQuantType | null;
  /** GGUF: that weight's own blocks, rows in HF order (Q/K rows un-interleaved whole). */
  loadGgml?(name: string): GgmlHostWeight | null;
  /** Where the tensors come from (a file or folder), named in errors about them. */
  readonly path?: string;
}

export interface LoraConfig extends LoraOptions {
  /** Projection names (q_proj, …) or 'all-linear'. */
  readonly targets: readonly ProjectionName[] | 'all-linear';
  /** Only these layer indices (PEFT layers_to_transform); all when null. */
  readonly layers: readonly number[] | null;
}

/**
 * PEFT-style LoRA defaults as `qlora train` uses them (src/train/settings.ts takes its rank, alpha,
 * dropout, init and targets defaults from here): r 16, alpha 32 (scale 2), dropout 0.05 on every
 * linear projection of every layer, kaiming-uniform A and zero B.
 */
export const LORA_DEFAULTS: LoraConfig = {
  r: 16,
  alpha: 32,
  dropout: 0.05,
  useRslora: false,
  init: 'kaiming',
  seed: 42,
  targets: 'all-linear',
  layers: null,
};

export interface BuildOptions {
  readonly backend: Backend;
  /** Compute dtype: f32 (default), or f64 on the ref backend for gradient checks. */
  readonly dtype?: DType;
  /** 4-bit base for the projections (NF4 + double quant for QLoRA); null keeps them full precision. */
  readonly quantization?: Quantize4bitOptions | null;
  readonly lora?: LoraConfig | null;
  /**
   * Also quantize an untied lm_head (same 4-bit settings as the projections): on Llama-2-7B that
   * is 0.5 GB less. A tied head is the embedding table and stays full precision.
   */
  readonly quantizeHead?: boolean;
  /**
   * Also quantize the embedding table (looked up by dequantizing rows); a tied lm_head then shares
   * the 4-bit table. With quantizeHead, the whole base is ≈4.13 bits/param.
   */
  readonly quantizeEmbedding?: boolean;
  /**
   * Keep every projection weight (and an untied lm_head) that the source stores in a GGUF block
   * format in that format (`--quant keep`): LoRA trains on the quantization the file is served
   * with. Weights stored unquantized stay full precision. Excludes `quantization`.
   */
  readonly keepQuantized?: boolean;
  /** Rotary table length to start with (grows on demand). */
  readonly maxPositions?: number;
  /** Called as each tensor is loaded (progress). */
  readonly onTensor?: (name: string, index: number, total: number) => void;
}

/**
 * The projections of `c`'s family that LoRA targets select (registry.ts familyTargets: fused
 * families map a role they fuse to the fused projection, e.g. q_proj → qkv_proj on Phi-3).
 */
export function resolveTargets(
  targets: LoraConfig['targets'],
  c: { readonly architecture?: string } = {},
): Set<ProjectionName> {
  if (targets !== 'all-linear') {
    for (const t of targets) {
      if (!(PROJECTIONS as readonly string[]).includes(t))
        throw new Error(
          `unknown LoRA target '${t}' (choose from ${PROJECTIONS.join(', ')} or all-linear)`,
        );
    }
  }
  return familyTargets(c, targets);
}

/**
 * Builds a LlamaModel tensor by tensor: each projection is loaded, quantized (when asked) and
 * uploaded before the next is read, so the full-precision model never exists in memory at once.
 */
export async function buildLlama(
  config: BuildConfig,
  source: TensorSource,
  options: BuildOptions,
): Promise<LlamaModel> {
  const be = options.backend;
  const dtype = options.dtype ?? 'f32';
  if (!be.floatTypes.includes(dtype))
    throw new Error(`backend '${be.name}' does not compute in ${dtype}`);
  const c = config;
  const names = expectedTensorNames(c);
  let index = 0;
  const total = names.length;
  const need = async (name: string, shape: readonly number[]): Promise<Float32Array> => {
    if (!source.has(name)) throw new Error(`checkpoint is missing tensor '${name}'`);
    options.onTensor?.(name, index++, total);
    const values = await source.load(name);
    const expected = shape.reduce((a, b) => a * b, 1);
    if (values.length !== expected) {
      throw new Error(
        `tensor '${name}' has ${values.length} values, expected [${shape.join(', ')}] = ${expected}`,
      );
    }
    return values;
  };
  // A backend that holds no values (the memory planner's counting backend) gets every tensor by
  // shape: nothing is loaded or quantized, so planning a 7B model takes no memory and no time.
  const shapesOnly = holdsShapesOnly(be);
  const present = (name: string): void => {
    if (!source.has(name)) throw new Error(`checkpoint is missing tensor '${name}'`);
    options.onTensor?.(name, index++, total);
  };
  const upload = async (name: string, shape: readonly number[]): Promise<Tensor> => {
    if (!shapesOnly) return be.fromArray(await need(name, shape), shape, dtype);
    present(name);
    return be.zeros(shape, dtype);
  };
  // A (1 + w) RMSNorm (Gemma) keeps 1 + w, the factor rmsnorm multiplies by: transformers adds the
  // 1 in float32 at every call, which gives these same values (norm weights are never trained).
  const family = familyOf(c);
  const uploadNorm = async (name: string, size: number): Promise<Tensor> => {
    if (family.norm !== 'rms1p' || shapesOnly) return upload(name, [size]);
    const w = await need(name, [size]);
    const onePlus = new Float32Array(size);
    for (let i = 0; i < size; i++) onePlus[i] = 1 + w[i]!;
    return be.fromArray(
      dtype === 'f64' ? Float64Array.from(w, (v) => 1 + v) : onePlus,
      [size],
      dtype,
    );
  };

  // A backend with a faster host quantizer (cpu: the native one) quantizes with it; same bits.
  const quantizeRaw = quantizerFor(be);
  // The quantizer knows values, not where they came from: a NaN weight is named by source and tensor.
  const where =
    source.path === undefined
      ? ''
      : `${source.path.split(/[\\/]/).filter(Boolean).pop() ?? source.path}: `;
  let quantizing = '';
  const quantize: HostQuantize4bit = (values, q) => {
    try {
      return quantizeRaw(values, q);
    } catch (e) {
      throw new Error(`${where}tensor '${quantizing}': ${(e as Error).message}`, { cause: e });
    }
  };

  /** A tensor in 4-bit on the backend: as stored (bitsandbytes checkpoints) or quantized now. */
  const quantizeTensor = async (
    name: string,
    shape: readonly [number, number],
  ): Promise<Packed4bitWeight> => {
    if (shapesOnly) {
      present(name);
      return allocPacked4bit(be, shape[0], shape[1], options.quantization!);
    }
    const stored = source.loadQuantized?.(name);
    if (stored) return uploadPacked4bit(be, stored, shape[0], shape[1]);
    const values = await need(name, shape);
    quantizing = name;
    return uploadPacked4bit(be, quantize(values, options.quantization!), shape[0], shape[1]);
  };

  const targets = options.lora
    ? resolveTargets(options.lora.targets, c)
    : new Set<ProjectionName>();
  const loraLayers = options.lora?.layers ? new Set(options.lora.layers) : null;
  for (const l of loraLayers ?? []) {
    if (!Number.isInteger(l) || l < 0 || l >= c.numLayers)
      throw new Error(`LoRA layer ${l} out of range (model has ${c.numLayers})`);
  }
  // Before anything is allocated: an absurd rank is refused here, not after gigabytes of adapters.
  if (options.lora) checkLoraRank(c, options.lora.r, targets);

  const keep = options.keepQuantized ?? false;
  if (keep && options.quantization)
    throw new Error('keepQuantized (--quant keep) and a 4-bit quantization exclude each other');
  if (keep && typeof source.ggmlTypeOf !== 'function')
    throw new Error(
      `--quant keep trains on a GGUF file's own quantization; ${source.path ?? 'this model'} is not a GGUF file`,
    );
  const ggmlBe = keep ? ggmlKernelsOf(be) : null;
  /** The weight in its stored GGUF blocks, or null when it is not stored in one (kept full precision). */
  const keptTensor = (name: string, shape: readonly [number, number]): LinearGgml | null => {
    const type = keep ? source.ggmlTypeOf!(name) : null;
    if (!type) return null;
    if (shapesOnly) {
      present(name);
      const blocks = be.zeros([shape[0] * ggmlRowBytes(type, shape[1])], 'u8');
      return new LinearGgml({ rows: shape[0], cols: shape[1], type, blocks });
    }
    if (!source.has(name)) throw new Error(`checkpoint is missing tensor '${name}'`);
    options.onTensor?.(name, index++, total);
    const host = source.loadGgml!(name);
    if (!host || host.rows !== shape[0] || host.cols !== shape[1])
      throw new Error(
        `${where}tensor '${name}': expected its ${type} blocks as [${shape.join(', ')}]`,
      );
    return new LinearGgml(uploadGgml(ggmlBe!, host));
  };

  const embedShape = [c.vocabSize, c.hiddenSize] as const;
  const embedding: Tensor | Packed4bitWeight =
    options.quantizeEmbedding && options.quantization
      ? await quantizeTensor('model.embed_tokens.weight', embedShape)
      : await upload('model.embed_tokens.weight', embedShape);
  const layers: LlamaLayer[] = [];
  const projShapes = projectionShapes(c);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    // The family's layer norms (input and post-attention; q/k per head for Qwen3), by role.
    const norms: Partial<Record<LayerNormName, Tensor>> = {};
    for (const n of family.layerNorms) norms[n.name] = await uploadNorm(`${p}.${n.hf}`, n.size(c));
    const proj = {} as Record<ProjectionName, Projection>;
    for (const slot of family.projections) {
      const name = slot.name;
      const key = projectionKey(slot, i);
      const shape = projShapes[name]!;
      const kept = keptTensor(`${key}.weight`, shape);
      const stored =
        options.quantization && !shapesOnly
          ? (source.loadQuantized?.(`${key}.weight`) ?? null)
          : null;
      const w = kept || stored || shapesOnly ? null : await need(`${key}.weight`, shape);
      if (shapesOnly && !kept) present(`${key}.weight`);
      const bias = projectionHasBias(c, name) ? await upload(`${key}.bias`, [shape[0]]) : null;
      let base: FrozenLinear;
      if (kept) {
        base = bias ? new LinearGgml(kept.weight, bias) : kept;
      } else if (shapesOnly) {
        base = options.quantization
          ? new Linear4bit(allocPacked4bit(be, shape[0], shape[1], options.quantization), bias)
          : new DenseLinear(be.zeros(shape, dtype), bias);
      } else if (stored) {
        options.onTensor?.(`${key}.weight`, index++, total);
        base = new Linear4bit(uploadPacked4bit(be, stored, shape[0], shape[1]), bias);
      } else if (options.quantization) {
        quantizing = `${key}.weight`;
        const q = quantize(w!, options.quantization);
        base = new Linear4bit(uploadPacked4bit(be, q, shape[0], shape[1]), bias);
      } else {
        base = new DenseLinear(be.fromArray(w!, shape, dtype), bias);
      }
      const wantLora = options.lora && targets.has(name) && (!loraLayers || loraLayers.has(i));
      proj[name] = wantLora
        ? new LoraLinear(base, `base_model.model.${key}`, options.lora!, dtype)
        : base;
    }
    layers.push({
      attnNorm: norms.attnNorm!,
      ffnNorm: norms.ffnNorm!,
      qNorm: norms.qNorm,
      kNorm: norms.kNorm,
      postAttnNorm: norms.postAttnNorm,
      postFfnNorm: norms.postFfnNorm,
      proj,
    });
  }
  const finalNorm = await uploadNorm('model.norm.weight', c.hiddenSize);
  const tied = c.tieWordEmbeddings || !source.has('lm_head.weight');
  let lmHead: FrozenLinear;
  if (tied)
    lmHead = embedding instanceof Tensor ? new DenseLinear(embedding) : new Linear4bit(embedding);
  else if (options.quantizeHead && options.quantization) {
    lmHead = new Linear4bit(await quantizeTensor('lm_head.weight', embedShape));
  } else
    lmHead =
      keptTensor('lm_head.weight', embedShape) ??
      new DenseLinear(await upload('lm_head.weight', embedShape));

  const initialPositions = Math.min(
    options.maxPositions ?? 2048,
    Math.max(c.maxPositionEmbeddings, 1),
  );
  // Partial rotary (Phi-4-mini): tables for the rotated dims only; the rest pass through.
  const rotary = c.rotaryDim ?? c.headDim;
  const makeTables = (
    positions: number,
    theta: number,
    scaling: RopeScaling | null,
    variant: RopeVariant = 'short',
  ) => {
    const precision = dtype === 'f64' ? 'f64' : 'f32';
    const t = ropeTables(rotary, positions, theta, scaling, precision, variant);
    return {
      cos: be.fromArray(t.cos, [positions, rotary / 2], dtype),
      sin: be.fromArray(t.sin, [positions, rotary / 2], dtype),
    };
  };
  // Sliding layers with a rope base of their own (Gemma 3) use a second, unscaled table.
  const localTheta = c.ropeLocalTheta ?? null;
  // LongRoPE: the long factors' tables, needed once the tables reach past the original context.
  const longFrom =
    c.ropeScaling?.ropeType === 'longrope' ? c.ropeScaling.originalMaxPositionEmbeddings : null;
  const makeRope = (positions: number) => ({
    ...makeTables(positions, c.ropeTheta, c.ropeScaling),
    local: localTheta === null ? null : makeTables(positions, localTheta, null),
    long:
      longFrom !== null && positions > longFrom
        ? makeTables(positions, c.ropeTheta, c.ropeScaling, 'long')
        : null,
  });
  const first = makeRope(initialPositions);
  const rope: RopeState = { ...first, layout: 'half', maxPositions: initialPositions, longFrom };
  const model = new LlamaModel(
    c,
    be,
    dtype,
    embedding,
    layers,
    finalNorm,
    lmHead,
    rope,
    options.lora ?? null,
  );
  model.onRopeOverflow = (positions: number) => {
    const grown = Math.max(positions, rope.maxPositions * 2);
    const next = makeRope(grown);
    rope.cos.dispose();
    rope.sin.dispose();
    rope.local?.cos.dispose();
    rope.local?.sin.dispose();
    rope.long?.cos.dispose();
    rope.long?.sin.dispose();
    rope.cos = next.cos;
    rope.sin = next.sin;
    rope.local = next.local;
    rope.long = next.long;
    rope.maxPositions = grown;
  };
  return model;
}

/** The tensor names an HF checkpoint of `config`'s family holds (lm_head only when untied). */
export function expectedTensorNames(c: BuildConfig): string[] {
  return tensorTable(c).map((e) => e.hf);
}
