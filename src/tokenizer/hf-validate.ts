/**
 * Checks a parsed tokenizer.json before @huggingface/tokenizers builds anything from it.
 *
 * That library trusts its input: a token id of 2^31 makes it size arrays by it (minutes and
 * gigabytes), a merge that is not a string fails with "x.split is not a function", and a
 * normalizer or pre-tokenizer regex such as `(a+)+b` backtracks for ever on a short row. Every
 * problem found here is one line naming the file and the JSON path, saying what was expected.
 */
import type { JsonObject } from './hf-config.js';

/** A problem with tokenizer.json; `path` is the JSON path of the offending field. */
export class TokenizerFileError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`.replace(/[\r\n]+/g, ' '));
    this.name = 'TokenizerFileError';
  }
}

/**
 * Token ids must stay below this many times the number of tokens the file lists (plus a little):
 * real vocabularies are dense, and the library allocates up to the largest id.
 */
function idLimit(entries: number): number {
  return 2 * entries + 1024;
}

const isObject = (v: unknown): v is JsonObject =>
  v !== null && typeof v === 'object' && !Array.isArray(v);

export function validateTokenizerJson(json: JsonObject, file: string): void {
  const fail = (problem: string): never => {
    throw new TokenizerFileError(file, problem);
  };
  const model = json.model;
  if (!isObject(model)) fail(`field 'model' must be an object (found ${kind(model)})`);
  const m = model as JsonObject;
  if (m.type !== undefined && typeof m.type !== 'string')
    fail(`field 'model.type' must be a string (found ${kind(m.type)})`);

  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) fail(`field 'added_tokens' must be a list (found ${kind(added)})`);
  const addedList = added as unknown[];

  // Vocabulary: {token: id} (BPE, WordPiece, WordLevel) or [[piece, score], ...] (Unigram).
  let entries = 0;
  const ids: [where: string, id: unknown][] = [];
  if (Array.isArray(m.vocab)) {
    entries = m.vocab.length;
    m.vocab.forEach((e, i) => {
      if (
        !Array.isArray(e) ||
        e.length < 2 ||
        typeof e[0] !== 'string' ||
        typeof e[1] !== 'number'
      ) {
        fail(`field 'model.vocab[${i}]' must be a [piece, score] pair (found ${short(e)})`);
      }
    });
    if (m.unk_id !== undefined && m.unk_id !== null) ids.push(['model.unk_id', m.unk_id]);
  } else if (isObject(m.vocab)) {
    const vocab = m.vocab;
    for (const token in vocab) {
      entries++;
      ids.push([`model.vocab[${JSON.stringify(token).slice(0, 40)}]`, vocab[token]]);
    }
  } else if (m.vocab !== undefined) {
    fail(
      `field 'model.vocab' must be an object of token ids or a list of [piece, score] pairs (found ${kind(m.vocab)})`,
    );
  } else if (m.type !== undefined) {
    fail(`field 'model.vocab' is missing`);
  }
  addedList.forEach((t, i) => {
    if (!isObject(t)) fail(`field 'added_tokens[${i}]' must be an object (found ${kind(t)})`);
    const token = t as JsonObject;
    if (typeof token.content !== 'string')
      fail(`field 'added_tokens[${i}].content' must be a string (found ${kind(token.content)})`);
    ids.push([`added_tokens[${i}].id`, token.id]);
  });
  const limit = idLimit(entries + addedList.length);
  for (const [where, id] of ids) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0)
      fail(`field '${where}' must be a non-negative integer token id (found ${short(id)})`);
    if ((id as number) >= limit) {
      fail(
        `field '${where}' = ${id} is beyond any id a vocabulary of ${entries + addedList.length} tokens uses (expected 0..${limit - 1})`,
      );
    }
  }

  // BPE / WordPiece / WordLevel name their unknown token by its text.
  if (m.unk_token !== undefined && m.unk_token !== null && typeof m.unk_token !== 'string')
    fail(`field 'model.unk_token' must be a token string or null (found ${short(m.unk_token)})`);

  if (m.merges !== undefined) {
    if (!Array.isArray(m.merges))
      fail(`field 'model.merges' must be a list (found ${kind(m.merges)})`);
    (m.merges as unknown[]).forEach((pair, i) => {
      const ok =
        typeof pair === 'string' ||
        (Array.isArray(pair) && pair.length === 2 && pair.every((p) => typeof p === 'string'));
      if (!ok)
        fail(
          `field 'model.merges[${i}]' must be "left right" or ["left", "right"] (found ${short(pair)})`,
        );
    });
  } else if (m.type === 'BPE') {
    fail(`field 'model.merges' is missing (a BPE model needs its merges)`);
  }

  for (const section of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder'] as const) {
    checkComponent(json[section], section, fail);
  }
}

/** A pipeline component: null, or an object with a string type (Sequence ones hold lists of them). */
function checkComponent(
  value: unknown,
  where: string,
  fail: (m: string) => never,
  depth = 0,
): void {
  if (value === undefined || value === null) return;
  if (depth > 16) fail(`field '${where}' nests Sequence components deeper than 16`);
  if (!isObject(value)) fail(`field '${where}' must be an object or null (found ${kind(value)})`);
  const c = value as JsonObject;
  if (typeof c.type !== 'string')
    fail(`field '${where}.type' must be a string (found ${kind(c.type)})`);
  for (const list of ['normalizers', 'pretokenizers', 'processors', 'decoders']) {
    if (c[list] === undefined) continue;
    if (!Array.isArray(c[list]))
      fail(`field '${where}.${list}' must be a list (found ${kind(c[list])})`);
    (c[list] as unknown[]).forEach((item, i) => {
      if (!isObject(item))
        fail(`field '${where}.${list}[${i}]' must be an object (found ${kind(item)})`);
      checkComponent(item, `${where}.${list}[${i}]`, fail, depth + 1);
    });
  }
  if (c.pattern !== undefined) {
    const p = c.pattern;
    if (!isObject(p) || (typeof p.Regex !== 'string' && typeof p.String !== 'string')) {
      fail(
        `field '${where}.pattern' must be {"Regex": "..."} or {"String": "..."} (found ${short(p)})`,
      );
    }
    const pattern = p as JsonObject;
    if (typeof pattern.Regex === 'string') {
      // (Whether it compiles is the library's call: it rewrites Oniguruma syntax such as (?i:…) first.)
      const nested = catastrophicBacktracking(pattern.Regex);
      if (nested !== null) {
        fail(
          `field '${where}.pattern.Regex' ${JSON.stringify(pattern.Regex).slice(0, 120)} repeats a group that itself repeats ` +
            `(${JSON.stringify(nested)}): such a pattern can backtrack for ever on a short text; rewrite it without nested repetition`,
        );
      }
    }
  }
  for (const key of ['content', 'replacement', 'prepend', 'prefix', 'suffix']) {
    if (c[key] !== undefined && c[key] !== null && typeof c[key] !== 'string')
      fail(`field '${where}.${key}' must be a string (found ${kind(c[key])})`);
  }
}

/**
 * Finds a repeated group whose body can itself repeat without bound — `(a+)+`, `(?:x*y)*`,
 * `(a|b+){2,}` — the shape behind exponential backtracking in JavaScript's engine. Returns that
 * group's text, or null. Real tokenizer patterns (GPT-2, Llama 3, Qwen, SentencePiece replaces)
 * never nest repetition. A small scanner, not a full regex parser: escapes, classes and group
 * prefixes are skipped correctly, which is all the check needs.
 */
export function catastrophicBacktracking(pattern: string): string | null {
  // Stack of open groups: start index and whether an unbounded quantifier occurred inside.
  const open: { start: number; innerRepeat: boolean }[] = [];
  let i = 0;
  const n = pattern.length;
  const unboundedAt = (j: number): number => {
    // Length of an unbounded quantifier at j (*, +, {n,}), else 0.
    const c = pattern[j];
    if (c === '*' || c === '+') return 1;
    if (c === '{') {
      const m = /^\{\d+,\}/.exec(pattern.slice(j, j + 24));
      if (m) return m[0].length;
    }
    return 0;
  };
  const markRepeat = (): void => {
    for (const g of open) g.innerRepeat = true;
  };
  while (i < n) {
    const c = pattern[i]!;
    if (c === '\\') {
      i += 2;
      if (unboundedAt(i)) markRepeat();
      continue;
    }
    if (c === '[') {
      // Skip a character class (with escapes and a literal ] first).
      i++;
      if (pattern[i] === '^') i++;
      if (pattern[i] === ']') i++;
      while (i < n && pattern[i] !== ']') i += pattern[i] === '\\' ? 2 : 1;
      i++;
      if (unboundedAt(i)) markRepeat();
      continue;
    }
    if (c === '(') {
      open.push({ start: i, innerRepeat: false });
      i++;
      continue;
    }
    if (c === ')') {
      const g = open.pop();
      i++;
      if (!g) continue;
      const q = unboundedAt(i);
      if (q) {
        if (g.innerRepeat) return pattern.slice(g.start, i + q);
        markRepeat();
      }
      // An inner repeat makes every enclosing group "repeating" too.
      if (g.innerRepeat) markRepeat();
      continue;
    }
    i++;
    if (unboundedAt(i)) markRepeat();
  }
  return null;
}

function kind(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${short(v)}`;
}

function short(v: unknown): string {
  if (v === undefined) return 'nothing';
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 60 ? `${s.slice(0, 59)}…` : s;
}
