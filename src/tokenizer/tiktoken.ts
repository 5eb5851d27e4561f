/**
 * Llama 3 tiktoken vocabularies (Meta's tokenizer.model: one "base64-bytes rank" line per token)
 * as a byte-level BPE tokenizer.json, built the way transformers' TikTokenConverter does:
 * tokens spelled with GPT-2's bytes→unicode map, merges recovered from the ranks, the Llama 3
 * split regex, and ignore_merges (a word that is itself a token stays whole, as in tiktoken).
 * Special tokens are not in the file; Meta's tokenizer.py defines them from id 128000 on (its
 * names: 128005 is <|step_id|> and 128011 <|image|>, where HF's Llama 3.1 tokenizer.json has
 * reserved tokens; the ids of all named tokens agree).
 */
import { fs } from '../io/host.js';
import type { Tokenizer } from './types.js';
import { HfTokenizer } from './hf-tokenizer.js';
import { byteLevelTokenizerJson } from './byte-level-bpe.js';

/** meta-llama/llama-models models/llama3/tokenizer.py: the first specials, then reserved ones up to 256. */
const NAMED_SPECIALS = [
  '<|begin_of_text|>',
  '<|end_of_text|>',
  '<|reserved_special_token_0|>',
  '<|reserved_special_token_1|>',
  '<|finetune_right_pad_id|>',
  '<|step_id|>',
  '<|start_header_id|>',
  '<|end_header_id|>',
  '<|eom_id|>',
  '<|eot_id|>',
  '<|python_tag|>',
  '<|image|>',
];
const NUM_RESERVED_SPECIALS = 256;

export function llama3SpecialTokens(): string[] {
  const reserved = Array.from(
    { length: NUM_RESERVED_SPECIALS - NAMED_SPECIALS.length },
    (_, i) => `<|reserved_special_token_${2 + i}|>`,
  );
  return [...NAMED_SPECIALS, ...reserved];
}

/** GPT-2's reversible byte → printable character map (bytes_to_unicode in openai/gpt-2 encoder.py). */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) map[b] = String.fromCodePoint(printable.includes(b) ? b : next++);
  return map;
}

/** True when the text looks like a tiktoken ranks file (first line "base64 rank"). */
export function looksLikeTiktoken(head: string): boolean {
  return /^[A-Za-z0-9+/]+=* \d+\r?\n/.test(head);
}

/** Parses "base64 rank" lines into byte strings (latin1, one char per byte) indexed by rank. */
export function parseTiktokenRanks(text: string, label = 'tokenizer.model'): string[] {
  const byRank: string[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const m = /^([A-Za-z0-9+/]+=*) (\d+)$/.exec(line.trim());
    if (!m) throw new Error(`${label}:${i + 1}: expected "base64 rank"`);
    const rank = Number(m[2]);
    if (byRank[rank] !== undefined) throw new Error(`${label}:${i + 1}: rank ${rank} repeated`);
    byRank[rank] = Buffer.from(m[1]!, 'base64').toString('latin1');
  });
  for (let r = 0; r < byRank.length; r++)
    if (byRank[r] === undefined) throw new Error(`${label}: rank ${r} missing`);
  return byRank;
}

/**
 * BPE merges implied by tiktoken ranks (TikTokenConverter.extract): for each token, every split
 * into two tokens is a merge; merges sort by the merged token's rank, then by the parts' ranks.
 */
function mergesFromRanks(byRank: readonly string[]): [string, string][] {
  const rankOf = new Map<string, number>();
  byRank.forEach((t, r) => rankOf.set(t, r));
  const found: { left: string; right: string; rank: number; lr: number; rr: number }[] = [];
  byRank.forEach((token, rank) => {
    for (let i = 1; i < token.length; i++) {
      const left = token.slice(0, i);
      const right = token.slice(i);
      const lr = rankOf.get(left);
      const rr = rankOf.get(right);
      if (lr !== undefined && rr !== undefined) found.push({ left, right, rank, lr, rr });
    }
  });
  found.sort((a, b) => a.rank - b.rank || a.lr - b.lr || a.rr - b.rr);
  return found.map((m) => [m.left, m.right]);
}

export function tiktokenLlama3Tokenizer(ranksText: string, label = 'tokenizer.model'): Tokenizer {
  const byRank = parseTiktokenRanks(ranksText, label);
  const unicode = bytesToUnicode();
  const spell = (bytes: string): string =>
    Array.from(bytes, (c) => unicode[c.charCodeAt(0)]!).join('');
  const specials = llama3SpecialTokens();
  const tokens = [...byRank.map(spell), ...specials];
  const tokenizerJson = byteLevelTokenizerJson({
    tokens,
    merges: mergesFromRanks(byRank).map(([l, r]) => `${spell(l)} ${spell(r)}`),
    addedTokens: specials.map((content, i) => ({ id: byRank.length + i, content, special: true })),
    pre: 'llama-bpe',
    bosToPrepend: '<|begin_of_text|>',
    eosToAppend: null,
  });
  return new HfTokenizer({
    tokenizerJson,
    // As Meta's Llama 3.x tokenizer_config.json: base-model eos, and transformers' space clean-up on.
    tokenizerConfig: {
      tokenizer_class: 'PreTrainedTokenizerFast',
      bos_token: '<|begin_of_text|>',
      eos_token: '<|end_of_text|>',
      pad_token: '<|finetune_right_pad_id|>', // tokenizer.py's pad_id
      clean_up_tokenization_spaces: true,
    },
  });
}

export function loadTiktokenLlama3(file: string): Tokenizer {
  return tiktokenLlama3Tokenizer(fs.readFileSync(file, 'utf8'), file);
}
