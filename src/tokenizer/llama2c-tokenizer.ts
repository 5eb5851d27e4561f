/**
 * llama2.c tokenizer.bin (docs/formats.md §6.2) with run.c's encode/decode:
 * encode = optional BOS, a dummy-prefix " " token, one token per UTF-8 character (or its bytes as
 * byte tokens, id = byte + 3, when the character is not a piece), then greedy best-score pair
 * merges; decode = raw pieces, "<0xXX>" pieces as bytes, and the leading space dropped after BOS.
 *
 * Pieces are handled as byte strings (each char = one byte, latin1) so that byte-level pieces and
 * multi-byte characters compare exactly as run.c's strcmp does.
 */
import { readLlama2cTokenizer, type Llama2cTokenizerFile } from '../io/llama2c.js';
import type { Tokenizer } from './types.js';
import { mergeByScore } from './score-merge.js';
import { SpecialTokenSplitter } from './special-split.js';

/** run.c's fixed special ids. */
const UNK_ID = 0;
const BOS_ID = 1;
const EOS_ID = 2;
/** run.c: byte b falls back to token id b + 3 (ids 3..258 are <0x00>..<0xFF>). */
const BYTE_TOKEN_OFFSET = 3;
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

export interface Llama2cVocab {
  /** Raw piece bytes as latin1 strings (one char per byte). */
  pieces: string[];
  scores: Float32Array;
}

const toBytes = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');
const fromBytes = (s: string): string => Buffer.from(s, 'latin1').toString('utf8');

export class Llama2cTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId = BOS_ID;
  readonly eosId = EOS_ID;
  readonly eosIds: readonly number[] = [EOS_ID];
  readonly padId = null;
  readonly unkId = UNK_ID;
  readonly bosToken = '<s>';
  readonly eosToken = '</s>';
  /** run.c's generate() encodes prompts with bos=1, eos=0. */
  readonly addBos = true;
  readonly addEos = false;
  readonly chatTemplate = null;

  private readonly idOf = new Map<string, number>();
  private readonly specials: SpecialTokenSplitter;
  /** SentencePiece names for the control tokens (tokenizer.bin spells BOS "\n<s>\n"). */
  private readonly controlNames = new Map<number, string>([
    [UNK_ID, '<unk>'],
    [BOS_ID, '<s>'],
    [EOS_ID, '</s>'],
  ]);

  /** Reads tokenizer.bin (src/io/llama2c.ts); vocabSize checks the token count, which the file does not store. */
  static fromFile(file: string, vocabSize?: number): Llama2cTokenizer {
    return Llama2cTokenizer.fromParsed(readLlama2cTokenizer(file, vocabSize), file);
  }

  /**
   * run.c encodes any byte it has no piece for as token byte + 3, so those 256 ids must be the
   * byte tokens: checked here, so no text can encode to an id the vocabulary lacks.
   */
  static fromParsed(file: Llama2cTokenizerFile, label = 'tokenizer.bin'): Llama2cTokenizer {
    if (file.tokens.length <= EOS_ID + 256) {
      throw new Error(
        `${label}: only ${file.tokens.length} tokens; expected 3 specials, 256 byte tokens and merges`,
      );
    }
    const pieces = file.tokens.map((t) =>
      Buffer.from(t.buffer, t.byteOffset, t.byteLength).toString('latin1'),
    );
    for (let b = 0; b < 256; b++) {
      const want = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      const piece = pieces[b + BYTE_TOKEN_OFFSET]!;
      if (piece !== want) {
        throw new Error(
          `${label}: token ${b + BYTE_TOKEN_OFFSET} is ${JSON.stringify(fromBytes(piece)).slice(0, 40)}; expected the byte token ${want} (ids 3..258 are the 256 byte tokens)`,
        );
      }
    }
    return new Llama2cTokenizer({ pieces, scores: file.scores });
  }

  constructor(private readonly vocab: Llama2cVocab) {
    this.vocabSize = vocab.pieces.length;
    // run.c looks pieces up by binary search over the sorted vocab; with duplicate spellings the
    // first id wins here.
    vocab.pieces.forEach((p, id) => {
      if (!this.idOf.has(p)) this.idOf.set(p, id);
    });
    this.specials = new SpecialTokenSplitter(
      new Map([...this.controlNames].map(([id, name]) => [name, id])),
    );
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    const out: number[] = [];
    if (options.addSpecialTokens ?? true) out.push(BOS_ID);
    for (const frag of this.specials.split(text)) {
      // run.c adds the dummy prefix once, before non-empty text. A text fragment here starts the
      // text or follows a special token, where llama.cpp adds the prefix too (run.c itself has no
      // special-token parsing, so for plain text this is exactly run.c).
      if (frag.kind === 'special') out.push(frag.id);
      else this.encodeText(toBytes(frag.text), out);
    }
    return out;
  }

  private encodeText(bytes: string, out: number[]): void {
    // The dummy prefix is a piece of every real vocabulary; one cut short may lack it (then no prefix).
    const symbols: string[] = this.idOf.has(' ') ? [' '] : [];
    let i = 0;
    while (i < bytes.length) {
      // One UTF-8 character: a lead byte plus up to 3 continuation bytes (run.c caps at 4 bytes).
      let end = i + 1;
      while (end < bytes.length && end - i < 4 && (bytes.charCodeAt(end) & 0xc0) === 0x80) end++;
      const ch = bytes.slice(i, end);
      if (this.idOf.has(ch)) symbols.push(ch);
      else
        for (let b = i; b < end; b++)
          symbols.push(this.vocab.pieces[bytes.charCodeAt(b) + BYTE_TOKEN_OFFSET]!);
      i = end;
    }
    const merged = mergeByScore(symbols, (t) => {
      const id = this.idOf.get(t);
      return id === undefined ? undefined : this.vocab.scores[id];
    });
    for (const piece of merged) {
      const id = this.idOf.get(piece);
      if (id !== undefined) out.push(id);
      // Merges only make pieces that exist; never emit an id the vocabulary lacks.
      else for (let k = 0; k < piece.length; k++) out.push(piece.charCodeAt(k) + BYTE_TOKEN_OFFSET);
    }
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    const skip = options.skipSpecialTokens ?? false;
    const bytes: number[] = [];
    let prev = -1;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
        throw new Error(`token id ${id} out of range [0, ${this.vocabSize})`);
      const control = this.controlNames.get(id);
      if (control !== undefined) {
        if (!skip) for (const c of Buffer.from(control, 'latin1')) bytes.push(c);
        prev = id;
        continue;
      }
      let piece = this.vocab.pieces[id]!;
      // run.c drops the dummy-prefix space after BOS; we also drop it at the very start so that
      // decode(encode(text, {addSpecialTokens: false})) gives back text.
      if ((prev === BOS_ID || prev === -1) && piece.startsWith(' ')) piece = piece.slice(1);
      const byte = BYTE_PIECE.exec(piece);
      if (byte) bytes.push(parseInt(byte[1]!, 16));
      else for (let k = 0; k < piece.length; k++) bytes.push(piece.charCodeAt(k));
      prev = id;
    }
    return Buffer.from(bytes).toString('utf8');
  }

  tokenToId(token: string): number | undefined {
    return (
      this.idOf.get(toBytes(token)) ??
      [...this.controlNames].find(([, name]) => name === token)?.[0]
    );
  }

  idToToken(id: number): string | undefined {
    const piece = this.vocab.pieces[id];
    return piece === undefined ? undefined : fromBytes(piece);
  }

  isSpecial(id: number): boolean {
    return this.controlNames.has(id);
  }
}
