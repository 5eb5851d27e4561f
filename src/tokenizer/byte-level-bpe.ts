/**
 * Byte-level BPE vocabularies (GPT-2 style: GGUF tokenizer.ggml.model = "gpt2") turned into an
 * in-memory tokenizer.json, so they run through the same @huggingface/tokenizers code as HF model
 * folders. The pre-tokenizer comes from GGUF tokenizer.ggml.pre, using the split the model's
 * original tokenizer.json uses (which llama.cpp's regexes in llama-vocab.cpp reproduce).
 */
import type { JsonObject } from './hf-config.js';

const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** ByteLevel with its built-in GPT-2 regex. */
const GPT2_PRE: JsonObject = {
  type: 'ByteLevel',
  add_prefix_space: false,
  trim_offsets: true,
  use_regex: true,
};

function splitThenBytes(regex: string): JsonObject {
  return {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
}

interface PreTokenization {
  normalizer: JsonObject | null;
  preTokenizer: JsonObject;
  /** Llama 3's tokenizer.json sets ignore_merges: a word that is itself a token is not split. */
  ignoreMerges: boolean;
}

/**
 * Pre-tokenizers by tokenizer.ggml.pre. Only "gpt-2"/"default" are checked against reference
 * vectors in our tests (llama.cpp ggml-vocab-gpt-2); "llama-bpe" is checked through the Llama 3
 * tiktoken vocabulary when that test runs; "qwen2" and "smollm" follow the models' tokenizer.json
 * and are not covered by test vectors here.
 * Note: llama.cpp's own "default" BPE regex set differs from GPT-2's; files without a pre type
 * are almost always GPT-2-style vocabularies, so we use GPT-2's split for them.
 */
const PRE_TOKENIZATIONS: Record<string, PreTokenization> = {
  default: { normalizer: null, preTokenizer: GPT2_PRE, ignoreMerges: false },
  'gpt-2': { normalizer: null, preTokenizer: GPT2_PRE, ignoreMerges: false },
  'phi-2': { normalizer: null, preTokenizer: GPT2_PRE, ignoreMerges: false },
  'llama-bpe': { normalizer: null, preTokenizer: splitThenBytes(LLAMA3_SPLIT), ignoreMerges: true },
  qwen2: {
    normalizer: { type: 'NFC' },
    preTokenizer: splitThenBytes(QWEN2_SPLIT),
    ignoreMerges: false,
  },
  smollm: {
    normalizer: null,
    preTokenizer: {
      type: 'Sequence',
      pretokenizers: [{ type: 'Digits', individual_digits: true }, GPT2_PRE],
    },
    ignoreMerges: false,
  },
};

export function supportedPreTokenizers(): string[] {
  return Object.keys(PRE_TOKENIZATIONS);
}

export interface ByteLevelVocab {
  /** Byte-level-unicode spellings (e.g. "Ġthe"), indexed by id. */
  tokens: readonly string[];
  /** "left right" merge rules, highest priority first. */
  merges: readonly string[];
  /** Tokens matched before BPE (special/control and user-defined), with their ids. */
  addedTokens: readonly { id: number; content: string; special: boolean }[];
  /** tokenizer.ggml.pre; undefined means "default". */
  pre: string | undefined;
  /** Adds this token text before each sequence (null: no BOS). */
  bosToPrepend: string | null;
  /** Adds this token text after each sequence (null: no EOS). */
  eosToAppend: string | null;
}

export function byteLevelTokenizerJson(v: ByteLevelVocab): JsonObject {
  const pre = PRE_TOKENIZATIONS[v.pre ?? 'default'];
  if (!pre) {
    throw new Error(
      `unsupported byte-level BPE pre-tokenizer '${v.pre}' (supported: ${supportedPreTokenizers().join(', ')})`,
    );
  }
  // No prototype: tokens such as "toString" or "constructor" must not hit Object.prototype.
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  v.tokens.forEach((t, id) => {
    if (!Object.hasOwn(vocab, t)) vocab[t] = id;
  });
  const specials = [v.bosToPrepend, v.eosToAppend].filter((t): t is string => t !== null);
  const template = (seq: 'A' | 'B', typeId: number): unknown[] => [
    ...(v.bosToPrepend !== null ? [{ SpecialToken: { id: v.bosToPrepend, type_id: typeId } }] : []),
    { Sequence: { id: seq, type_id: typeId } },
    ...(v.eosToAppend !== null ? [{ SpecialToken: { id: v.eosToAppend, type_id: typeId } }] : []),
  ];
  return {
    version: '1.0',
    added_tokens: v.addedTokens.map((t) => ({
      id: t.id,
      content: t.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: t.special,
    })),
    normalizer: pre.normalizer,
    pre_tokenizer: pre.preTokenizer,
    post_processor:
      specials.length > 0
        ? {
            type: 'TemplateProcessing',
            single: template('A', 0),
            pair: [...template('A', 0), ...template('B', 1)],
            special_tokens: Object.fromEntries(
              specials.map((t) => [t, { id: t, ids: [vocab[t]], tokens: [t] }]),
            ),
          }
        : { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: pre.ignoreMerges,
      vocab,
      merges: [...v.merges],
    },
  };
}
