/**
 * One entry point for model weights: `openCheckpoint(path)` recognizes a Hugging Face folder
 * (config.json + model.safetensors or a sharded index), a .gguf file, or a llama2.c .bin, and
 * presents every source the same way — HF tensor names, HF layout ([out, in] row-major, Q/K rows
 * in rotate_half order), f32 values — loading one tensor at a time on request.
 *
 * GGUF (llama architecture) and llama2.c store Q/K rows in the interleaved-pair RoPE layout
 * (docs/formats.md §5.4, Q/K permutation); we apply its inverse per head so all sources give the
 * same logits with HF's rotate_half RoPE. Qwen2 GGUFs use NEOX (rotate_half) RoPE and are not
 * permuted.
 */
import { fs, path } from './host.js';
import {
  longropeAttentionFactor,
  ropeInverseFrequencies,
  type RopeScaling,
} from '../backends/rope-tables.js';
import { FileFormatError, RandomAccessFile } from './binary-reader.js';
import { GgufReader } from './gguf.js';
import { type GgmlHostWeight, type GgmlQuantType, ggmlQuantTypeOf } from '../quant/ggml-blocks.js';
import { Llama2cCheckpoint, looksLikeLlama2cV1 } from './llama2c.js';
import { SAFETENSORS_INDEX, SafetensorsCollection } from './safetensors.js';
import { isBnb4bit, type RawTensorReader, readBnb4bit } from './bnb4bit.js';
import { dequantize4bit, type Quantized4bit } from '../quant/quantize4bit.js';
import {
  configFromGguf,
  configFromLlama2c,
  loadHfConfig,
  type LlamaConfig,
  shortestF32,
} from './config.js';
import { ggufNameIn } from '../models/family.js';
import { familyOf, interleavedHeadsFor, tensorShapes, tensorTable } from '../models/registry.js';

export type CheckpointSource = 'hf' | 'gguf' | 'llama2c';

export interface Checkpoint {
  readonly config: LlamaConfig;
  readonly source: CheckpointSource;
  readonly path: string;
  /** Canonical HF names of every weight the model needs (no lm_head when tied). */
  readonly tensorNames: readonly string[];
  has(name: string): boolean;
  /** Row-major shape of a canonical tensor ([out, in] for linear weights). */
  shapeOf(name: string): readonly number[];
  /** Reads, dequantizes and (for Q/K) re-lays-out one tensor. */
  loadTensor(name: string): Float32Array;
  /** Same as loadTensor (the TensorSource interface models/build.ts consumes). */
  load(name: string): Float32Array;
  /** The stored 4-bit form of a projection weight from a bitsandbytes checkpoint, else null. */
  loadQuantized(name: string): Quantized4bit | null;
  /** GGUF only: the block format a weight is stored in, when the backends can keep it (TensorSource). */
  ggmlTypeOf?(name: string): GgmlQuantType | null;
  /** GGUF only: a weight's own blocks, Q/K rows in HF order. */
  loadGgml?(name: string): GgmlHostWeight | null;
  /** GGUF only: the ggml type name a tensor is stored in (F32, F16, Q4_K, ...). */
  storedTypeName?(name: string): string;
  close(): void;
}

/**
 * A config's layer count, checked against the tensors the file really holds before anything is
 * sized from it: a corrupt `num_hidden_layers` / `block_count` must not make us build a name table
 * of billions of entries (each layer needs at least 9 tensors).
 */
export function checkLayerCount(
  c: LlamaConfig,
  tensorCount: number,
  field: string,
  fail: (m: string) => never,
): void {
  // Counted loosely (layers only), so a file missing a tensor or two still gets the precise
  // "lacks tensor" message from the shape check.
  // The fewest tensors one decoder layer of the family stores: its norms and projections
  // (9 for the Llama block; 6 for Phi-3's fused qkv and gate_up).
  const f = familyOf(c);
  const perLayer = f.layerNorms.length + f.projections.length;
  const needed = c.numLayers * perLayer;
  if (needed > tensorCount) {
    fail(
      `${field} = ${c.numLayers} needs at least ${needed} tensors (${perLayer} per layer) but the weights hold ${tensorCount}`,
    );
  }
}

/** Canonical tensor names and shapes for a config, in file order (the family's tensor table). */
export function canonicalShapes(c: LlamaConfig): Map<string, number[]> {
  return tensorShapes(c);
}

/**
 * The HF ↔ interleaved Q/K row permutation (docs/formats.md §5.4): within each head of size hd,
 * HF row j·hd/2 + i is interleaved row 2i + j. Works on weights ([rows, cols]) and biases (cols = 1).
 */
function interleaveRows(
  what: string,
  src: Float32Array,
  nHeads: number,
  cols: number,
  toInterleaved: boolean,
): Float32Array {
  const rows = src.length / cols;
  const hd = rows / nHeads;
  if (!Number.isInteger(rows) || !Number.isInteger(hd) || hd % 2 !== 0) {
    throw new Error(
      `${what}: ${src.length} values do not form ${nHeads} heads of even size × ${cols}`,
    );
  }
  const out = new Float32Array(src.length);
  const half = hd / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const interleaved = (h * hd + 2 * i + j) * cols;
        const hf = (h * hd + j * half + i) * cols;
        const [from, to] = toInterleaved ? [hf, interleaved] : [interleaved, hf];
        out.set(src.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

/** Interleaved (GGUF llama, llama2.c) → HF rows: what readers apply to stored Q/K. */
export function unpermuteInterleavedRows(
  src: Float32Array,
  nHeads: number,
  cols: number,
): Float32Array {
  return interleaveRows('unpermuteInterleavedRows', src, nHeads, cols, false);
}

/** HF → interleaved rows: what writers apply (the inverse of unpermuteInterleavedRows). */
export function permuteToInterleavedRows(
  src: Float32Array,
  nHeads: number,
  cols: number,
): Float32Array {
  return interleaveRows('permuteToInterleavedRows', src, nHeads, cols, true);
}

/** The same HF ↔ interleaved row permutation on whole rows of bytes (a GGUF-quantized weight's blocks). */
function unpermuteInterleavedByteRows(src: Uint8Array, nHeads: number, rows: number): Uint8Array {
  const rowBytes = src.length / rows;
  const hd = rows / nHeads;
  if (!Number.isInteger(rowBytes) || !Number.isInteger(hd) || hd % 2 !== 0)
    throw new Error(
      `unpermuteInterleavedRows: ${rows} rows do not form ${nHeads} heads of even size`,
    );
  const out = new Uint8Array(src.length);
  const half = hd / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * hd + 2 * i + j) * rowBytes;
        out.set(src.subarray(from, from + rowBytes), (h * hd + j * half + i) * rowBytes);
      }
    }
  }
  return out;
}

/** How one canonical tensor is fetched from the underlying file. */
interface Mapping {
  stored: string;
  /** Number of heads to un-permute Q/K rows over, or 0. */
  unpermuteHeads: number;
  /** Stored as a bitsandbytes 4-bit weight (HF folders only). */
  bnb?: boolean;
  /** Added to every value (a Gemma GGUF stores norm weights as w + 1: -1 gives HF's w). */
  shift?: number;
}

/** Shared implementation: canonical names → stored names, shape checks, Q/K re-layout. */
class MappedCheckpoint implements Checkpoint {
  readonly tensorNames: readonly string[];

  constructor(
    readonly config: LlamaConfig,
    readonly source: CheckpointSource,
    readonly path: string,
    protected readonly label: string,
    private readonly shapes: Map<string, number[]>,
    private readonly mapping: Map<string, Mapping>,
    private readonly readStored: (stored: string) => Float32Array,
    private readonly closeFile: () => void,
    private readonly readBnb: ((stored: string) => Quantized4bit) | null = null,
  ) {
    this.tensorNames = [...shapes.keys()];
  }

  has(name: string): boolean {
    return this.shapes.has(name);
  }

  shapeOf(name: string): readonly number[] {
    const s = this.shapes.get(name);
    if (!s)
      throw new FileFormatError(
        this.label,
        `no tensor '${name}' in this ${this.source} checkpoint`,
      );
    return s;
  }

  /** Where `name` is stored and how; throws naming the tensor when the checkpoint has none. */
  protected mapped(name: string): Mapping {
    const m = this.mapping.get(name);
    if (!m)
      throw new FileFormatError(
        this.label,
        `no tensor '${name}' in this ${this.source} checkpoint`,
      );
    return m;
  }

  loadTensor(name: string): Float32Array {
    const shape = this.shapeOf(name);
    const m = this.mapped(name);
    let data = m.bnb ? dequantize4bit(this.readBnb!(m.stored)) : this.readStored(m.stored);
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) {
      throw new FileFormatError(
        this.label,
        `tensor '${m.stored}' has ${data.length} values, expected [${shape.join(', ')}] for '${name}'`,
      );
    }
    if (m.unpermuteHeads > 0)
      data = unpermuteInterleavedRows(data, m.unpermuteHeads, shape.length === 2 ? shape[1]! : 1);
    if (m.shift) for (let i = 0; i < data.length; i++) data[i] = data[i]! + m.shift;
    return data;
  }

  load(name: string): Float32Array {
    return this.loadTensor(name);
  }

  loadQuantized(name: string): Quantized4bit | null {
    const m = this.mapped(name);
    return m.bnb ? this.readBnb!(m.stored) : null;
  }

  close(): void {
    this.closeFile();
  }
}

/** A GGUF checkpoint: also hands over its quantized weights' own blocks (`--quant keep`). */
class GgufCheckpoint extends MappedCheckpoint {
  constructor(
    private readonly reader: GgufReader,
    ...rest: ConstructorParameters<typeof MappedCheckpoint>
  ) {
    super(...rest);
  }

  storedTypeName(name: string): string {
    return this.reader.tensor(this.mapped(name).stored).typeName;
  }

  ggmlTypeOf(name: string): GgmlQuantType | null {
    const t = this.reader.tensor(this.mapped(name).stored);
    return t.shape.length === 2 ? ggmlQuantTypeOf(t.type) : null;
  }

  loadGgml(name: string): GgmlHostWeight | null {
    const m = this.mapped(name);
    const t = this.reader.tensor(m.stored);
    const type = t.shape.length === 2 ? ggmlQuantTypeOf(t.type) : null;
    if (!type) return null;
    const [rows, cols] = t.shape as [number, number];
    let blocks = this.reader.readRaw(m.stored);
    if (m.unpermuteHeads > 0) blocks = unpermuteInterleavedByteRows(blocks, m.unpermuteHeads, rows);
    return { type, rows, cols, blocks };
  }
}

/** Opens any supported checkpoint; see the module comment. */
export function openCheckpoint(p: string): Checkpoint {
  let st: import('node:fs').Stats;
  try {
    st = fs.statSync(p);
  } catch (e) {
    throw new FileFormatError(path.basename(p), `cannot open: ${(e as Error).message}`);
  }
  if (st.isDirectory()) return openHfFolder(p);
  if (
    path.basename(p) === 'config.json' ||
    p.endsWith('.safetensors') ||
    path.basename(p) === SAFETENSORS_INDEX
  ) {
    return openHfFolder(path.dirname(p));
  }
  const head = readHead(p);
  if (
    head.length >= 4 &&
    head[0] === 0x47 &&
    head[1] === 0x47 &&
    head[2] === 0x55 &&
    head[3] === 0x46
  )
    return openGguf(p);
  if (looksLikeLlama2cV1(head) || p.endsWith('.bin')) return openLlama2c(p);
  throw new FileFormatError(
    path.basename(p),
    'not a recognized checkpoint (expected an HF folder, a .gguf file, or a llama2.c .bin)',
  );
}

function readHead(p: string): Uint8Array {
  const f = RandomAccessFile.open(p);
  try {
    return f.read(0, Math.min(8, f.size), 'file header');
  } finally {
    f.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Hugging Face folder

function openHfFolder(dir: string): Checkpoint {
  const label = path.basename(path.resolve(dir));
  const configPath = path.join(dir, 'config.json');
  if (!fs.existsSync(configPath)) throw new FileFormatError(label, 'folder has no config.json');
  const config = loadHfConfig(configPath);
  const indexPath = path.join(dir, SAFETENSORS_INDEX);
  const singlePath = path.join(dir, 'model.safetensors');
  let st: SafetensorsCollection;
  if (fs.existsSync(indexPath)) st = SafetensorsCollection.fromIndex(indexPath);
  else if (fs.existsSync(singlePath)) st = SafetensorsCollection.fromFile(singlePath);
  else
    throw new FileFormatError(
      label,
      `folder has neither model.safetensors nor ${SAFETENSORS_INDEX}`,
    );
  try {
    checkLayerCount(config, st.tensorNames.length, 'config.json num_hidden_layers', (m) => {
      throw new FileFormatError(label, m);
    });
    const shapes = canonicalShapes(config);
    const mapping = new Map<string, Mapping>();
    const reader: RawTensorReader = {
      has: (n) => st.has(n),
      raw: (n) => st.readRaw(n),
      f32: (n) => st.readF32(n),
      dtype: (n) => st.info(n).dtype,
    };
    const readBnb = (n: string): Quantized4bit => {
      try {
        return readBnb4bit(reader, n).q;
      } catch (e) {
        throw new FileFormatError(label, (e as Error).message);
      }
    };
    for (const [name, shape] of shapes) {
      if (!st.has(name)) throw new FileFormatError(label, `checkpoint lacks tensor '${name}'`);
      if (isBnb4bit(reader, name)) {
        // Pre-quantized (bitsandbytes) weight: the logical shape is in its quant state.
        const stored = readBnb4bit(reader, name).shape;
        if (stored.join(',') !== shape.join(',')) {
          throw new FileFormatError(
            label,
            `4-bit tensor '${name}' has shape [${stored.join(', ')}], config implies [${shape.join(', ')}]`,
          );
        }
        mapping.set(name, { stored: name, unpermuteHeads: 0, bnb: true });
        continue;
      }
      const info = st.info(name);
      if (info.shape.join(',') !== shape.join(',')) {
        throw new FileFormatError(
          label,
          `tensor '${name}' has shape [${info.shape.join(', ')}], config implies [${shape.join(', ')}]`,
        );
      }
      mapping.set(name, { stored: name, unpermuteHeads: 0 });
    }
    return new MappedCheckpoint(
      config,
      'hf',
      dir,
      label,
      shapes,
      mapping,
      (n) => st.readF32(n),
      () => st.close(),
      readBnb,
    );
  } catch (e) {
    st.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// GGUF

/** HF canonical name → GGUF tensor name in a config's family (docs/formats.md §5.4). */
export function ggufNameFor(hf: string, config: { readonly architecture?: string } = {}): string {
  return ggufNameIn(familyOf(config), hf);
}

/** True when two stored tensors hold identical bytes (compared in chunks, stopping at the first difference). */
function sameBytes(reader: GgufReader, a: string, b: string): boolean {
  const ta = reader.tensor(a);
  const tb = reader.tensor(b);
  if (ta.type !== tb.type || ta.byteSize !== tb.byteSize || ta.ne.join() !== tb.ne.join())
    return false;
  const file = RandomAccessFile.open(reader.gguf.path);
  try {
    const chunk = 1 << 20;
    for (let o = 0; o < ta.byteSize; o += chunk) {
      const n = Math.min(chunk, ta.byteSize - o);
      const x = file.read(ta.offset + o, n, `tensor '${a}' data`);
      const y = file.read(tb.offset + o, n, `tensor '${b}' data`);
      for (let i = 0; i < n; i++) if (x[i] !== y[i]) return false;
    }
    return true;
  } finally {
    file.close();
  }
}

/**
 * Llama-3 GGUFs carry rope scaling only as `rope_freqs.weight` (per-frequency divisors). Recover
 * the HF llama3 parameters by checking the standard settings against the stored factors.
 */
function ropeScalingFromFreqFactors(
  factors: Float32Array,
  config: LlamaConfig,
  fail: (m: string) => never,
): RopeScaling | null {
  if (factors.length !== config.headDim / 2)
    fail(`rope_freqs.weight has ${factors.length} values, expected ${config.headDim / 2}`);
  if (factors.every((f) => f === 1)) return null;
  const base = ropeInverseFrequencies(config.headDim, config.ropeTheta, null, 'f64');
  const factor = Math.max(...factors);
  for (const orig of [8192, 4096, 16384, 32768, 2048, 131072]) {
    const candidate: RopeScaling = {
      ropeType: 'llama3',
      factor,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: orig,
    };
    const scaled = ropeInverseFrequencies(config.headDim, config.ropeTheta, candidate, 'f64');
    if (factors.every((f, i) => Math.abs(base[i]! / scaled[i]! - f) <= 1e-4 * f)) return candidate;
  }
  return fail(
    'rope_freqs.weight does not match Llama-3 rope scaling with standard parameters (low 1, high 4)',
  );
}

/**
 * LongRoPE from a llama.cpp Phi-3 GGUF: the per-frequency factors as `rope_factors_short.weight`
 * and `rope_factors_long.weight` (f32 [rotary dims / 2]), the original context as
 * `<arch>.rope.scaling.original_context_length`, the cos/sin scale as
 * `<arch>.rope.scaling.attn_factor` (convert_hf_to_gguf's Phi3MiniModel).
 */
function longropeFromGguf(
  reader: GgufReader,
  config: LlamaConfig,
  fail: (m: string) => never,
): RopeScaling {
  const names = reader.gguf.tensorsByName;
  for (const n of ['rope_factors_short.weight', 'rope_factors_long.weight'])
    if (!names.has(n)) fail(`'${n}' is missing (LongRoPE needs both factor tensors)`);
  // f32 in the file: the shortest decimals that round to them (config.json's own spelling when
  // that has at most float32's precision).
  const short = Array.from(reader.readF32('rope_factors_short.weight'), shortestF32);
  const long = Array.from(reader.readF32('rope_factors_long.weight'), shortestF32);
  const half = (config.rotaryDim ?? config.headDim) / 2;
  for (const [n, v] of [
    ['rope_factors_short.weight', short],
    ['rope_factors_long.weight', long],
  ] as const) {
    if (v.length !== half)
      fail(`'${n}' has ${v.length} values, expected ${half} (rotary dims / 2)`);
    const bad = v.findIndex((x) => !(Number.isFinite(x) && x > 0));
    if (bad >= 0) fail(`'${n}'[${bad}] = ${v[bad]} must be a positive number`);
  }
  const m = reader.gguf.metadata;
  const num = (key: string): number | undefined => {
    const v = m.get(`${String(m.get('general.architecture'))}.${key}`);
    return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
  };
  const original = num('rope.scaling.original_context_length') ?? config.maxPositionEmbeddings;
  if (!(Number.isSafeInteger(original) && original > 0))
    fail(`rope.scaling.original_context_length ${original} must be a positive integer`);
  const factor = config.maxPositionEmbeddings / original;
  const att = num('rope.scaling.attn_factor');
  // Stored as f32: transformers' default when it rounds to the stored value (the usual case).
  const standard = longropeAttentionFactor(factor, original);
  const attentionFactor =
    att === undefined || Math.fround(standard) === Math.fround(att) ? standard : shortestF32(att);
  return {
    ropeType: 'longrope',
    factor,
    shortFactor: short,
    longFactor: long,
    originalMaxPositionEmbeddings: original,
    attentionFactor,
  };
}

function openGguf(p: string): Checkpoint {
  const reader = GgufReader.open(p);
  const label = reader.label;
  const fail = (m: string): never => {
    throw new FileFormatError(label, m);
  };
  try {
    const names = reader.gguf.tensorsByName;
    const embed =
      names.get('token_embd.weight') ??
      fail("no 'token_embd.weight' tensor (vocabulary-only GGUF?)");
    // An output matrix byte-identical to the embedding (llama2.c conversions copy it) is a tied classifier.
    const tied =
      !names.has('output.weight') || sameBytes(reader, 'output.weight', 'token_embd.weight');
    let config = configFromGguf(
      reader.gguf,
      { tieWordEmbeddings: tied, embeddingRows: embed.shape[0] },
      label,
    );
    if (names.has('rope_factors_long.weight') || names.has('rope_factors_short.weight')) {
      config = {
        ...config,
        ropeScaling: longropeFromGguf(reader, config, fail),
      };
    }
    if (names.has('rope_freqs.weight')) {
      config = {
        ...config,
        ropeScaling: ropeScalingFromFreqFactors(reader.readF32('rope_freqs.weight'), config, fail),
      };
    }
    checkLayerCount(
      config,
      reader.tensors.length,
      `metadata '${config.architecture}.block_count'`,
      fail,
    );
    const shapes = canonicalShapes(config);
    const mapping = new Map<string, Mapping>();
    // convert_hf_to_gguf.py stores a (1 + w) RMSNorm's weight as w + 1 (Gemma).
    const normShift = familyOf(config).norm === 'rms1p';
    const normNames = new Set(
      tensorTable(config)
        .filter((e) => e.role.kind === 'norm' || e.role.kind === 'finalNorm')
        .map((e) => e.hf),
    );
    for (const [name, shape] of shapes) {
      const stored = ggufNameFor(name, config);
      const t = names.get(stored) ?? fail(`no tensor '${stored}' (needed for '${name}')`);
      if (t.shape.join(',') !== shape.join(',')) {
        fail(
          `tensor '${stored}' has shape [${t.shape.join(', ')}], config implies [${shape.join(', ')}]`,
        );
      }
      // llama.cpp permutes Q/K for NORM-rope architectures (llama, mistral), not NEOX ones (qwen2/3).
      mapping.set(name, {
        stored,
        unpermuteHeads: interleavedHeadsFor(config, name),
        shift: normShift && normNames.has(name) ? -1 : 0,
      });
    }
    return new GgufCheckpoint(
      reader,
      config,
      'gguf',
      p,
      label,
      shapes,
      mapping,
      (n) => reader.readF32(n),
      () => reader.close(),
    );
  } catch (e) {
    reader.close();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// llama2.c

const LLAMA2C_LAYER_NAMES: [hf: string, l2c: string][] = [
  ['input_layernorm.weight', 'rms_att'],
  ['self_attn.q_proj.weight', 'wq'],
  ['self_attn.k_proj.weight', 'wk'],
  ['self_attn.v_proj.weight', 'wv'],
  ['self_attn.o_proj.weight', 'wo'],
  ['post_attention_layernorm.weight', 'rms_ffn'],
  ['mlp.gate_proj.weight', 'w1'],
  ['mlp.down_proj.weight', 'w2'],
  ['mlp.up_proj.weight', 'w3'],
];

function llama2cNameFor(hf: string): string {
  if (hf === 'model.embed_tokens.weight') return 'token_embedding';
  if (hf === 'model.norm.weight') return 'rms_final';
  if (hf === 'lm_head.weight') return 'wcls';
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  const pair = m && LLAMA2C_LAYER_NAMES.find(([h]) => h === m[2]);
  if (!m || !pair) throw new Error(`no llama2.c name for '${hf}'`);
  return `layers.${m[1]}.${pair[1]}`;
}

function openLlama2c(p: string): Checkpoint {
  const ck = Llama2cCheckpoint.open(p);
  try {
    const config = configFromLlama2c(ck.header, ck.label);
    const shapes = canonicalShapes(config);
    const mapping = new Map<string, Mapping>();
    for (const name of shapes.keys()) {
      const stored = llama2cNameFor(name);
      ck.tensor(stored);
      const heads = name.endsWith('q_proj.weight')
        ? config.numHeads
        : name.endsWith('k_proj.weight')
          ? config.numKvHeads
          : 0;
      mapping.set(name, { stored, unpermuteHeads: heads });
    }
    return new MappedCheckpoint(
      config,
      'llama2c',
      p,
      ck.label,
      shapes,
      mapping,
      (n) => ck.readF32(n),
      () => ck.close(),
    );
  } catch (e) {
    ck.close();
    throw e;
  }
}
