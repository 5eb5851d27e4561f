// Issue 11.5: a normalizer or pre-tokenizer regex that backtracks catastrophically — `(a+)+b` —
// used to hang `data inspect` on a 41-character row for over a minute. Such patterns (a repeated
// group that itself repeats) are refused when the tokenizer is loaded, naming the file, the field
// and the pattern; the patterns real tokenizers use are accepted.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { main } from '../src/cli/main.js';
import { catastrophicBacktracking } from '../src/tokenizer/hf-validate.js';
import { loadTokenizer } from '../src/tokenizer/index.js';
import { readTokenizerFixture } from './tokenizer-fixtures.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-regex-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const QUICK = { timeout: 60_000 };

const LLAMA3 =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

test('nested unbounded repetition is found; real tokenizer patterns pass', () => {
  for (const [pattern, nested] of [
    ['(a+)+b', '(a+)+'],
    ['x(?:y*z)*', '(?:y*z)*'],
    ['(a|b+){2,}c', '(a|b+){2,}'],
    ['((ab)*)+', '((ab)*)+'],
    ['(\\d+\\s?)*$', '(\\d+\\s?)*'],
  ] as const) {
    assert.equal(catastrophicBacktracking(pattern), nested, pattern);
  }
  for (const pattern of [
    LLAMA3,
    GPT2,
    '(?:\\r?\\n)+',
    '[(a+)+]',
    '\\(a+\\)+',
    '(ab)+',
    '(a{1,3})+',
    ' ?\\p{L}+',
    '▁',
  ]) {
    assert.equal(catastrophicBacktracking(pattern), null, pattern);
  }
});

test(
  'a tokenizer.json with a backtracking normalizer or pre-tokenizer regex is refused at load, naming file, field and pattern',
  QUICK,
  async () => {
    const json = JSON.parse(
      readTokenizerFixture('tinyllama/tokenizer.json.gz').toString('utf8'),
    ) as Record<string, unknown>;
    const folder = (name: string, edit: Record<string, unknown>): string => {
      const dir = path.join(tmp, name);
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, ...edit }));
      return dir;
    };
    const norm = folder('normalizer', {
      normalizer: {
        type: 'Sequence',
        normalizers: [{ type: 'Replace', pattern: { Regex: '(a+)+b' }, content: 'x' }],
      },
    });
    const file = path.join(norm, 'tokenizer.json');
    assert.throws(
      () => loadTokenizer(norm),
      (e: Error) =>
        e.message ===
        `${file}: field 'normalizer.normalizers[0].pattern.Regex' "(a+)+b" repeats a group that itself repeats ("(a+)+"): such a pattern can backtrack for ever on a short text; rewrite it without nested repetition`,
    );
    const pre = folder('pre', {
      pre_tokenizer: {
        type: 'Split',
        pattern: { Regex: '(\\w+\\s?)*$' },
        behavior: 'Isolated',
        invert: false,
      },
    });
    assert.throws(
      () => loadTokenizer(pre),
      /tokenizer\.json: field 'pre_tokenizer\.pattern\.Regex' "\(\\\\w\+\\\\s\?\)\*\$" repeats a group that itself repeats/,
    );

    // `data inspect` on a 41-character row stops at once with the same message instead of hanging.
    const data = path.join(tmp, 'row.jsonl');
    fs.writeFileSync(data, `${JSON.stringify({ text: `${'a'.repeat(40)}!` })}\n`);
    await assert.rejects(
      main(['data', 'inspect', data, '--model', norm]),
      /repeats a group that itself repeats/,
    );

    // The same tokenizer with a harmless pattern loads and tokenizes.
    const ok = folder('ok', {
      normalizer: {
        type: 'Sequence',
        normalizers: [{ type: 'Replace', pattern: { Regex: '(ab)+' }, content: 'x' }],
      },
    });
    assert.ok(loadTokenizer(ok).encode(`${'a'.repeat(40)}!`).length > 0);
  },
);
