/**
 * SentencePiece-BPE tokenizer over a scored vocabulary, as llama.cpp runs GGUF vocabularies with
 * tokenizer.ggml.model = "llama" (llama-vocab.cpp: llm_tokenizer_spm + LLAMA_VOCAB_TYPE_SPM in
 * tokenize_impl):
 * - control / user-defined / unknown token texts in the input map to their ids;
 * - every other fragment gets a " " prefix when it starts the text or follows a special token
 *   (add_space_prefix), spaces become "▁", and pieces merge by highest score (leftmost on ties);
 * - characters left without a piece become byte tokens "<0xXX>".
 * decode follows HF's Llama decoder (▁→space, byte fallback, one leading space stripped).
 */
import type { Tokenizer } from './types.js';
import { mergeByScore } from './score-merge.js';
import { SpecialTokenSplitter } from './special-split.js';

/** GGUF tokenizer.ggml.token_type values (llama.h llama_token_type). */
export const TokenType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

export interface ScoredVocab {
  tokens: readonly string[];
  scores: ArrayLike<number>;
  /** TokenType per id; missing means NORMAL. */
  types?: ArrayLike<number>;
  bosId: number | null;
  eosId: number | null;
  eosIds: readonly number[];
  padId: number | null;
  unkId: number | null;
  addBos: boolean;
  addEos: boolean;
  addSpacePrefix: boolean;
  chatTemplate: string | null;
}

const SPACE_MARK = '▁';
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;
/** UTF-8 bytes of a JS string as a latin1 string (one char per byte), for byte-exact piece lookups. */
const toBytes = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

export class SpmTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly eosIds: readonly number[];
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly chatTemplate: string | null;

  /** Piece spelled in UTF-8 bytes (latin1 string) → id; the first id wins for duplicate spellings. */
  private readonly idOfBytes = new Map<string, number>();
  private readonly idOfText = new Map<string, number>();
  private readonly byteTokens: number[] = [];
  private readonly specials: SpecialTokenSplitter;

  constructor(private readonly vocab: ScoredVocab) {
    this.vocabSize = vocab.tokens.length;
    this.bosId = vocab.bosId;
    this.eosId = vocab.eosId;
    this.eosIds = vocab.eosIds;
    this.padId = vocab.padId;
    this.unkId = vocab.unkId;
    this.bosToken = vocab.bosId === null ? null : (vocab.tokens[vocab.bosId] ?? null);
    this.eosToken = vocab.eosId === null ? null : (vocab.tokens[vocab.eosId] ?? null);
    this.addBos = vocab.addBos && vocab.bosId !== null;
    this.addEos = vocab.addEos && vocab.eosId !== null;
    this.chatTemplate = vocab.chatTemplate;

    const specials = new Map<string, number>();
    vocab.tokens.forEach((t, id) => {
      const key = toBytes(t);
      if (!this.idOfBytes.has(key)) this.idOfBytes.set(key, id);
      if (!this.idOfText.has(t)) this.idOfText.set(t, id);
      const type = this.typeOf(id);
      if (
        type === TokenType.CONTROL ||
        type === TokenType.USER_DEFINED ||
        type === TokenType.UNKNOWN
      ) {
        if (!specials.has(t)) specials.set(t, id);
      }
    });
    for (let b = 0; b < 256; b++) {
      // llama.cpp byte_to_token: "<0xXX>", else the byte itself as a one-char piece.
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      this.byteTokens.push(
        this.idOfText.get(hex) ?? this.idOfBytes.get(String.fromCharCode(b)) ?? -1,
      );
    }
    this.specials = new SpecialTokenSplitter(specials);
  }

  private typeOf(id: number): number {
    return this.vocab.types?.[id] ?? TokenType.NORMAL;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const addSpecial = options.addSpecialTokens ?? true;
    const out: number[] = [];
    if (addSpecial && this.addBos) out.push(this.bosId!);
    for (const frag of this.specials.split(text)) {
      // Text fragments always start the text or follow a special token: both get the prefix.
      if (frag.kind === 'special') out.push(frag.id);
      else this.encodeFragment((this.vocab.addSpacePrefix ? ' ' : '') + frag.text, out);
    }
    if (addSpecial && this.addEos) out.push(this.eosId!);
    return out;
  }

  private encodeFragment(text: string, out: number[]): void {
    const escaped = text.replaceAll(' ', SPACE_MARK);
    const symbols = Array.from(escaped, toBytes); // one symbol per character (code point)
    const merged = mergeByScore(symbols, (piece) => {
      const id = this.idOfBytes.get(piece);
      return id === undefined ? undefined : Number(this.vocab.scores[id]);
    });
    for (const piece of merged) {
      const id = this.idOfBytes.get(piece);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (let k = 0; k < piece.length; k++) {
        const byteId = this.byteTokens[piece.charCodeAt(k)]!;
        if (byteId >= 0) out.push(byteId);
        else if (this.unkId !== null) out.push(this.unkId);
        else
          throw new Error(
            `no byte token for 0x${piece.charCodeAt(k).toString(16)} and no unknown token`,
          );
      }
    }
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    const bytes: number[] = [];
    const pushText = (s: string): void => {
      for (const b of Buffer.from(s, 'utf8')) bytes.push(b);
    };
    for (const id of ids) {
      const token = this.vocab.tokens[id];
      if (token === undefined)
        throw new Error(`token id ${id} out of range [0, ${this.vocabSize})`);
      switch (this.typeOf(id)) {
        case TokenType.CONTROL:
        case TokenType.UNKNOWN:
          if (!skip) pushText(token);
          break;
        case TokenType.UNUSED:
          break;
        case TokenType.BYTE: {
          const m = BYTE_PIECE.exec(token);
          if (m) bytes.push(parseInt(m[1]!, 16));
          else pushText(token);
          break;
        }
        default:
          pushText(token.replaceAll(SPACE_MARK, ' '));
      }
    }
    const text = Buffer.from(bytes).toString('utf8');
    // HF's Llama decoder ends with Strip(' ', start=1): the dummy prefix of the first piece.
    return this.vocab.addSpacePrefix && text.startsWith(' ') ? text.slice(1) : text;
  }

  tokenToId(token: string): number | undefined {
    return this.idOfText.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.vocab.tokens[id];
  }

  isSpecial(id: number): boolean {
    const type = this.typeOf(id);
    return type === TokenType.CONTROL || type === TokenType.UNKNOWN;
  }
}
