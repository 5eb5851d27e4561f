// Dataset readers over the real fixture files and small hand-written files with known problems.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { rng } from './util.js';
import { DatasetError, RowError } from '../src/data/errors.js';
import { findJsonSyntaxProblem, lineColumnOf } from '../src/data/json-locate.js';
import { readDelimited } from '../src/data/read-csv.js';
import { readJsonArray } from '../src/data/read-json-array.js';
import { readJsonLines } from '../src/data/read-jsonl.js';
import { TEXT_PIECE, readText, type TextRowValue } from '../src/data/read-text.js';
import type { RawRow } from '../src/data/rows.js';
import { readSplit, resolveSources } from '../src/data/sources.js';

const FIXTURES = 'fixtures/datasets';
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qlora-data-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect(rows: AsyncIterable<RawRow>): Promise<RawRow[]> {
  const out: RawRow[] = [];
  for await (const row of rows) out.push(row);
  return out;
}
async function file(name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

test('ViGGO CSV: 300 records with the header columns, quoted commas kept', async () => {
  const rows = await collect(readDelimited(`${FIXTURES}/viggo/train.csv`, ','));
  assert.equal(rows.length, 300);
  assert.ok(rows.every((r) => r.error === undefined));
  const first = rows[0]!.value as Record<string, string>;
  assert.deepEqual(Object.keys(first), ['mr', 'ref']);
  // Line 2 of the file, written by hand from the file's text.
  assert.equal(
    first.mr,
    'inform(name[Dirt: Showdown], release_year[2012], esrb[E 10+ (for Everyone 10 and Older)], genres[driving/racing, sport], ' +
      'platforms[PlayStation, Xbox, PC], available_on_steam[no], has_linux_release[no], has_mac_release[no])',
  );
  assert.equal(
    rows[3]!.value && (rows[3]!.value as Record<string, string>).ref,
    'Were there even any terrible games in 2014?',
  );
  assert.deepEqual(rows[0]!.location, { file: `${FIXTURES}/viggo/train.csv`, line: 2, row: 1 });
  assert.equal(rows[299]!.location.line, 301);
});

test('CSV: doubled quotes, embedded newlines (LF and CRLF), blank lines, TSV, field-count errors', async () => {
  const path = await file(
    'q.csv',
    'a,b\r\n"x ""quoted""","line1\r\nline2"\r\n\r\nplain,"multi\nline\nfield"\r\n1,2,3\n"tail",x',
  );
  const rows = await collect(readDelimited(path, ','));
  assert.deepEqual(rows[0]!.value, { a: 'x "quoted"', b: 'line1\nline2' });
  assert.equal(rows[0]!.location.line, 2);
  assert.deepEqual(rows[1]!.value, { a: 'plain', b: 'multi\nline\nfield' });
  assert.equal(rows[1]!.location.line, 5);
  assert.ok(rows[2]!.error instanceof RowError);
  assert.match(
    rows[2]!.error!.message,
    /line 8 \(row 3\): has 3 field\(s\) but the header has 2 \(a, b\)/,
  );
  assert.deepEqual(rows[3]!.value, { a: 'tail', b: 'x' });
  const tsv = await collect(
    readDelimited(await file('t.tsv', 'p\tc\nhello, world\t"tab\there"\n'), '\t'),
  );
  assert.deepEqual(tsv[0]!.value, { p: 'hello, world', c: 'tab\there' });
});

test('CSV: an unterminated quote stops with the line where it opened; text after a closing quote is a row error', async () => {
  const bad = await file('u.csv', 'a,b\n1,2\n3,"never closed\n4,5\n');
  await assert.rejects(collect(readDelimited(bad, ',')), (err: unknown) => {
    assert.ok(err instanceof DatasetError && !(err instanceof RowError));
    assert.match((err as Error).message, /u\.csv, line 3: a quoted field is never closed/);
    return true;
  });
  const rows = await collect(readDelimited(await file('v.csv', 'a,b\n"x"y,2\n3,4\n'), ','));
  assert.match(
    rows[0]!.error!.message,
    /line 2, column 4 \(row 1\): unexpected text after a closing quote/,
  );
  assert.deepEqual(rows[1]!.value, { a: '3', b: '4' });
  await assert.rejects(
    collect(readDelimited(await file('e.csv', ''), ',')),
    /empty \(no header row\)/,
  );
  await assert.rejects(
    collect(readDelimited(await file('d.csv', 'a,a\n1,2\n'), ',')),
    /names column 'a' twice/,
  );
});

test('JSONL: rows with line numbers, blank lines skipped, malformed line names line and column', async () => {
  const path = await file('x.jsonl', '{"text":"a"}\n\n{"text": "b",}\n{"text":"c"}\r\n');
  const rows = await collect(readJsonLines(path));
  assert.equal(rows.length, 3);
  assert.deepEqual(rows[0]!.value, { text: 'a' });
  assert.ok(rows[1]!.error instanceof RowError);
  // '{"text": "b",}' — the offending '}' is character 14 of line 3.
  assert.match(
    rows[1]!.error!.message,
    /x\.jsonl, line 3, column 14 \(row 2\): malformed JSON: unexpected '}', expected a property name/,
  );
  assert.deepEqual(rows[2]!.value, { text: 'c' });
  assert.equal(rows[2]!.location.line, 4);
});

test('JSON array: the identity set reads whole with per-element lines; a syntax error names line and column', async () => {
  const rows = await collect(readJsonArray(`${FIXTURES}/llamafactory_identity/identity.json`));
  assert.equal(rows.length, 91);
  assert.deepEqual(rows[0]!.value, {
    instruction: 'hi',
    input: '',
    output:
      'Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?',
  });
  // Each element is 5 lines ("{", 3 fields, "},") after the opening "[" on line 1.
  assert.equal(rows[0]!.location.line, 2);
  assert.equal(rows[1]!.location.line, 7);
  const bad = await file('b.json', '[\n  {"a": 1},\n  {"a": 2\n  {"a": 3}\n]');
  await assert.rejects(
    collect(readJsonArray(bad)),
    /b\.json, line 4, column 3: malformed JSON: unexpected '\{', expected ',' or '\}'/,
  );
  await assert.rejects(
    collect(readJsonArray(await file('o.json', '{"a": 1}'))),
    /expected a JSON array of rows/,
  );
});

test('json-locate agrees with JSON.parse on validity and points at the first bad character', () => {
  const cases: [string, number | null][] = [
    ['{"a":[1,2,{"b":null}]}', null],
    ['[1,2,]', 5],
    ['{"a":1', 6],
    ['"abc', 4],
    ['{"a":"x\ny"}', 7],
    ['[01]', 2],
    ['tru', 0],
    ['{} x', 3],
    ['"\\q"', 1],
  ];
  for (const [text, offset] of cases) {
    let valid = true;
    try {
      JSON.parse(text);
    } catch {
      valid = false;
    }
    const problem = findJsonSyntaxProblem(text);
    assert.equal(problem === null, valid, text);
    assert.equal(problem?.offset ?? null, offset, text);
  }
  // Deep nesting must not overflow the stack.
  assert.equal(findJsonSyntaxProblem('['.repeat(200000))!.offset, 200000);
  assert.deepEqual(lineColumnOf('ab\ncd\nef', 7), { line: 3, column: 2 });
});

test('text: one document in newline-cut pieces, or documents split by a separator', async () => {
  const shakespeare = `${FIXTURES}/tinyshakespeare/input.txt`;
  const pieces = await collect(readText(shakespeare, { pieceChars: 4096 }));
  const values = pieces.map((p) => p.value as TextRowValue);
  const { readFile } = await import('node:fs/promises');
  const whole = await readFile(shakespeare, 'utf8');
  assert.equal(values.map((v) => v.text).join(''), whole);
  assert.ok(values.length >= 4);
  assert.ok(values.slice(0, -1).every((v) => v.text.endsWith('\n') && !v[TEXT_PIECE].last));
  assert.equal(values.at(-1)![TEXT_PIECE].last, true);
  assert.ok(values.every((v) => v[TEXT_PIECE].document === 0));
  // Each piece's line number is where it starts in the file.
  let line = 1;
  for (const p of pieces) {
    assert.equal(p.location.line, line);
    line += ((p.value as TextRowValue).text.match(/\n/g) ?? []).length;
  }
  const docs = await collect(readText(shakespeare, { separator: '\n\n' }));
  // Hand-checked: the excerpt opens with "First Citizen:\nBefore we proceed any further, hear me speak."
  assert.equal(
    (docs[0]!.value as TextRowValue).text,
    'First Citizen:\nBefore we proceed any further, hear me speak.',
  );
  assert.equal((docs[1]!.value as TextRowValue).text, 'All:\nSpeak, speak.');
  assert.equal(docs[1]!.location.line, 4);
  assert.equal(docs.length, whole.split('\n\n').filter((d) => d.trim() !== '').length);
});

test('directories: MLX-style train/valid/test, a folder of text documents, and clear errors', async () => {
  const viggo = await resolveSources(`${FIXTURES}/viggo`);
  assert.equal(viggo.train.files[0]!.kind, 'csv');
  assert.match(viggo.valid!.files[0]!.path, /valid\.csv$/);
  assert.equal(viggo.test, undefined);
  const docs = join(dir, 'docs');
  await mkdir(docs);
  await writeFile(join(docs, 'a.txt'), 'first document');
  await writeFile(join(docs, 'b.txt'), 'second document');
  const folder = await resolveSources(docs);
  const rows = await collect(readSplit(folder.train));
  assert.deepEqual(
    rows.map((r) => [
      (r.value as TextRowValue).text,
      (r.value as TextRowValue)[TEXT_PIECE].document,
    ]),
    [
      ['first document', 0],
      ['second document', 1],
    ],
  );
  await assert.rejects(resolveSources(join(dir, 'missing')), /missing: no such file or directory/);
  await assert.rejects(
    resolveSources(await file('data.xlsx', 'x')),
    /unsupported file type '\.xlsx'/,
  );
  const mixed = join(dir, 'mixed');
  await mkdir(mixed);
  await writeFile(join(mixed, 'notes.csv'), 'a\n1\n');
  await assert.rejects(resolveSources(mixed), /needs a train\.\* file .* found: notes\.csv/);
  // A .json file that holds JSON Lines reads as JSON Lines.
  const jsonl = await collect(
    readSplit({
      files: [{ path: await file('lines.json', '{"text":"a"}\n{"text":"b"}\n'), kind: 'json' }],
    }),
  );
  assert.deepEqual(
    jsonl.map((r) => r.value),
    [{ text: 'a' }, { text: 'b' }],
  );
});

test('CSV round trip: random records written per RFC 4180 read back exactly, across 64 KiB chunk edges', async () => {
  const r = rng(4180);
  const alphabet = ['a', 'b', 'Z', ' ', ',', '"', '\n', '\t', 'é', '😀', '€', ';', "'"];
  const field = () =>
    Array.from(
      { length: Math.floor(r() * 30) },
      () => alphabet[Math.floor(r() * alphabet.length)]!,
    ).join('');
  const quote = (f: string) => (/[",\n\r]/.test(f) || f === '' ? `"${f.replace(/"/g, '""')}"` : f);
  for (const [lineEnd, sep] of [
    ['\n', ','],
    ['\r\n', ','],
    ['\r\n', '\t'],
  ] as const) {
    const records: string[][] = [];
    let text = `first${sep}second${sep}third${lineEnd}`;
    while (text.length < 200_000) {
      const rec = [field(), field(), field()];
      records.push(rec);
      const q =
        sep === ','
          ? quote
          : (f: string) => (/[\t"\n\r]/.test(f) || f === '' ? `"${f.replace(/"/g, '""')}"` : f);
      // Embedded newlines inside quoted fields use the file's line ending too.
      text += rec.map((f) => q(f).replace(/\n/g, lineEnd)).join(sep) + lineEnd;
    }
    const path = await file(`round${records.length}${sep === ',' ? '.csv' : '.tsv'}`, text);
    const rows = await collect(readDelimited(path, sep));
    assert.equal(rows.length, records.length);
    rows.forEach((row, i) => {
      assert.equal(row.error, undefined, row.error?.message);
      assert.deepEqual(
        row.value,
        { first: records[i]![0], second: records[i]![1], third: records[i]![2] },
        `record ${i + 1}`,
      );
    });
  }
});
