// Issue 11.4: readers have limits. An over-long row (JSONL line, CSV record, JSON array element,
// text document) or a deeply nested JSON row is a clear per-row error that --skip-bad-rows skips,
// without holding the row in memory; a file with no line breaks streams in pieces; a safetensors
// header's parsing work is bounded before JSON.parse. Inputs are generated here, sized to stay fast.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { FileFormatError } from '../src/io/binary-reader.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { loadDataset } from '../src/data/dataset.js';
import { RowError } from '../src/data/errors.js';
import { DEFAULT_MAX_ROW_BYTES } from '../src/data/limits.js';
import { readText } from '../src/data/read-text.js';
import { tinyLlamaTokenizer } from './data-util.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-rows-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const QUICK = { timeout: 60_000 };

function write(name: string, content: string | Buffer): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, content);
  return file;
}

const good = (i: number) =>
  JSON.stringify({ prompt: `question ${i}?`, completion: ` answer ${i}.` });

test(
  'a JSONL row over the row limit is a row error naming its line; --skip-bad-rows goes on',
  QUICK,
  async () => {
    const tok = tinyLlamaTokenizer();
    const big = JSON.stringify({ prompt: 'x'.repeat(3 * DEFAULT_MAX_ROW_BYTES), completion: ' y' });
    const file = write('long.jsonl', [good(1), good(2), big, good(3)].join('\n') + '\n');
    await assert.rejects(
      loadDataset(file, tok, { maxSeqLen: 64, validFraction: 0 }),
      (e: Error) =>
        e instanceof RowError &&
        e.message ===
          `${file}, line 3 (row 3): this line is longer than the 1 MiB row limit (${Buffer.byteLength(big)} bytes); raise it with --max-row-bytes`,
    );
    const ds = await loadDataset(file, tok, { maxSeqLen: 64, validFraction: 0, skipBadRows: true });
    assert.equal(ds.train.length, 3);
    assert.equal(ds.stats.train.badRows, 1);
    // The limit is configurable, both ways.
    await assert.rejects(
      loadDataset(file, tok, {
        maxSeqLen: 64,
        validFraction: 0,
        skipBadRows: true,
        maxRowBytes: 40,
      }),
      /4 row\(s\) read, 4 bad.*this line is longer than the 40 bytes row limit/,
    );
    await assert.rejects(
      loadDataset(file, tok, {
        maxSeqLen: 64,
        validFraction: 0,
        skipBadRows: true,
        maxRowBytes: 0,
      }),
      /max row bytes must be a positive integer/,
    );
  },
);

test(
  'deeply nested JSON rows are row errors, also in JSON arrays, and are skipped',
  QUICK,
  async () => {
    const tok = tinyLlamaTokenizer();
    const deep = `{"prompt": ${'['.repeat(100_000)}${']'.repeat(100_000)}, "completion": "x"}`;
    const file = write('deep.jsonl', [good(1), deep, good(2)].join('\n'));
    await assert.rejects(
      loadDataset(file, tok, { maxSeqLen: 64, validFraction: 0 }),
      (e: Error) =>
        e instanceof RowError &&
        /deep\.jsonl, line 2, column 75 \(row 2\): JSON nested deeper than 64 levels$/.test(
          e.message,
        ),
    );
    const ds = await loadDataset(file, tok, { maxSeqLen: 64, validFraction: 0, skipBadRows: true });
    assert.deepEqual([ds.train.length, ds.stats.train.badRows], [2, 1]);

    const array = write('deep.json', `[${good(1)},\n${deep},\n${good(2)}]`);
    await assert.rejects(
      loadDataset(array, tok, { maxSeqLen: 64, validFraction: 0 }),
      /deep\.json, line 2 \(row 2\): JSON nested deeper than 64 levels$/,
    );
    const fromArray = await loadDataset(array, tok, {
      maxSeqLen: 64,
      validFraction: 0,
      skipBadRows: true,
    });
    assert.deepEqual([fromArray.train.length, fromArray.stats.train.badRows], [2, 1]);

    const long = write(
      'long.json',
      `[${good(1)}, ${JSON.stringify({ prompt: 'z'.repeat(2000), completion: 'x' })}]`,
    );
    const bounded = await loadDataset(long, tok, {
      maxSeqLen: 64,
      validFraction: 0,
      skipBadRows: true,
      maxRowBytes: 1000,
    });
    assert.deepEqual([bounded.train.length, bounded.stats.train.badRows], [1, 1]);
    assert.match(
      bounded.stats.train.badRowMessages[0]!,
      /long\.json, line 1 \(row 2\): this array element is longer than the 1000 bytes row limit \(2030 bytes\)/,
    );
  },
);

test('a CSV record over the row limit is a row error; its text is not kept', QUICK, async () => {
  const tok = tinyLlamaTokenizer();
  const file = write('long.csv', `prompt,completion\nhi,there\n"${'q'.repeat(5000)}",x\nbye,now\n`);
  const ds = await loadDataset(file, tok, {
    maxSeqLen: 64,
    validFraction: 0,
    skipBadRows: true,
    maxRowBytes: 1000,
  });
  assert.deepEqual([ds.train.length, ds.stats.train.badRows], [2, 1]);
  assert.match(
    ds.stats.train.badRowMessages[0]!,
    /long\.csv, line 3, column 1 \(row 2\): this record is longer than the 1000 bytes row limit/,
  );
});

test(
  'a text file without line breaks streams in bounded pieces; an over-long separated document is a row error',
  QUICK,
  async () => {
    // 8 MB in one line: read in pieces of about pieceChars, never as one string.
    const file = write('oneline.txt', Buffer.alloc(8 << 20, 'abcd efgh '));
    let pieces = 0;
    let longest = 0;
    let total = 0;
    for await (const row of readText(file, { pieceChars: 4096 })) {
      const text = (row.value as { text: string }).text;
      pieces++;
      longest = Math.max(longest, text.length);
      total += text.length;
    }
    assert.equal(total, 8 << 20);
    assert.ok(longest <= 4 * 4096 + (1 << 16), `longest piece ${longest}`);
    assert.ok(pieces > 1000);

    const tok = tinyLlamaTokenizer();
    const docs = write('docs.txt', `first document\n\n${'w '.repeat(4000)}\n\nthird document\n`);
    const ds = await loadDataset(docs, tok, {
      maxSeqLen: 64,
      validFraction: 0,
      skipBadRows: true,
      maxRowBytes: 1000,
      text: { separator: '\n\n' },
    });
    assert.equal(ds.stats.train.badRows, 1);
    assert.match(
      ds.stats.train.badRowMessages[0]!,
      /docs\.txt, line 3 \(row 2\): this document is longer than the 1000 bytes row limit \(8000 bytes\)/,
    );
  },
);

test(
  'a safetensors header with a deeply nested or huge __metadata__ is refused before parsing',
  QUICK,
  () => {
    const header = (json: string): Buffer => {
      const body = Buffer.from(json);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(body.length));
      return Buffer.concat([len, body]);
    };
    const nested = write(
      'nested.safetensors',
      header(`{"__metadata__":${'{"a":'.repeat(2_000_000)}"x"${'}'.repeat(2_000_000)}}`),
    );
    assert.throws(
      () => SafetensorsFile.open(nested),
      (e: Error) =>
        e instanceof FileFormatError &&
        e.message ===
          'nested.safetensors: header nests deeper than a safetensors header can (3 levels) at byte 34',
    );
    const wide = write(
      'wide.safetensors',
      header(`{"__metadata__":{${'"":"",'.repeat(1 << 18)}"":""}}`),
    );
    assert.throws(
      () => SafetensorsFile.open(wide),
      /^FileFormatError: wide\.safetensors: header has 262146 JSON members, more than the 262144 any real checkpoint needs$/,
    );
    const missing = write('missing.safetensors', header('{"w":{"dtype":"F32","shape":[0]}}'));
    assert.throws(
      () => SafetensorsFile.open(missing),
      /^FileFormatError: missing\.safetensors: tensor 'w': field 'data_offsets' is missing \(an entry needs dtype, shape and data_offsets\)$/,
    );
  },
);

test('JSON Lines still read a lone carriage return as a line break (as before the byte-level reader)', async () => {
  const { readJsonLines } = await import('../src/data/read-jsonl.js');
  const file = write('cr.jsonl', '\uFEFF{"a":1}\r{"a":2}\r\n\r\n{"a":3}\n{"a":');
  const rows = [];
  for await (const r of readJsonLines(file))
    rows.push(
      r.error
        ? `error line ${r.location.line}`
        : `${JSON.stringify(r.value)} line ${r.location.line}`,
    );
  assert.deepEqual(rows, ['{"a":1} line 1', '{"a":2} line 2', '{"a":3} line 4', 'error line 5']);
});
