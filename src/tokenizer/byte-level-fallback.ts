/**
 * A small, complete byte-level BPE tokenizer of any vocabulary size, for models that come with
 * no tokenizer of their own (`qlora init-random`): the 256 byte tokens (GPT-2's byte → character
 * map, so any text encodes), `<s>` and `</s>` as special tokens, merges of a space or a lowercase
 * letter with a lowercase letter (so common text is not all single bytes), then unreachable
 * `<|extra_N|>` fillers up to the size, so ids stay dense and a GGUF export needs no padding.
 */
import { byteLevelTokenizerJson } from './byte-level-bpe.js';
import type { JsonObject } from './hf-config.js';
import { bytesToUnicode } from './tiktoken.js';

export interface FallbackTokenizer {
  readonly tokenizerJson: JsonObject;
  readonly tokenizerConfig: JsonObject;
  /** Id of `<s>`, prepended to every sequence when asked for, else null. */
  readonly bosId: number | null;
  /** Id of `</s>`. */
  readonly eosId: number;
}

/** The fallback tokenizer with `vocabSize` ids (at least 258); `bos`: prepend `<s>`. */
export function byteLevelFallbackTokenizer(
  vocabSize: number,
  options: { readonly bos: boolean },
): FallbackTokenizer {
  if (!Number.isInteger(vocabSize) || vocabSize < 258)
    throw new Error(
      `a byte-level tokenizer needs at least 258 ids (256 bytes, <s>, </s>), not ${vocabSize}`,
    );
  const bytes = bytesToUnicode();
  const tokens = [...bytes, '<s>', '</s>'];
  const merges: string[] = [];
  const letters = 'abcdefghijklmnopqrstuvwxyz'.split('');
  const firsts = [bytes[0x20]!, ...letters];
  for (const a of firsts) {
    for (const b of letters) {
      if (tokens.length >= vocabSize) break;
      merges.push(`${a} ${b}`);
      tokens.push(a + b);
    }
  }
  for (let i = 0; tokens.length < vocabSize; i++) tokens.push(`<|extra_${i}|>`);
  const tokenizerJson = byteLevelTokenizerJson({
    tokens,
    merges,
    addedTokens: [
      { id: 256, content: '<s>', special: true },
      { id: 257, content: '</s>', special: true },
    ],
    pre: 'gpt-2',
    bosToPrepend: options.bos ? '<s>' : null,
    eosToAppend: null,
  });
  const tokenizerConfig: JsonObject = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: options.bos ? '<s>' : null,
    eos_token: '</s>',
    add_bos_token: options.bos,
    model_max_length: 1_000_000,
  };
  return { tokenizerJson, tokenizerConfig, bosId: options.bos ? 256 : null, eosId: 257 };
}
