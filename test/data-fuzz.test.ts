// Fuzzing the loaders: random bytes, truncated and mutated real rows, wrong types. Whatever the
// input, loading must end in a usable dataset or one of our clear errors (DatasetError / RowError
// naming the file) — never a crash with some other exception. Seeded, so a failure reproduces.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadDataset, type DatasetOptions } from '../src/data/dataset.js';
import { DatasetError } from '../src/data/errors.js';
import { PromptTemplate } from '../src/data/prompt-template.js';
import { TRUNCATION_POLICIES } from '../src/data/truncate.js';
import { countTargets } from '../src/data/tokenize.js';
import { rng } from './util.js';
import { tinyLlamaTokenizer } from './data-util.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qlora-fuzz-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SEEDS = [
  readFileSync('fixtures/datasets/viggo/train.csv', 'utf8').split('\n').slice(0, 12).join('\n'),
  JSON.stringify(
    JSON.parse(readFileSync('fixtures/datasets/llamafactory_identity/identity.json', 'utf8')).slice(
      0,
      6,
    ),
    null,
    2,
  ),
  readFileSync('fixtures/datasets/tinyshakespeare/input.txt', 'utf8').slice(0, 1500),
  [
    '{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}]}',
    '{"prompt":"2+2=","completion":"4"}',
    '{"text":"plain words"}',
    '{"instruction":"Say hi","input":"","output":"hi"}',
    '{"conversations":[{"from":"human","value":"a"},{"from":"gpt","value":"b"}]}',
  ].join('\n'),
];
const SEED_EXTENSIONS = ['.csv', '.json', '.txt', '.jsonl'];
const EXTENSIONS = ['.jsonl', '.json', '.csv', '.tsv', '.txt'];
const NASTY = [
  '"',
  '{',
  '}',
  '[',
  ']',
  ',',
  ':',
  '\n',
  '\r',
  '\t',
  '\\',
  '\\u',
  '\\ud800',
  '""',
  'null',
  '1e999',
  '-',
  '\u0000',
  '\uFEFF',
  '😀',
  '<s>',
  '</s>',
  '{{',
  '}}',
  '{%',
  '%}',
];
const WRONG_VALUES = [
  '1',
  'null',
  'true',
  '[]',
  '{}',
  '[1,2]',
  '{"role":1}',
  '"<|user|>"',
  '-0',
  '"\\ud83d"',
];

function mutate(text: string, r: () => number): string {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  let s = text;
  const edits = 1 + Math.floor(r() * 3);
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(r() * (s.length + 1));
    switch (Math.floor(r() * 6)) {
      case 0: // truncate
        s = s.slice(0, at);
        break;
      case 1: // delete a span
        s = s.slice(0, at) + s.slice(at + 1 + Math.floor(r() * 20));
        break;
      case 2: // insert a nasty token
        s = s.slice(0, at) + pick(NASTY) + s.slice(at);
        break;
      case 3: // replace a JSON string value with a value of another type
        s = s.replace(
          /"(content|completion|text|output|prompt|messages|value|role)":\s*("([^"\\]|\\.)*"|\[)/,
          (_m, k: string) => `"${k}": ${pick(WRONG_VALUES)}`,
        );
        break;
      case 4: // duplicate a line
        {
          const lines = s.split('\n');
          const i = Math.floor(r() * lines.length);
          lines.splice(i, 0, lines[i] ?? '');
          s = lines.join('\n');
        }
        break;
      default: // random bytes as latin1 characters
        s =
          s.slice(0, at) +
          Array.from({ length: 1 + Math.floor(r() * 8) }, () =>
            String.fromCharCode(Math.floor(r() * 256)),
          ).join('') +
          s.slice(at);
    }
  }
  return s;
}

test('fuzz: loaders end in a dataset or a clear DatasetError, never another exception', async () => {
  const tok = tinyLlamaTokenizer();
  const r = rng(20261128);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const outcomes = { loaded: 0, rejected: 0 };
  for (let iter = 0; iter < 250; iter++) {
    // Mostly a seed under its own extension, sometimes under a wrong one, sometimes pure noise.
    const seed = Math.floor(r() * SEEDS.length);
    const ext = r() < 0.75 ? SEED_EXTENSIONS[seed]! : pick(EXTENSIONS);
    const path = join(dir, `case${iter}${ext}`);
    let bytes: Buffer;
    if (r() < 0.15) {
      bytes = Buffer.from(
        Array.from({ length: Math.floor(r() * 400) }, () => Math.floor(r() * 256)),
      );
    } else {
      const text = r() < 0.2 ? SEEDS[seed]! : mutate(SEEDS[seed]!, r);
      bytes = Buffer.from(text, r() < 0.8 ? 'utf8' : 'latin1');
    }
    await writeFile(path, bytes);
    const options: DatasetOptions = {
      maxSeqLen: pick([2, 8, 64, 256, 256]),
      format: r() < 0.7 ? 'auto' : pick(['text', 'completion', 'alpaca', 'chat'] as const),
      skipBadRows: r() < 0.5,
      truncation: pick(TRUNCATION_POLICIES),
      validFraction: pick([0, 0.05, 0.5]),
      ...(ext === '.csv' && r() < 0.7 ? { columns: { prompt: 'mr', completion: 'ref' } } : {}),
      ...(r() < 0.15 ? { promptTemplate: new PromptTemplate('Q: {mr}\nA:') } : {}),
      ...(r() < 0.3 ? { text: { separator: '\n\n', pieceChars: 64 } } : {}),
      ...(r() < 0.3 ? { trainOnPrompt: true } : {}),
    };
    try {
      const ds = await loadDataset(path, tok, options);
      outcomes.loaded++;
      assert.ok(ds.train.length > 0);
      for (const ex of [...ds.train, ...ds.valid]) {
        assert.equal(ex.ids.length, ex.targets.length);
        assert.ok(
          ex.ids.length <= options.maxSeqLen,
          `case ${iter}: example longer than maxSeqLen`,
        );
        assert.ok(countTargets(ex.targets) > 0, `case ${iter}: example without loss`);
        assert.ok(ex.ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize));
      }
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      if (process.env.FUZZ_VERBOSE)
        console.log(
          String((err as Error).message)
            .replace(/^.*?: /, '')
            .slice(0, 90),
        );
      if (!(err instanceof DatasetError)) {
        assert.fail(
          `case ${iter} (${ext}, ${JSON.stringify(options)}): ${String((err as Error)?.stack ?? err)}\ninput: ${JSON.stringify(bytes.toString('utf8').slice(0, 300))}`,
        );
      }
      // Clear errors name the file, unless they are about the options themselves.
      assert.ok(err.message.includes(path) || err.location === undefined, err.message);
      outcomes.rejected++;
    }
  }
  // Both outcomes occur, so the fuzzer explores valid and invalid inputs.
  assert.ok(outcomes.loaded > 20 && outcomes.rejected > 20, JSON.stringify(outcomes));
});
