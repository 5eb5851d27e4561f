// Parquet rows (hyparquet) and the Hugging Face dataset-folder rules that decide which files make
// which split (README configs, data/<split>-0000i-of-0000N, split keywords, else train).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parquetWriteFile } from 'hyparquet-writer';
import { globToRegExp, hfDataFiles } from '../src/data/hf-data-files.js';
import { readParquet } from '../src/data/read-parquet.js';
import { readSplit, resolveSources } from '../src/data/sources.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-hf-layout-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('split rules: README configs first, then data/<split>-N-of-M names, then keywords, else train', () => {
  const readme = `---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train_sft\n    path: data/train_sft-*\n  - split: test_sft\n    path: "data/test_sft-*"\n---\n# card\n`;
  const files = [
    'data/train_sft-00000-of-00002.parquet',
    'data/train_sft-00001-of-00002.parquet',
    'data/test_sft-00000-of-00001.parquet',
    'data/train_gen-00000-of-00001.parquet',
  ];
  assert.deepEqual(
    [...hfDataFiles(files, readme)],
    [
      ['train_sft', files.slice(0, 2)],
      ['test_sft', [files[2]]],
    ],
  );
  // Without a README, the file names carry any split name.
  assert.deepEqual([...hfDataFiles(files, null).keys()].sort(), [
    'test_sft',
    'train_gen',
    'train_sft',
  ]);
  // Older push_to_hub names carry a hash after the shard numbers.
  assert.deepEqual(
    Object.fromEntries(hfDataFiles(['data/train-00000-of-00001-a09b74b3ef9c3b56.parquet'], null)),
    { train: ['data/train-00000-of-00001-a09b74b3ef9c3b56.parquet'] },
  );
  // Keywords between separators, in file or folder names; not inside words.
  assert.deepEqual(
    Object.fromEntries(
      hfDataFiles(
        [
          'train.jsonl',
          'dev.csv',
          'eval/part1.json',
          'my_test_set.tsv',
          'contest.csv',
          'interval.csv',
        ],
        null,
      ),
    ),
    {
      train: ['train.jsonl'],
      validation: ['dev.csv'],
      test: ['eval/part1.json', 'my_test_set.tsv'],
    },
  );
  // No split names at all: everything is train; README.md and hidden files are never data.
  assert.deepEqual(
    Object.fromEntries(hfDataFiles(['a.jsonl', 'b.parquet', '.hidden/c.csv'], null)),
    {
      train: ['a.jsonl', 'b.parquet'],
    },
  );
  assert.ok(globToRegExp('data/**/*.parquet').test('data/x/y/z.parquet'));
  assert.ok(globToRegExp('data/**/*.parquet').test('data/z.parquet'));
  assert.ok(!globToRegExp('data/*.parquet').test('data/x/z.parquet'));
});

test('parquet: rows as objects with nested lists; a broken file names itself; an over-long row is a row error', async () => {
  const file = path.join(tmp, 'rows.parquet');
  parquetWriteFile({
    filename: file,
    columnData: [
      { name: 'prompt', data: ['a', 'b', 'x'.repeat(3000)], type: 'STRING' },
      { name: 'n', data: [1, 2, 3], type: 'INT32' },
    ],
  });
  const rows = [];
  for await (const r of readParquet(file, file, { maxRowBytes: 1000 })) rows.push(r);
  assert.deepEqual(rows[0]!.value, { prompt: 'a', n: 1 });
  assert.deepEqual(rows[1]!.location, { file, row: 2 });
  assert.match(rows[2]!.error!.message, /row 3\).*longer than the 1000 bytes row limit/);

  // Chat rows as the Hub stores them: messages as a list of {role, content} structs.
  const chats = [
    [
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'hello' },
    ],
    [{ role: 'user', content: 'x' }],
  ];
  const chat = path.join(tmp, 'chat.parquet');
  parquetWriteFile({
    filename: chat,
    columnData: [{ name: 'messages', data: chats }],
    schema: [
      { name: 'root', num_children: 1 },
      { name: 'messages', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
      { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
      { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
      { name: 'role', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      { name: 'content', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
    ],
  });
  const got = [];
  for await (const r of readParquet(chat)) got.push(r.value);
  assert.deepEqual(
    got,
    chats.map((messages) => ({ messages })),
  );

  const broken = path.join(tmp, 'broken.parquet');
  fs.writeFileSync(broken, fs.readFileSync(file).subarray(0, 40));
  await assert.rejects(async () => {
    for await (const _ of readParquet(broken)) void _;
  }, /broken\.parquet: not a readable parquet file/);
});

test('a Hugging Face dataset folder on disk (no train.* at the top) reads by the same rules', async () => {
  const dir = path.join(tmp, 'clone');
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'README.md'), '# no configs\n');
  fs.writeFileSync(
    path.join(dir, 'data', 'train-00000-of-00001.jsonl'),
    '{"text": "one"}\n{"text": "two"}\n',
  );
  fs.writeFileSync(
    path.join(dir, 'data', 'validation-00000-of-00001.jsonl'),
    '{"text": "three"}\n',
  );
  const s = await resolveSources(dir);
  assert.equal(s.train.files.length, 1);
  assert.equal(path.basename(s.valid!.files[0]!.path), 'validation-00000-of-00001.jsonl');
  const texts = [];
  for await (const r of readSplit(s.valid!)) texts.push((r.value as { text: string }).text);
  assert.deepEqual(texts, ['three']);
  // Files with no split names are the train split of a dataset repository (it has a card), and
  // an error in a plain folder (test/data-readers.test.ts).
  const card = path.join(tmp, 'card');
  fs.mkdirSync(card);
  fs.writeFileSync(path.join(card, 'README.md'), '# a dataset\n');
  fs.writeFileSync(path.join(card, 'notes.jsonl'), '{"text": "x"}\n');
  assert.deepEqual(
    (await resolveSources(card)).train.files.map((f) => path.basename(f.path)),
    ['notes.jsonl'],
  );
  await assert.rejects(
    resolveSources(path.join(dir, 'data', 'train-00000-of-00001.jsonl'), { split: 'train' }),
    /--split train needs a dataset folder or a Hub dataset, not a file/,
  );
});
