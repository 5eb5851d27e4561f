/**
 * karpathy/llama2.c checkpoints (docs/formats.md §6): legacy v0 (7 × int32 header, negative vocab =
 * unshared classifier, trailing freq_cis tables) and v1 ("ak42", 256-byte header, shared flag),
 * plus the raw `tokenizer.bin` vocabulary file. Tensors keep llama2.c's own names and layout
 * (row-major [out, in], Q/K rows in the interleaved-pair RoPE layout); mapping to HF names and
 * layout is checkpoint.ts's job.
 */
import { ByteCursor, RandomAccessFile } from './binary-reader.js';

export const LLAMA2C_V1_MAGIC = 0x616b3432; // "ak42"
const V1_HEADER_BYTES = 256;
/** Refuse headers whose dimensions are beyond any real model (keeps size arithmetic exact). */
const MAX_DIM = 1 << 20;

export interface Llama2cHeader {
  version: 0 | 1;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  /** Classifier tied to the token embedding (v0: vocab_size > 0; v1: explicit flag). */
  sharedClassifier: boolean;
}

export interface Llama2cTensorInfo {
  /** llama2.c name: token_embedding, rms_final, wcls, layers.N.{rms_att,wq,wk,wv,wo,rms_ffn,w1,w2,w3}. */
  name: string;
  shape: number[];
  offset: number;
  byteSize: number;
}

/** An open llama2.c checkpoint; tensors are read by position on demand. Call close() when done. */
export class Llama2cCheckpoint {
  private constructor(
    private readonly file: RandomAccessFile,
    readonly header: Llama2cHeader,
    readonly tensors: Map<string, Llama2cTensorInfo>,
  ) {}

  get label(): string {
    return this.file.label;
  }

  static open(filePath: string): Llama2cCheckpoint {
    const file = RandomAccessFile.open(filePath);
    try {
      const header = readHeader(file);
      return new Llama2cCheckpoint(file, header, layoutTensors(file, header));
    } catch (e) {
      file.close();
      throw e;
    }
  }

  tensor(name: string): Llama2cTensorInfo {
    const t = this.tensors.get(name);
    if (!t) this.file.fail(`no tensor named '${name}'`);
    return t;
  }

  readF32(name: string): Float32Array {
    const t = this.tensor(name);
    const out = new Float32Array(t.byteSize / 4);
    this.file.readInto(t.offset, new Uint8Array(out.buffer), `tensor '${name}' data`);
    return out;
  }

  close(): void {
    this.file.close();
  }
}

/** True when the file starts like a v1 llama2.c checkpoint (used for format detection). */
export function looksLikeLlama2cV1(firstBytes: Uint8Array): boolean {
  return (
    firstBytes.length >= 4 &&
    new DataView(firstBytes.buffer, firstBytes.byteOffset).getUint32(0, true) === LLAMA2C_V1_MAGIC
  );
}

function readHeader(file: RandomAccessFile): Llama2cHeader {
  const c = new ByteCursor(file);
  if (file.size < 28) file.fail(`too small to be a llama2.c checkpoint (${file.size} bytes)`);
  let version: 0 | 1 = 0;
  if (c.u32('magic') === LLAMA2C_V1_MAGIC) {
    const v = c.i32('version');
    if (v === 2) file.fail('llama2.c version 2 (Q8_0 runq.c) checkpoints are not supported');
    if (v !== 1) file.fail(`unsupported llama2.c checkpoint version ${v}`);
    version = 1;
  } else {
    c.position = 0;
  }
  const dim = c.i32('dim');
  const hiddenDim = c.i32('hidden_dim');
  const nLayers = c.i32('n_layers');
  const nHeads = c.i32('n_heads');
  const nKvHeads = c.i32('n_kv_heads');
  const rawVocab = c.i32('vocab_size');
  const seqLen = c.i32('seq_len');
  let sharedClassifier: boolean;
  if (version === 1) {
    const flag = c.u8('shared_classifier');
    if (flag > 1) file.fail(`shared_classifier flag ${flag} is not 0 or 1`);
    sharedClassifier = flag === 1;
    if (rawVocab <= 0) file.fail(`vocab_size ${rawVocab} must be positive in a v1 header`);
  } else {
    sharedClassifier = rawVocab > 0;
  }
  const vocabSize = Math.abs(rawVocab);
  const fields = {
    dim,
    hidden_dim: hiddenDim,
    n_layers: nLayers,
    n_heads: nHeads,
    n_kv_heads: nKvHeads,
    vocab_size: vocabSize,
    seq_len: seqLen,
  };
  for (const [k, v] of Object.entries(fields)) {
    if (!(v > 0 && v <= MAX_DIM))
      file.fail(
        `header ${k} = ${v} is not a plausible size (1..${MAX_DIM}); not a llama2.c checkpoint?`,
      );
  }
  if (dim % nHeads !== 0) file.fail(`header dim ${dim} is not divisible by n_heads ${nHeads}`);
  if (nKvHeads > nHeads || nHeads % nKvHeads !== 0)
    file.fail(`header n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
  if ((dim / nHeads) % 2 !== 0) file.fail(`head size ${dim / nHeads} is odd (RoPE needs pairs)`);
  return {
    version,
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize,
    seqLen,
    sharedClassifier,
  };
}

/** Assigns every tensor its offset in the version's fixed order and checks the file size exactly. */
function layoutTensors(file: RandomAccessFile, h: Llama2cHeader): Map<string, Llama2cTensorInfo> {
  const headSize = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headSize;
  // The size the header implies, in closed form, checked before any per-layer table is built: a
  // corrupt n_layers (up to 2^20 passes the header bounds) must not cost millions of entries first.
  const perLayer4 = 2 * h.dim + 2 * h.dim * h.dim + 2 * kvDim * h.dim + 3 * h.hiddenDim * h.dim;
  const expected =
    (h.version === 1 ? V1_HEADER_BYTES : 28) +
    4 * (h.vocabSize * h.dim * (h.sharedClassifier ? 1 : 2) + h.nLayers * perLayer4 + h.dim) +
    (h.version === 0 ? 2 * 4 * h.seqLen * (headSize / 2) : 0);
  if (expected !== file.size) {
    file.fail(
      `file size ${file.size} does not match the v${h.version} header (dim ${h.dim}, hidden ${h.hiddenDim}, ` +
        `layers ${h.nLayers}, heads ${h.nHeads}/${h.nKvHeads}, vocab ${h.vocabSize}, seq ${h.seqLen}` +
        `${h.sharedClassifier ? '' : ', unshared classifier'}): expected ${expected} bytes`,
    );
  }
  const tensors = new Map<string, Llama2cTensorInfo>();
  let offset = h.version === 1 ? V1_HEADER_BYTES : 28;
  const add = (name: string, shape: number[]): void => {
    const byteSize = 4 * shape.reduce((a, b) => a * b, 1);
    tensors.set(name, { name, shape, offset, byteSize });
    offset += byteSize;
  };
  const perLayer = (kind: string, shape: number[]): void => {
    for (let l = 0; l < h.nLayers; l++) add(`layers.${l}.${kind}`, shape);
  };
  const attention = (): void => {
    perLayer('wq', [h.dim, h.dim]);
    perLayer('wk', [kvDim, h.dim]);
    perLayer('wv', [kvDim, h.dim]);
    perLayer('wo', [h.dim, h.dim]);
  };
  const ffn = (): void => {
    perLayer('w1', [h.hiddenDim, h.dim]);
    perLayer('w2', [h.dim, h.hiddenDim]);
    perLayer('w3', [h.hiddenDim, h.dim]);
  };
  let skippedTail = 0;
  if (h.version === 0) {
    add('token_embedding', [h.vocabSize, h.dim]);
    perLayer('rms_att', [h.dim]);
    attention();
    perLayer('rms_ffn', [h.dim]);
    ffn();
    add('rms_final', [h.dim]);
    // freq_cis_real/imag [seq_len, head_size/2] each: precomputed RoPE tables, not weights.
    skippedTail = 2 * 4 * h.seqLen * (headSize / 2);
    offset += skippedTail;
  } else {
    perLayer('rms_att', [h.dim]);
    perLayer('rms_ffn', [h.dim]);
    add('rms_final', [h.dim]);
    add('token_embedding', [h.vocabSize, h.dim]);
    attention();
    ffn();
  }
  if (!h.sharedClassifier) add('wcls', [h.vocabSize, h.dim]);
  if (offset !== file.size) {
    file.fail(
      `file size ${file.size} does not match the v${h.version} header (dim ${h.dim}, hidden ${h.hiddenDim}, ` +
        `layers ${h.nLayers}, heads ${h.nHeads}/${h.nKvHeads}, vocab ${h.vocabSize}, seq ${h.seqLen}` +
        `${h.sharedClassifier ? '' : ', unshared classifier'}): expected ${offset} bytes`,
    );
  }
  return tensors;
}

// ---------------------------------------------------------------------------------------------
// tokenizer.bin

export interface Llama2cTokenizerFile {
  maxTokenLength: number;
  /** Raw bytes of each piece (llama2.c spelling: real spaces, BOS "\n<s>\n", EOS "\n</s>\n"). */
  tokens: Uint8Array[];
  scores: Float32Array;
}

/**
 * Parses a llama2.c tokenizer.bin. The token count is not stored in the file: pass the model's
 * vocab size (then trailing bytes are an error), or omit it to read tokens until end of file.
 */
export function readLlama2cTokenizer(filePath: string, vocabSize?: number): Llama2cTokenizerFile {
  const file = RandomAccessFile.open(filePath);
  try {
    const c = new ByteCursor(file);
    const maxTokenLength = c.u32('max_token_length');
    if (maxTokenLength === 0 || maxTokenLength > 1 << 16)
      file.fail(`max_token_length ${maxTokenLength} is not plausible`);
    if (vocabSize !== undefined) c.checkCount(vocabSize, 8, 'vocab size');
    const tokens: Uint8Array[] = [];
    const scores: number[] = [];
    while (vocabSize === undefined ? c.remaining > 0 : tokens.length < vocabSize) {
      const id = tokens.length;
      scores.push(c.f32(`token ${id} score`));
      const len = c.i32(`token ${id} length`);
      if (len < 0 || len > maxTokenLength)
        file.fail(`token ${id} length ${len} is outside 0..max_token_length ${maxTokenLength}`);
      tokens.push(c.bytes(len, `token ${id} bytes`));
    }
    if (c.remaining > 0)
      file.fail(
        `${c.remaining} trailing bytes after ${tokens.length} tokens (vocab size mismatch?)`,
      );
    return { maxTokenLength, tokens, scores: Float32Array.from(scores) };
  } finally {
    file.close();
  }
}
