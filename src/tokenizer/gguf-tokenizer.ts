/**
 * Tokenizers from the vocabulary embedded in GGUF metadata (tokenizer.ggml.*):
 * - model "llama": SentencePiece BPE by scores with byte fallback (SpmTokenizer);
 * - model "gpt2": byte-level BPE with merges, run through @huggingface/tokenizers from an
 *   in-memory tokenizer.json (HfTokenizer), with the split chosen by tokenizer.ggml.pre.
 * The metadata map is what src/io/gguf.ts's readGgufMetadata returns.
 */
import type { GgufValue } from '../io/gguf.js';
import type { Tokenizer } from './types.js';
import { END_OF_TURN_TOKENS } from './hf-config.js';
import { HfTokenizer } from './hf-tokenizer.js';
import { byteLevelTokenizerJson } from './byte-level-bpe.js';
import { SpmTokenizer, TokenType } from './spm-tokenizer.js';

type Metadata = ReadonlyMap<string, GgufValue>;

function fail(problem: string): never {
  throw new Error(`GGUF tokenizer: ${problem}`);
}

function stringArray(meta: Metadata, key: string): string[] | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    fail(`${key} is not an array of strings`);
  return v as string[];
}

function numberArray(meta: Metadata, key: string, length: number): ArrayLike<number> | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (
    !ArrayBuffer.isView(v) ||
    v instanceof BigInt64Array ||
    v instanceof BigUint64Array ||
    v instanceof DataView
  ) {
    fail(`${key} is not a numeric array`);
  }
  const arr = v as unknown as ArrayLike<number>;
  if (arr.length !== length) fail(`${key} has ${arr.length} entries for ${length} tokens`);
  return arr;
}

/** A token id key; absent, or -1 / u32 max (llama.cpp's "none"), or out of range gives null. */
function tokenId(meta: Metadata, key: string, vocabSize: number): number | null {
  const v = meta.get(key);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= vocabSize) return null;
  return v;
}

function flag(meta: Metadata, key: string, fallback: boolean): boolean {
  const v = meta.get(key);
  return typeof v === 'boolean' ? v : fallback;
}

function optionalString(meta: Metadata, key: string): string | undefined {
  const v = meta.get(key);
  return typeof v === 'string' ? v : undefined;
}

/**
 * Ids that end generation: eos, eot, eom, plus control tokens spelled like common end-of-turn
 * markers (llama.cpp collects special_eog_ids the same way).
 */
function endOfGenerationIds(
  meta: Metadata,
  tokens: readonly string[],
  types: ArrayLike<number> | undefined,
): number[] {
  const ids: number[] = [];
  const add = (id: number | null): void => {
    if (id !== null && !ids.includes(id)) ids.push(id);
  };
  add(tokenId(meta, 'tokenizer.ggml.eos_token_id', tokens.length));
  add(tokenId(meta, 'tokenizer.ggml.eot_token_id', tokens.length));
  add(tokenId(meta, 'tokenizer.ggml.eom_token_id', tokens.length));
  const wanted = new Set(END_OF_TURN_TOKENS);
  tokens.forEach((t, id) => {
    const type = types?.[id] ?? TokenType.NORMAL;
    if (wanted.has(t) && (type === TokenType.CONTROL || type === TokenType.USER_DEFINED)) add(id);
  });
  return ids;
}

export function tokenizerFromGgufMetadata(meta: Metadata): Tokenizer {
  const model = optionalString(meta, 'tokenizer.ggml.model');
  if (model === undefined) fail('no tokenizer.ggml.model (the file carries no vocabulary)');
  const tokens = stringArray(meta, 'tokenizer.ggml.tokens') ?? fail('no tokenizer.ggml.tokens');
  const n = tokens.length;
  const types = numberArray(meta, 'tokenizer.ggml.token_type', n);
  const chatTemplate = optionalString(meta, 'tokenizer.chat_template') ?? null;
  const bosId = tokenId(meta, 'tokenizer.ggml.bos_token_id', n);
  const eosId = tokenId(meta, 'tokenizer.ggml.eos_token_id', n);
  const eosIds = endOfGenerationIds(meta, tokens, types);

  switch (model) {
    case 'llama':
      return new SpmTokenizer({
        tokens,
        scores:
          numberArray(meta, 'tokenizer.ggml.scores', n) ??
          fail('model "llama" needs tokenizer.ggml.scores'),
        types,
        bosId,
        eosId,
        eosIds,
        padId: tokenId(meta, 'tokenizer.ggml.padding_token_id', n),
        unkId: tokenId(meta, 'tokenizer.ggml.unknown_token_id', n),
        // llama.cpp's defaults for SPM vocabularies.
        addBos: flag(meta, 'tokenizer.ggml.add_bos_token', true),
        addEos: flag(meta, 'tokenizer.ggml.add_eos_token', false),
        addSpacePrefix: flag(meta, 'tokenizer.ggml.add_space_prefix', true),
        chatTemplate,
      });
    case 'gpt2': {
      const merges =
        stringArray(meta, 'tokenizer.ggml.merges') ??
        fail('model "gpt2" needs tokenizer.ggml.merges');
      const addedTokens: { id: number; content: string; special: boolean }[] = [];
      tokens.forEach((content, id) => {
        const type = types?.[id];
        if (type === TokenType.CONTROL || type === TokenType.USER_DEFINED) {
          addedTokens.push({ id, content, special: type === TokenType.CONTROL });
        }
      });
      // HF byte-level tokenizers (GPT-2, Qwen2) add no BOS unless the file says so.
      const addBos = flag(meta, 'tokenizer.ggml.add_bos_token', false);
      const addEos = flag(meta, 'tokenizer.ggml.add_eos_token', false);
      const text = (id: number | null): string | null => (id === null ? null : tokens[id]!);
      const tokenizerJson = byteLevelTokenizerJson({
        tokens,
        merges,
        addedTokens,
        pre: optionalString(meta, 'tokenizer.ggml.pre'),
        bosToPrepend: addBos ? text(bosId) : null,
        eosToAppend: addEos ? text(eosId) : null,
      });
      return new HfTokenizer({
        tokenizerJson,
        tokenizerConfig: {
          tokenizer_class: 'PreTrainedTokenizerFast',
          bos_token: text(bosId),
          eos_token: text(eosId),
          unk_token: text(tokenId(meta, 'tokenizer.ggml.unknown_token_id', n)),
          pad_token: text(tokenId(meta, 'tokenizer.ggml.padding_token_id', n)),
          clean_up_tokenization_spaces: false,
        },
        generationConfig: { eos_token_id: eosIds },
        chatTemplate: chatTemplate ?? undefined,
      });
    }
    default:
      return fail(`tokenizer model '${model}' is not supported (supported: llama, gpt2)`);
  }
}
