/**
 * A GGUF-style vocabulary (tokenizer.ggml.* metadata, as a GGUF or a llama2.c tokenizer.bin gives
 * it) → tokenizer.json + tokenizer_config.json, so a model converted to an HF folder keeps its
 * tokenizer:
 * - "llama" (SentencePiece BPE with byte fallback): the BPE model transformers' LlamaConverter
 *   builds — ▁ normalizer, byte-fallback decoder, and merges extracted from the scores the way
 *   SentencePieceExtractor does (every split of a piece into two pieces, ordered by piece score);
 * - "gpt2" (byte-level BPE): the same in-memory tokenizer.json our GGUF tokenizer runs on.
 */
import type { GgufValue } from '../io/gguf.js';
import type { GgufMetadataEntry } from '../io/gguf-writer.js';
import { byteLevelTokenizerJson } from '../tokenizer/byte-level-bpe.js';
import type { JsonObject } from '../tokenizer/hf-config.js';
import { TokenType } from '../tokenizer/spm-tokenizer.js';

export interface HfTokenizerFiles {
  tokenizerJson: JsonObject;
  tokenizerConfig: JsonObject;
}

type Meta = ReadonlyMap<string, GgufValue>;

function get<T>(
  meta: Meta,
  key: string,
  check: (v: GgufValue) => boolean,
  what: string,
): T | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (!check(v)) throw new Error(`vocabulary metadata '${key}' is not ${what}`);
  return v as T;
}

const isNumber = (v: GgufValue): boolean => typeof v === 'number';
const isNumArray = (v: GgufValue): boolean => ArrayBuffer.isView(v);

/**
 * SentencePieceExtractor.extract: for each piece in score order (highest first; ties keep id
 * order), every split into two vocabulary pieces is a merge, the splits of one piece ordered by
 * the ids of their parts.
 */
function mergesFromScores(
  tokens: readonly string[],
  scores: ArrayLike<number>,
  types: ArrayLike<number> | undefined,
  idOf: Map<string, number>,
): string[] {
  const order = tokens
    .map((_, id) => id)
    .filter((id) => (types?.[id] ?? TokenType.NORMAL) === TokenType.NORMAL);
  order.sort((a, b) => scores[b]! - scores[a]! || a - b);
  const merges: string[] = [];
  for (const id of order) {
    const piece = [...tokens[id]!];
    const local: [number, number, string][] = [];
    for (let i = 1; i < piece.length; i++) {
      const l = piece.slice(0, i).join('');
      const r = piece.slice(i).join('');
      const li = idOf.get(l);
      const ri = idOf.get(r);
      if (li !== undefined && ri !== undefined) local.push([li, ri, `${l} ${r}`]);
    }
    local.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    for (const m of local) merges.push(m[2]);
  }
  return merges;
}

function bosEosTemplate(
  bos: string | null,
  eos: string | null,
  idOf: Map<string, number>,
): JsonObject {
  const seq = (id: 'A' | 'B', typeId: number): unknown[] => [
    ...(bos !== null ? [{ SpecialToken: { id: bos, type_id: typeId } }] : []),
    { Sequence: { id, type_id: typeId } },
    ...(eos !== null ? [{ SpecialToken: { id: eos, type_id: typeId } }] : []),
  ];
  const specials: JsonObject = {};
  for (const t of [bos, eos])
    if (t !== null) specials[t] = { id: t, ids: [idOf.get(t)], tokens: [t] };
  return {
    type: 'TemplateProcessing',
    single: seq('A', 0),
    pair: [...seq('A', 0), ...seq('B', 1)],
    special_tokens: specials,
  };
}

export function hfTokenizerFilesFromVocab(
  entries: readonly GgufMetadataEntry[] | Meta,
): HfTokenizerFiles {
  const meta: Meta =
    entries instanceof Map
      ? entries
      : new Map((entries as readonly GgufMetadataEntry[]).map((e) => [e.key, e.value]));
  const model = get<string>(meta, 'tokenizer.ggml.model', (v) => typeof v === 'string', 'a string');
  const tokens = get<string[]>(meta, 'tokenizer.ggml.tokens', Array.isArray, 'an array of strings');
  if (!model || !tokens)
    throw new Error(
      'no vocabulary (tokenizer.ggml.model / tokenizer.ggml.tokens) to write a tokenizer.json from',
    );
  const types = get<ArrayLike<number>>(
    meta,
    'tokenizer.ggml.token_type',
    isNumArray,
    'a numeric array',
  );
  const tokenId = (key: string): number | null => {
    const v = get<number>(meta, key, isNumber, 'a number');
    return v === undefined || v < 0 || v >= tokens.length ? null : v;
  };
  const flag = (key: string, fallback: boolean): boolean =>
    get<boolean>(meta, key, (v) => typeof v === 'boolean', 'a bool') ?? fallback;
  const text = (id: number | null): string | null => (id === null ? null : tokens[id]!);
  const bos = text(tokenId('tokenizer.ggml.bos_token_id'));
  const eos = text(tokenId('tokenizer.ggml.eos_token_id'));
  const unk = text(tokenId('tokenizer.ggml.unknown_token_id'));
  const pad = text(tokenId('tokenizer.ggml.padding_token_id'));
  const chatTemplate = get<string>(
    meta,
    'tokenizer.chat_template',
    (v) => typeof v === 'string',
    'a string',
  );
  const added = tokens.flatMap((content, id) => {
    const t = types?.[id];
    if (t === TokenType.CONTROL || t === TokenType.UNKNOWN) return [{ id, content, special: true }];
    if (t === TokenType.USER_DEFINED) return [{ id, content, special: false }];
    return [];
  });
  const idOf = new Map<string, number>();
  tokens.forEach((t, id) => {
    if (!idOf.has(t)) idOf.set(t, id);
  });

  let tokenizerJson: JsonObject;
  let tokenizerClass: string;
  let addBos: boolean;
  let addEos: boolean;
  if (model === 'llama') {
    const scores =
      get<ArrayLike<number>>(meta, 'tokenizer.ggml.scores', isNumArray, 'a numeric array') ??
      new Float32Array(tokens.length);
    addBos = flag('tokenizer.ggml.add_bos_token', true);
    addEos = flag('tokenizer.ggml.add_eos_token', false);
    const prefix = flag('tokenizer.ggml.add_space_prefix', true);
    const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const [t, id] of idOf) vocab[t] = id;
    const replace = { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' };
    tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added.map((t) => ({
        ...t,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
      })),
      normalizer: prefix
        ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, replace] }
        : replace,
      pre_tokenizer: null,
      post_processor: bosEosTemplate(addBos ? bos : null, addEos ? eos : null, idOf),
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          ...(prefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: unk,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab,
        merges: mergesFromScores(tokens, scores, types, idOf),
      },
    };
    tokenizerClass = 'LlamaTokenizer';
  } else if (model === 'gpt2') {
    const merges = get<string[]>(
      meta,
      'tokenizer.ggml.merges',
      Array.isArray,
      'an array of strings',
    );
    if (!merges) throw new Error('a "gpt2" vocabulary needs tokenizer.ggml.merges');
    addBos = flag('tokenizer.ggml.add_bos_token', false);
    addEos = flag('tokenizer.ggml.add_eos_token', false);
    const pre = get<string>(meta, 'tokenizer.ggml.pre', (v) => typeof v === 'string', 'a string');
    tokenizerJson = byteLevelTokenizerJson({
      tokens,
      merges,
      addedTokens: added,
      pre,
      bosToPrepend: addBos ? bos : null,
      eosToAppend: addEos ? eos : null,
    });
    tokenizerClass = 'PreTrainedTokenizerFast';
  } else {
    throw new Error(
      `tokenizer model '${model}' cannot be written as tokenizer.json (supported: llama, gpt2)`,
    );
  }
  const tokenizerConfig: JsonObject = {
    tokenizer_class: tokenizerClass,
    bos_token: bos,
    eos_token: eos,
    unk_token: unk,
    pad_token: pad,
    add_bos_token: addBos,
    add_eos_token: addEos,
    clean_up_tokenization_spaces: false,
    ...(model === 'llama' ? { legacy: false } : {}),
    ...(chatTemplate !== undefined ? { chat_template: chatTemplate } : {}),
  };
  return { tokenizerJson, tokenizerConfig };
}
