/**
 * Tokenizer for Hugging Face model folders: tokenizer.json runs through @huggingface/tokenizers;
 * tokenizer_config.json / generation_config.json supply what tokenizer.json lacks (special-token
 * roles, add_bos/add_eos, chat template, extra eos ids).
 *
 * Goal: encode(text) equals HF Python `tokenizer(text).input_ids` and decode equals
 * `tokenizer.decode(ids, skip_special_tokens=...)` (transformers 4.57 semantics).
 */
import { fs, path } from '../io/host.js';
import { Tokenizer as HfJsTokenizer } from '@huggingface/tokenizers';
import type { Tokenizer } from './types.js';
import { TokenizerFileError, validateTokenizerJson } from './hf-validate.js';
import { jsonNestingBeyond } from '../io/json-scan.js';
import {
  END_OF_TURN_TOKENS,
  additionalSpecialTokens,
  chatTemplateOf,
  idList,
  optionalBoolean,
  specialTokenText,
  type JsonObject,
} from './hf-config.js';

export interface HfTokenizerSources {
  /** Parsed tokenizer.json. */
  tokenizerJson: JsonObject;
  /** Parsed tokenizer_config.json, when the model has one. */
  tokenizerConfig?: JsonObject;
  /** Parsed generation_config.json, when the model has one. */
  generationConfig?: JsonObject;
  /** Contents of chat_template.jinja (newer exports keep the template there); wins over the config's. */
  chatTemplate?: string;
  /** Where tokenizer.json came from, for messages (default 'tokenizer.json'). */
  tokenizerFile?: string;
  /** Where the chat template came from, for messages (default: chat_template.jinja or tokenizer_config.json). */
  chatTemplateFile?: string;
}

/**
 * transformers' Llama-family fast tokenizers rebuild the post-processor from add_bos_token /
 * add_eos_token (LlamaTokenizerFast.update_post_processor), overriding tokenizer.json; other
 * classes use tokenizer.json's post-processor as is.
 */
const FLAG_DRIVEN_CLASSES = /^(Llama|CodeLlama|Gemma)Tokenizer(Fast)?$/;
const LLAMA_CLASSES = /^(Llama|CodeLlama)Tokenizer(Fast)?$/;

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

/** Side files are small; a tokenizer.json of the largest vocabularies is ~20 MB. */
const MAX_TOKENIZER_FILE_BYTES = 256 << 20;

function readJsonIfPresent(file: string): JsonObject | undefined {
  if (!fs.existsSync(file)) return undefined;
  let parsed: unknown;
  try {
    const size = fs.statSync(file).size;
    if (size > MAX_TOKENIZER_FILE_BYTES)
      throw new Error(
        `${size} bytes is more than any tokenizer file needs (limit ${MAX_TOKENIZER_FILE_BYTES})`,
      );
    const text = fs.readFileSync(file, 'utf8');
    const deep = jsonNestingBeyond(text, MAX_TOKENIZER_JSON_DEPTH);
    if (deep !== null)
      throw new Error(
        `JSON nests deeper than ${MAX_TOKENIZER_JSON_DEPTH} levels at offset ${deep}`,
      );
    parsed = JSON.parse(text);
  } catch (e) {
    throw new TokenizerFileError(file, `cannot read JSON: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new TokenizerFileError(file, 'expected a JSON object');
  }
  return parsed as JsonObject;
}

const MAX_TOKENIZER_JSON_DEPTH = 64;

/** A TemplateProcessing post-processor that adds bos / eos around each sequence, as LlamaTokenizerFast builds it. */
function bosEosTemplate(bos: string | null, eos: string | null): JsonObject {
  const seq = (id: 'A' | 'B', typeId: number): unknown[] => [
    ...(bos !== null ? [{ SpecialToken: { id: bos, type_id: typeId } }] : []),
    { Sequence: { id, type_id: typeId } },
    ...(eos !== null ? [{ SpecialToken: { id: eos, type_id: typeId } }] : []),
  ];
  const specials: JsonObject = {};
  for (const t of [bos, eos]) if (t !== null) specials[t] = { id: t, ids: [], tokens: [t] };
  return {
    type: 'TemplateProcessing',
    single: seq('A', 0),
    pair: [...seq('A', 0), ...seq('B', 1)],
    special_tokens: specials,
  };
}

/**
 * Builds the library's tokenizer; a failure names the file and, found by building again without
 * each pipeline section in turn, the section the library could not take.
 */
function buildInner(json: JsonObject, config: JsonObject, file: string): HfJsTokenizer {
  try {
    return new HfJsTokenizer(json, config);
  } catch (e) {
    const why = (e as Error)?.message ?? String(e);
    for (const section of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) {
      if (json[section] === undefined || json[section] === null) continue;
      try {
        new HfJsTokenizer({ ...json, [section]: null }, config);
      } catch {
        continue;
      }
      throw new TokenizerFileError(
        file,
        `field '${section}' is malformed or unsupported (${describeLibraryError(why)})`,
      );
    }
    throw new TokenizerFileError(
      file,
      `cannot build a tokenizer from it (${describeLibraryError(why)})`,
    );
  }
}

/** Library messages like "x.split is not a function" mean a field had the wrong type; say so. */
function describeLibraryError(message: string): string {
  return /is not a function|is not iterable|Cannot read properties|Cannot convert|undefined|null/.test(
    message,
  )
    ? 'a field has the wrong type or is missing'
    : message.slice(0, 200);
}

export class HfTokenizer implements Tokenizer {
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
  readonly chatTemplateFile: string | undefined;

  private readonly inner: HfJsTokenizer;
  /** tokenizer.json's path, for messages. */
  private readonly file: string;
  private readonly specialIds: ReadonlySet<number>;

  /** Loads tokenizer.json plus tokenizer_config.json, generation_config.json and chat_template.jinja when present. */
  static fromDirectory(dir: string): HfTokenizer {
    const tokenizerFile = path.join(dir, 'tokenizer.json');
    const tokenizerJson = readJsonIfPresent(tokenizerFile);
    if (!tokenizerJson) throw new TokenizerFileError(tokenizerFile, 'no such file');
    const templateFile = path.join(dir, 'chat_template.jinja');
    const configFile = path.join(dir, 'tokenizer_config.json');
    const hasTemplateFile = fs.existsSync(templateFile);
    return new HfTokenizer({
      tokenizerJson,
      tokenizerConfig: readJsonIfPresent(configFile),
      generationConfig: readJsonIfPresent(path.join(dir, 'generation_config.json')),
      chatTemplate: hasTemplateFile ? fs.readFileSync(templateFile, 'utf8') : undefined,
      tokenizerFile,
      chatTemplateFile: hasTemplateFile ? templateFile : configFile,
    });
  }

  constructor(sources: HfTokenizerSources) {
    const file = sources.tokenizerFile ?? 'tokenizer.json';
    this.file = file;
    validateTokenizerJson(sources.tokenizerJson, file);
    const config = sources.tokenizerConfig ?? {};
    const generation = sources.generationConfig ?? {};
    const addedTokens = (
      Array.isArray(sources.tokenizerJson.added_tokens) ? sources.tokenizerJson.added_tokens : []
    ) as AddedTokenJson[];

    const tokenizerClass = typeof config.tokenizer_class === 'string' ? config.tokenizer_class : '';
    // LlamaTokenizer(Fast)'s constructor defaults apply when the config omits a key.
    const llamaDefault = (key: string, text: string): string | null =>
      LLAMA_CLASSES.test(tokenizerClass) && !(key in config) ? text : null;
    let bosToken = specialTokenText(config.bos_token) ?? llamaDefault('bos_token', '<s>');
    let eosToken = specialTokenText(config.eos_token) ?? llamaDefault('eos_token', '</s>');
    const unkToken = specialTokenText(config.unk_token) ?? llamaDefault('unk_token', '<unk>');
    const padToken = specialTokenText(config.pad_token);

    let tokenizerJson = sources.tokenizerJson;
    if (FLAG_DRIVEN_CLASSES.test(tokenizerClass)) {
      // LlamaTokenizer defaults: add_bos_token=True, add_eos_token=False.
      const wantBos = optionalBoolean(config.add_bos_token) ?? true;
      const wantEos = optionalBoolean(config.add_eos_token) ?? false;
      tokenizerJson = {
        ...tokenizerJson,
        post_processor: bosEosTemplate(wantBos ? bosToken : null, wantEos ? eosToken : null),
      };
    }

    // transformers >= 4.45 defaults clean_up_tokenization_spaces to False; tokenizers.js defaults to true.
    const innerConfig: JsonObject = {
      ...config,
      bos_token: bosToken ?? undefined,
      eos_token: eosToken ?? undefined,
      unk_token: unkToken ?? undefined,
      pad_token: padToken ?? undefined,
      additional_special_tokens: additionalSpecialTokens(config),
      clean_up_tokenization_spaces: optionalBoolean(config.clean_up_tokenization_spaces) ?? false,
    };
    delete innerConfig.chat_template;
    this.inner = buildInner(tokenizerJson, innerConfig, file);

    const idOf = (t: string | null): number | null =>
      t === null ? null : (this.inner.token_to_id(t) ?? null);
    const generationEos = idList(generation.eos_token_id);
    let bosId = idOf(bosToken) ?? idList(generation.bos_token_id)[0] ?? null;
    let eosId = idOf(eosToken) ?? generationEos[0] ?? null;

    // Whatever the post-processor does is the truth; probe it rather than trusting the flags.
    // A folder with only tokenizer.json still tells us its BOS/EOS this way.
    const probe = 'a';
    const plain = this.inner.encode(probe, { add_special_tokens: false }).ids;
    const full = this.inner.encode(probe, { add_special_tokens: true }).ids;
    const prepends = full.length > plain.length && full[0] !== plain[0];
    const appends = full.length > plain.length && full[full.length - 1] !== plain[plain.length - 1];
    if (bosId === null && prepends) bosId = full[0]!;
    if (eosId === null && appends) eosId = full[full.length - 1]!;
    bosToken ??= bosId === null ? null : (this.inner.id_to_token(bosId) ?? null);
    eosToken ??= eosId === null ? null : (this.inner.id_to_token(eosId) ?? null);
    this.bosId = bosId;
    this.eosId = eosId;
    this.bosToken = bosToken;
    this.eosToken = eosToken;
    this.addBos = prepends && full[0] === bosId;
    this.addEos = appends && full[full.length - 1] === eosId;
    this.unkId = idOf(unkToken);
    this.padId = idOf(padToken) ?? idList(generation.pad_token_id)[0] ?? null;

    const special = new Set<number>();
    for (const t of addedTokens) if (t.special) special.add(t.id);
    for (const t of [
      this.bosToken,
      this.eosToken,
      unkToken,
      padToken,
      ...additionalSpecialTokens(config),
    ]) {
      const id = idOf(t);
      if (id !== null) special.add(id);
    }
    this.specialIds = special;

    const eosIds: number[] = [];
    const addEosId = (id: number | null): void => {
      if (id !== null && !eosIds.includes(id)) eosIds.push(id);
    };
    addEosId(this.eosId);
    generationEos.forEach(addEosId);
    for (const text of END_OF_TURN_TOKENS) {
      const id = idOf(text);
      if (id !== null && special.has(id)) addEosId(id);
    }
    this.eosIds = eosIds;

    let maxId = -1;
    for (const id of this.inner.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;

    this.chatTemplate = sources.chatTemplate ?? chatTemplateOf(config.chat_template);
    this.chatTemplateFile =
      this.chatTemplate === null
        ? undefined
        : (sources.chatTemplateFile ??
          (sources.chatTemplate !== undefined ? 'chat_template.jinja' : 'tokenizer_config.json'));
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    let encoding;
    try {
      encoding = this.inner.encode(text, { add_special_tokens: options.addSpecialTokens ?? true });
    } catch (e) {
      throw this.libraryFailure('encode', e);
    }
    // The library gives no id (undefined) for a piece that is not in the vocabulary when the
    // file names no usable unknown token; such an id would reach the model as garbage.
    const { ids, tokens } = encoding;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || (id as number) < 0) {
        throw new TokenizerFileError(
          this.file,
          `the piece ${JSON.stringify(tokens[i] ?? '?')} has no token id in 'model.vocab' (an unknown piece needs 'model.unk_token' to name a token of the vocabulary)`,
        );
      }
    }
    return ids;
  }

  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''; // tokenizers.js throws on an empty list
    try {
      return this.inner.decode([...ids], {
        skip_special_tokens: options.skipSpecialTokens ?? false,
      });
    } catch (e) {
      throw this.libraryFailure('decode', e);
    }
  }

  /** A library failure while tokenizing comes from a field of the file it was built from: name the file. */
  private libraryFailure(what: 'encode' | 'decode', e: unknown): Error {
    const message = (e as Error)?.message ?? String(e);
    return new TokenizerFileError(
      this.file,
      `cannot ${what} with this tokenizer (${describeLibraryError(message)})`,
    );
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}
