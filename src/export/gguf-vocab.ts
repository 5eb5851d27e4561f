/**
 * The tokenizer.* metadata of an exported GGUF (docs/formats.md §5.5), built from whatever
 * vocabulary the source model came with, so llama.cpp / Ollama tokenize exactly as the model was
 * trained:
 * - a GGUF base: its tokenizer.* keys copied verbatim (types included);
 * - an HF folder: tokenizer.json → "llama" (SentencePiece-style BPE with byte fallback, as
 *   Llama-2/TinyLlama/Mistral ship it: pieces with ▁, scores, token types) or "gpt2" (byte-level
 *   BPE with merges and a tokenizer.ggml.pre naming the split), plus special ids, add_bos/add_eos
 *   and the chat template from tokenizer_config.json;
 * - a llama2.c tokenizer.bin: a "llama" vocabulary (pieces with ▁, scores, types).
 */
import { fs, path } from '../io/host.js';
import { GgufValueType, type GgufFile } from '../io/gguf.js';
import type { GgufMetadataEntry } from '../io/gguf-writer.js';
import { readLlama2cTokenizer } from '../io/llama2c.js';
import { HfTokenizer } from '../tokenizer/hf-tokenizer.js';
import { TokenType } from '../tokenizer/spm-tokenizer.js';

export interface VocabMetadata {
  entries: GgufMetadataEntry[];
  /** Tokens in the vocabulary (after padding). */
  size: number;
  /** Things the export could not carry over exactly. */
  warnings: string[];
}

const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

const str = (key: string, value: string): GgufMetadataEntry => ({
  key,
  type: GgufValueType.STRING,
  value,
});
const u32 = (key: string, value: number): GgufMetadataEntry => ({
  key,
  type: GgufValueType.U32,
  value,
});
const bool = (key: string, value: boolean): GgufMetadataEntry => ({
  key,
  type: GgufValueType.BOOL,
  value,
});

/** Pads a vocabulary to the model's embedding rows the way convert_hf_to_gguf does ([PADn], unused). */
function padTo(
  tokens: string[],
  scores: number[] | null,
  types: number[],
  modelVocab: number,
  label: string,
): void {
  if (tokens.length > modelVocab) {
    throw new Error(
      `${label}: the tokenizer has ${tokens.length} tokens but the model's embedding has only ${modelVocab} rows`,
    );
  }
  for (let id = tokens.length; id < modelVocab; id++) {
    tokens.push(`[PAD${id}]`);
    scores?.push(-1000);
    types.push(TokenType.UNUSED);
  }
}

function vocabArrays(
  tokens: string[],
  scores: number[] | null,
  types: number[],
  merges: string[] | null,
): GgufMetadataEntry[] {
  const out: GgufMetadataEntry[] = [
    {
      key: 'tokenizer.ggml.tokens',
      type: GgufValueType.ARRAY,
      elemType: GgufValueType.STRING,
      value: tokens,
    },
  ];
  if (scores)
    out.push({
      key: 'tokenizer.ggml.scores',
      type: GgufValueType.ARRAY,
      elemType: GgufValueType.F32,
      value: Float32Array.from(scores),
    });
  out.push({
    key: 'tokenizer.ggml.token_type',
    type: GgufValueType.ARRAY,
    elemType: GgufValueType.I32,
    value: Int32Array.from(types),
  });
  if (merges)
    out.push({
      key: 'tokenizer.ggml.merges',
      type: GgufValueType.ARRAY,
      elemType: GgufValueType.STRING,
      value: merges,
    });
  return out;
}

/** Every tokenizer.* key of a GGUF file, with its stored value type. */
export function vocabFromGguf(gguf: GgufFile): VocabMetadata {
  const entries: GgufMetadataEntry[] = [];
  for (const [key, value] of gguf.metadata) {
    if (!key.startsWith('tokenizer.')) continue;
    const type = gguf.metadataTypes.get(key);
    if (type === undefined)
      throw new Error(`${path.basename(gguf.path)}: metadata '${key}' has no value type`);
    const entry: GgufMetadataEntry = { key, type, value };
    if (type === GgufValueType.ARRAY) {
      const elem = gguf.arrayElementTypes.get(key);
      if (elem === undefined)
        throw new Error(`${path.basename(gguf.path)}: array metadata '${key}' has no element type`);
      if (elem === GgufValueType.ARRAY)
        throw new Error(
          `${path.basename(gguf.path)}: nested array metadata '${key}' cannot be copied`,
        );
      entry.elemType = elem;
    }
    entries.push(entry);
  }
  const tokens = gguf.metadata.get('tokenizer.ggml.tokens');
  if (!Array.isArray(tokens))
    throw new Error(
      `${path.basename(gguf.path)}: the GGUF carries no vocabulary (tokenizer.ggml.tokens)`,
    );
  return { entries, size: tokens.length, warnings: [] };
}

/**
 * llama2.c tokenizer.bin → a "llama" vocabulary as llama.cpp's convert-llama2c-to-ggml writes it:
 * spaces become ▁, ids 0/1/2 are <unk>/<s>/</s> (unknown/control), <0xXX> pieces are byte tokens.
 */
export function vocabFromLlama2c(tokenizerBin: string, modelVocab: number): VocabMetadata {
  const file = readLlama2cTokenizer(tokenizerBin, modelVocab);
  const tokens: string[] = [];
  const types: number[] = [];
  const specials = ['<unk>', '<s>', '</s>'];
  file.tokens.forEach((bytes, id) => {
    if (id < 3) {
      tokens.push(specials[id]!);
      types.push(id === 0 ? TokenType.UNKNOWN : TokenType.CONTROL);
      return;
    }
    const text = Buffer.from(bytes).toString('utf8').replaceAll(' ', '\u2581');
    tokens.push(text);
    types.push(BYTE_PIECE.test(text) ? TokenType.BYTE : TokenType.NORMAL);
  });
  return {
    entries: [
      str('tokenizer.ggml.model', 'llama'),
      ...vocabArrays(tokens, Array.from(file.scores), types, null),
      u32('tokenizer.ggml.unknown_token_id', 0),
      u32('tokenizer.ggml.bos_token_id', 1),
      u32('tokenizer.ggml.eos_token_id', 2),
      bool('tokenizer.ggml.add_bos_token', true),
      bool('tokenizer.ggml.add_eos_token', false),
    ],
    size: tokens.length,
    warnings: [],
  };
}

type Json = Record<string, unknown>;

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

/** Split regexes of the byte-level pre-tokenizers llama.cpp knows, by tokenizer.ggml.pre name. */
const PRE_BY_REGEX: [pre: string, regex: string][] = [
  [
    'llama-bpe',
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  ],
  [
    'qwen2',
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  ],
];

/** tokenizer.ggml.pre for a byte-level tokenizer.json, recognized from its pre-tokenizer. */
function detectPre(pre: unknown): string | null {
  if (pre === null || typeof pre !== 'object') return null;
  const p = pre as Json;
  if (p.type === 'ByteLevel' && p.use_regex !== false) return 'gpt-2';
  if (p.type !== 'Sequence' || !Array.isArray(p.pretokenizers)) return null;
  const parts = p.pretokenizers as Json[];
  const last = parts[parts.length - 1];
  if (parts.length !== 2 || last?.type !== 'ByteLevel') return null;
  const first = parts[0]!;
  if (first.type === 'Digits' && first.individual_digits === true && last.use_regex !== false)
    return 'smollm';
  if (first.type === 'Split' && last.use_regex === false) {
    const regex = (first.pattern as Json | undefined)?.Regex;
    return PRE_BY_REGEX.find(([, r]) => r === regex)?.[0] ?? null;
  }
  return null;
}

function mergeText(m: unknown): string {
  if (typeof m === 'string') return m;
  if (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === 'string'))
    return `${m[0]} ${m[1]}`;
  throw new Error(`unexpected merge entry ${JSON.stringify(m)}`);
}

/** Whether the normalizer / pre-tokenizer adds the ▁ prefix (Llama-2 style, or Metaspace "first"/"always"). */
function addsSpacePrefix(json: Json): boolean {
  const parts = (x: unknown): Json[] => {
    if (x === null || typeof x !== 'object') return [];
    const o = x as Json;
    const inner = (o.normalizers ?? o.pretokenizers) as Json[] | undefined;
    return Array.isArray(inner) ? inner.flatMap(parts) : [o];
  };
  for (const n of parts(json.normalizer))
    if (n.type === 'Prepend' && n.prepend === '\u2581') return true;
  for (const p of parts(json.pre_tokenizer)) {
    if (p.type === 'Metaspace') return p.prepend_scheme !== 'never' && p.add_prefix_space !== false;
  }
  return false;
}

/** tokenizer.json (+ tokenizer_config.json etc.) of an HF folder → GGUF vocabulary metadata. */
export function vocabFromHfFolder(dir: string, modelVocab: number): VocabMetadata {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file))
    throw new Error(`${dir}: no tokenizer.json (needed to give the GGUF a vocabulary)`);
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Json;
  const tok = HfTokenizer.fromDirectory(dir);
  const model = json.model as Json;
  const vocab = model.vocab as Record<string, number>;
  if (model.type !== 'BPE' || vocab === null || typeof vocab !== 'object') {
    throw new Error(
      `${file}: tokenizer model '${String(model.type)}' cannot be exported to GGUF (supported: BPE)`,
    );
  }
  const added = (Array.isArray(json.added_tokens) ? json.added_tokens : []) as AddedToken[];
  const addedById = new Map(added.map((t) => [t.id, t]));
  let maxId = -1;
  for (const id of Object.values(vocab)) maxId = Math.max(maxId, id);
  for (const t of added) maxId = Math.max(maxId, t.id);
  const tokens: (string | undefined)[] = new Array(maxId + 1);
  for (const [text, id] of Object.entries(vocab)) tokens[id] = text;
  for (const t of added) tokens[t.id] = t.content;
  const warnings: string[] = [];
  const filled = tokens.map((t, id) => {
    if (t !== undefined) return t;
    warnings.push(`token id ${id} has no text in tokenizer.json; written as [PAD${id}]`);
    return `[PAD${id}]`;
  });
  const merges = (Array.isArray(model.merges) ? model.merges : []).map(mergeText);
  const byteFallback = model.byte_fallback === true;

  const types = filled.map((text, id) => {
    const a = addedById.get(id);
    if (id === tok.unkId) return TokenType.UNKNOWN;
    if (a) return a.special ? TokenType.CONTROL : TokenType.USER_DEFINED;
    if (byteFallback && BYTE_PIECE.test(text)) return TokenType.BYTE;
    return TokenType.NORMAL;
  });

  const entries: GgufMetadataEntry[] = [];
  let scores: number[] | null = null;
  if (byteFallback) {
    // SentencePiece-style: llama.cpp merges the adjacent pair whose joined piece scores highest.
    // HF's BPE applies merges by rank, and SentencePiece-derived tokenizer.json files list merges
    // in piece-score order, so −(first rank producing a piece) reproduces the same order.
    const rankOf = new Map<string, number>();
    merges.forEach((m, rank) => {
      const joined = m.replace(' ', '');
      if (!rankOf.has(joined)) rankOf.set(joined, rank);
    });
    scores = filled.map((text, id) => {
      if (types[id] !== TokenType.NORMAL) return 0;
      const r = rankOf.get(text);
      return r === undefined ? ([...text].length > 1 ? -1e9 : 0) : -r;
    });
    padTo(filled, scores, types, modelVocab, file);
    entries.push(str('tokenizer.ggml.model', 'llama'), ...vocabArrays(filled, scores, types, null));
    entries.push(bool('tokenizer.ggml.add_space_prefix', addsSpacePrefix(json)));
  } else {
    const pre = detectPre(json.pre_tokenizer);
    if (pre === null) {
      throw new Error(
        `${file}: byte-level pre-tokenizer not recognized (llama.cpp knows gpt-2, llama-bpe, qwen2, smollm splits); cannot name tokenizer.ggml.pre`,
      );
    }
    padTo(filled, null, types, modelVocab, file);
    entries.push(
      str('tokenizer.ggml.model', 'gpt2'),
      str('tokenizer.ggml.pre', pre),
      ...vocabArrays(filled, null, types, merges),
    );
  }
  const id = (key: string, v: number | null): void => {
    if (v !== null) entries.push(u32(key, v));
  };
  id('tokenizer.ggml.bos_token_id', tok.bosId);
  id('tokenizer.ggml.eos_token_id', tok.eosId);
  id('tokenizer.ggml.unknown_token_id', tok.unkId);
  id('tokenizer.ggml.padding_token_id', tok.padId);
  entries.push(
    bool('tokenizer.ggml.add_bos_token', tok.addBos),
    bool('tokenizer.ggml.add_eos_token', tok.addEos),
  );
  if (tok.chatTemplate !== null) entries.push(str('tokenizer.chat_template', tok.chatTemplate));
  return { entries, size: filled.length, warnings };
}
