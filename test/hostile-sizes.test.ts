// Issue 11.3: declared sizes are checked against the file before anything is sized from them.
// Each case used to run for tens of seconds and gigabytes before failing (or, for the tokenizer,
// to succeed with a 2^31-token vocabulary); now each is a one-line error naming file and field.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FileFormatError } from '../src/io/binary-reader.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { configToHf } from '../src/io/config.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { loadTokenizer } from '../src/tokenizer/index.js';
import { readTokenizerFixture } from './tokenizer-fixtures.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-sizes-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
// A bound on each case: without the checks these run for many seconds and gigabytes.
const QUICK = { timeout: 30_000 };

function hfFolder(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const ck = openCheckpoint(here('../fixtures/stories260K/stories260K.bin'));
  try {
    writeSafetensors(
      path.join(dir, 'model.safetensors'),
      ck.tensorNames.map((n) => ({
        name: n,
        dtype: 'F32',
        shape: [...ck.shapeOf(n)],
        data: ck.loadTensor(n),
      })),
    );
    const config = configToHf(ck.config);
    edit(config);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  } finally {
    ck.close();
  }
  return dir;
}

test(
  'config.json num_hidden_layers beyond the tensors present is refused before building the layer table',
  QUICK,
  () => {
    const ok = hfFolder('ok', () => {});
    openCheckpoint(ok).close();
    const dir = hfFolder('layers', (c) => (c.num_hidden_layers = 2147483648));
    assert.throws(
      () => openCheckpoint(dir),
      (e: Error) =>
        e instanceof FileFormatError &&
        /^config\.json: num_hidden_layers = 2147483648 is not a plausible size/.test(e.message),
    );
    // Plausible but more layers than the file holds tensors for.
    const many = hfFolder('many', (c) => (c.num_hidden_layers = 9000));
    assert.throws(
      () => openCheckpoint(many),
      /^FileFormatError: many: config\.json num_hidden_layers = 9000 needs at least 81000 tensors .* the weights hold \d+$/,
    );
    const wide = hfFolder('wide', (c) => (c.vocab_size = 2 ** 40));
    assert.throws(
      () => openCheckpoint(wide),
      /config\.json: vocab_size = 1099511627776 is not a plausible size/,
    );
  },
);

test('GGUF block_count 2^31-1 is refused against the tensor count', QUICK, () => {
  const gguf = Buffer.from(fs.readFileSync(here('../fixtures/stories260K/stories260K.gguf')));
  const key = Buffer.from('llama.block_count');
  const at = gguf.indexOf(key);
  assert.ok(at > 0);
  assert.equal(gguf.readUInt32LE(at + key.length), 4); // value type u32
  for (const [value, pattern] of [
    [2 ** 31 - 1, /metadata 'llama\.block_count' = 2147483647 is not a plausible size/],
    [
      5000,
      /metadata 'llama\.block_count' = 5000 needs at least 45000 tensors .* the weights hold \d+/,
    ],
  ] as const) {
    gguf.writeUInt32LE(value, at + key.length + 4);
    const file = path.join(tmp, 'blocks.gguf');
    fs.writeFileSync(file, gguf);
    assert.throws(
      () => openCheckpoint(file),
      (e: Error) =>
        e instanceof FileFormatError &&
        e.message.startsWith('blocks.gguf: ') &&
        pattern.test(e.message),
    );
  }
});

test(
  'llama2.c n_layers 1,048,576 is refused by the file size before the tensor table is built',
  QUICK,
  () => {
    const bin = Buffer.from(fs.readFileSync(here('../fixtures/stories260K/stories260K.bin')));
    bin.writeInt32LE(1 << 20, 8); // dim, hidden_dim, n_layers
    const file = path.join(tmp, 'layers.bin');
    fs.writeFileSync(file, bin);
    const started = process.memoryUsage().rss;
    assert.throws(
      () => openCheckpoint(file),
      /^FileFormatError: layers\.bin: file size \d+ does not match the v0 header \(.*layers 1048576.*\): expected \d+ bytes$/,
    );
    assert.ok(process.memoryUsage().rss - started < 256 << 20, 'no per-layer table was built');
  },
);

test('a tokenizer.json id of 2^31 is refused, naming the file and field', QUICK, () => {
  const json = JSON.parse(readTokenizerFixture('tinyllama/tokenizer.json.gz').toString('utf8')) as {
    added_tokens: { id: number }[];
    model: { vocab: Record<string, number> };
  };
  const write = (name: string, edit: (j: typeof json) => void): string => {
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    const copy = structuredClone(json);
    edit(copy);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(copy));
    return dir;
  };
  assert.equal(loadTokenizer(write('good', () => {})).vocabSize, 32000);
  const added = write('added', (j) => (j.added_tokens[0]!.id = 2 ** 31));
  assert.throws(
    () => loadTokenizer(added),
    (e: Error) =>
      e.message ===
      `${path.join(added, 'tokenizer.json')}: field 'added_tokens[0].id' = 2147483648 is beyond any id a vocabulary of 32003 tokens uses (expected 0..65029)`,
  );
  const vocab = write('vocab', (j) => (j.model.vocab['▁the'] = 2 ** 31));
  assert.throws(
    () => loadTokenizer(vocab),
    /tokenizer\.json: field 'model\.vocab\["▁the"\]' = 2147483648 is beyond any id/,
  );
  const negative = write('negative', (j) => (j.model.vocab['▁the'] = -1));
  assert.throws(
    () => loadTokenizer(negative),
    /tokenizer\.json: field 'model\.vocab\["▁the"\]' must be a non-negative integer token id \(found -1\)/,
  );
});
