// Row formats to tokens on the real fixture datasets with the real TinyLlama tokenizer: the loss
// boundary at token level, BOS/EOS, column mapping, prompt templates, truncation and bad rows.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseColumnMapping } from '../src/data/columns.js';
import { loadDataset } from '../src/data/dataset.js';
import { DatasetError, RowError } from '../src/data/errors.js';
import { RowRenderer } from '../src/data/formats.js';
import { PromptTemplate, unescapeCommandLine } from '../src/data/prompt-template.js';
import type { TokenizedExample } from '../src/data/tokenize.js';
import { tinyLlamaTokenizer } from './data-util.js';

const VIGGO = 'fixtures/datasets/viggo';
const IDENTITY = 'fixtures/datasets/llamafactory_identity/identity.json';
const SHAKESPEARE = 'fixtures/datasets/tinyshakespeare/input.txt';

/** ViGGO rows parsed independently of our CSV reader (the fixture has no embedded newlines or doubled quotes). */
function viggoRows(split: 'train' | 'valid'): { mr: string; ref: string }[] {
  const lines = readFileSync(`${VIGGO}/${split}.csv`, 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l !== '');
  return lines.map((line) => {
    const fields = line
      .match(/("[^"]*"|[^,]*)(,|$)/g)!
      .map((f) => f.replace(/,$/, '').replace(/^"(.*)"$/, '$1'));
    return { mr: fields[0]!, ref: fields[1]! };
  });
}

const firstTarget = (ex: TokenizedExample) => ex.targets.indexOf(1);

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'qlora-fmt-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('ViGGO with a template ending in "\\n": loss starts exactly at the completion and ends with a learned </s>', async () => {
  const tok = tinyLlamaTokenizer();
  const template = 'Target sentence: {ref}\nMeaning representation:\n';
  const ds = await loadDataset(VIGGO, tok, {
    maxSeqLen: 512,
    columns: parseColumnMapping('completion=mr'),
    promptTemplate: new PromptTemplate(template),
  });
  assert.equal(ds.format, 'completion');
  assert.equal(ds.validSource, 'file');
  const rows = viggoRows('train');
  assert.equal(ds.train.length, rows.length);
  assert.equal(ds.stats.train.inexactBoundaries, 0);
  ds.train.forEach((ex, i) => {
    const prompt = `Target sentence: ${rows[i]!.ref}\nMeaning representation:\n`;
    const ids = [...ex.ids];
    const start = firstTarget(ex);
    assert.equal(ids[0], tok.bosId, 'one BOS first');
    assert.equal(ids.at(-1), tok.eosId, 'EOS last');
    // Token level: the prompt's tokens are exactly the tokens before the first target ...
    assert.deepEqual(
      ids.slice(1, start),
      tok.encode(prompt, { addSpecialTokens: false }),
      `row ${i + 1} prompt tokens`,
    );
    // ... every token from there to the end (EOS included) is a target, none before.
    assert.ok(
      [...ex.targets].every((t, j) => t === (j >= start ? 1 : 0)),
      `row ${i + 1} mask`,
    );
    assert.equal(tok.decode(ids.slice(start)), `${rows[i]!.mr}</s>`);
  });
  assert.equal(ds.valid.length, viggoRows('valid').length);
});

test('ViGGO with "...representation: " (trailing space): the straddling "▁inform" token starts the loss', async () => {
  const tok = tinyLlamaTokenizer();
  const ds = await loadDataset(VIGGO, tok, {
    maxSeqLen: 512,
    columns: parseColumnMapping('prompt=ref,completion=mr'),
    promptTemplate: new PromptTemplate(
      unescapeCommandLine('Target sentence: {prompt}\\nMeaning representation: '),
    ),
  });
  // SentencePiece attaches the space to the next word, so every boundary falls inside a token.
  assert.equal(ds.stats.train.inexactBoundaries, ds.train.length);
  const rows = viggoRows('train');
  ds.train.forEach((ex, i) => {
    const start = firstTarget(ex);
    const piece = tok.idToToken(ex.ids[start]!)!;
    assert.ok(
      piece.startsWith('▁') && rows[i]!.mr.startsWith(piece.slice(1)),
      `row ${i + 1}: ${piece}`,
    );
    assert.equal(
      tok.decode([...ex.ids.slice(1, start)]),
      `Target sentence: ${rows[i]!.ref}\nMeaning representation:`,
    );
  });
});

test('Alpaca (identity.json): the Stanford prompt without input, loss on the output only', async () => {
  const tok = tinyLlamaTokenizer();
  const renderer = new RowRenderer({});
  const row = JSON.parse(readFileSync(IDENTITY, 'utf8'))[2];
  const rendered = renderer.render(row, { file: IDENTITY, row: 3 });
  assert.equal(renderer.format, 'alpaca');
  const prompt =
    'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
    '### Instruction:\nWho are you?\n\n### Response:\n';
  assert.equal(
    rendered.text,
    `${prompt}I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?`,
  );
  assert.deepEqual(rendered.loss, [{ from: prompt, to: rendered.text }]);
  const withInput = renderer.render(
    { instruction: 'Add.', input: '2 3', output: '5' },
    { file: 'x', row: 1 },
  );
  assert.equal(
    withInput.text,
    'Below is an instruction that describes a task, paired with an input that provides further context. ' +
      'Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n2 3\n\n### Response:\n5',
  );

  const ds = await loadDataset(IDENTITY, tok, { maxSeqLen: 512, validFraction: 0 });
  assert.equal(ds.train.length, 91);
  const ex = ds.train[2]!;
  const start = firstTarget(ex);
  assert.deepEqual([...ex.ids.slice(1, start)], tok.encode(prompt, { addSpecialTokens: false }));
  assert.equal(
    tok.decode([...ex.ids.slice(start)]),
    'I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?</s>',
  );
});

test('text (tiny-shakespeare): split into windows overlapping by one token; every token but BOS learned once', async () => {
  const tok = tinyLlamaTokenizer();
  const whole = readFileSync(SHAKESPEARE, 'utf8');
  const expected = [tok.bosId!, ...tok.encode(whole, { addSpecialTokens: false }), tok.eosId!];
  const maxSeqLen = 256;
  const ds = await loadDataset(SHAKESPEARE, tok, { maxSeqLen, validFraction: 0 });
  assert.equal(ds.format, 'text');
  assert.equal(ds.truncation, 'split');
  assert.equal(ds.stats.train.overLength, 1);
  assert.equal(ds.stats.train.rows, 1, 'one document, however many pieces it was read in');
  assert.equal(ds.train.length, Math.ceil((expected.length - 1) / (maxSeqLen - 1)));
  const rebuilt = [...ds.train[0]!.ids];
  for (const w of ds.train.slice(1)) {
    assert.equal(w.ids[0], rebuilt.at(-1), 'windows overlap by one token');
    rebuilt.push(...w.ids.slice(1));
  }
  assert.deepEqual(rebuilt, expected);
  // The file was read in pieces (4096 characters by default); smaller pieces give the same tokens.
  assert.ok(whole.length > 4 * 4096);
  const small = await loadDataset(SHAKESPEARE, tok, {
    maxSeqLen,
    validFraction: 0,
    text: { pieceChars: 700 },
  });
  assert.deepEqual(
    small.train.map((w) => [...w.ids]),
    ds.train.map((w) => [...w.ids]),
  );
  assert.ok(ds.train.every((w) => w.ids.length <= maxSeqLen));
  assert.equal(ds.stats.train.lossTokens, expected.length - 1);
  // Held out with a seed: the same examples every time, different for another seed.
  const a = await loadDataset(SHAKESPEARE, tok, { maxSeqLen, validFraction: 0.2, seed: 1 });
  const b = await loadDataset(SHAKESPEARE, tok, { maxSeqLen, validFraction: 0.2, seed: 1 });
  const c = await loadDataset(SHAKESPEARE, tok, { maxSeqLen, validFraction: 0.2, seed: 2 });
  assert.equal(a.validSource, 'held-out');
  assert.equal(a.valid.length, Math.round(0.2 * ds.train.length));
  assert.equal(a.train.length + a.valid.length, ds.train.length);
  const key = (xs: TokenizedExample[]) => xs.map((x) => x.ids.slice(0, 8).join(',')).join('|');
  assert.equal(key(a.valid), key(b.valid));
  assert.notEqual(key(a.valid), key(c.valid));
});

test('truncation policies on ViGGO: counts match an independent length computation', async () => {
  const tok = tinyLlamaTokenizer();
  const rows = viggoRows('train');
  const template = 'Target sentence: {ref}\nMeaning representation:\n';
  const promptOf = (r: { ref: string }) => template.replace('{ref}', r.ref);
  const fullLength = (r: { ref: string; mr: string }) =>
    2 + tok.encode(promptOf(r) + r.mr, { addSpecialTokens: false }).length;
  const promptLength = (r: { ref: string }) =>
    1 + tok.encode(promptOf(r), { addSpecialTokens: false }).length;
  const maxSeqLen = 80;
  const tooLong = rows.filter((r) => fullLength(r) > maxSeqLen).length;
  assert.ok(tooLong > 10 && tooLong < rows.length, `fixture has a mix (${tooLong})`);
  const base = {
    columns: { completion: 'mr' },
    promptTemplate: new PromptTemplate(template),
    maxSeqLen,
    validFraction: 0,
  } as const;

  const dropped = await loadDataset(join(VIGGO, 'train.csv'), tok, { ...base, truncation: 'drop' });
  assert.equal(dropped.stats.train.droppedTooLong, tooLong);
  assert.equal(dropped.train.length, rows.length - tooLong);

  const right = await loadDataset(join(VIGGO, 'train.csv'), tok, {
    ...base,
    truncation: 'truncate-right',
  });
  const noRoom = rows.filter(
    (r) => fullLength(r) > maxSeqLen && promptLength(r) >= maxSeqLen,
  ).length;
  assert.equal(right.stats.train.overLength, tooLong);
  assert.equal(right.stats.train.droppedNoLoss, noRoom);
  assert.equal(right.train.length, rows.length - noRoom);
  assert.ok(right.train.every((ex) => ex.ids.length <= maxSeqLen && ex.ids[0] === tok.bosId));

  const left = await loadDataset(join(VIGGO, 'train.csv'), tok, {
    ...base,
    truncation: 'truncate-left',
  });
  assert.equal(left.train.length, rows.length);
  let li = 0;
  rows.forEach((r) => {
    const ex = left.train[li++]!;
    const full = [
      tok.bosId!,
      ...tok.encode(promptOf(r) + r.mr, { addSpecialTokens: false }),
      tok.eosId!,
    ];
    const want =
      full.length > maxSeqLen ? [full[0]!, ...full.slice(full.length - maxSeqLen + 1)] : full;
    assert.deepEqual([...ex.ids], want);
  });
});

test('column mapping, prompt templates and bad rows: clear errors, or counted with skipBadRows', async () => {
  const tok = tinyLlamaTokenizer();
  assert.deepEqual(parseColumnMapping('prompt=mr, completion=ref'), {
    prompt: 'mr',
    completion: 'ref',
  });
  assert.throws(() => parseColumnMapping('prompt'), /bad column mapping 'prompt'/);
  assert.throws(() => parseColumnMapping('answer=ref'), /'answer' is not one of/);
  assert.throws(() => new PromptTemplate('Q: {question'), /template error at character 4/);
  assert.throws(() => new PromptTemplate('a } b'), /unmatched '\}'/);
  assert.equal(
    (new PromptTemplate('{{x}} {y}').render({ y: 1 }) as { text: string }).text,
    '{x} 1',
  );

  await assert.rejects(
    loadDataset(VIGGO, tok, { maxSeqLen: 64, columns: { prompt: 'meaning', completion: 'ref' } }),
    (e: unknown) =>
      e instanceof RowError &&
      /train\.csv, line 2 \(row 1\): has no column 'meaning' \(it has: mr, ref\)/.test(e.message),
  );
  await assert.rejects(
    loadDataset(VIGGO, tok, {
      maxSeqLen: 64,
      columns: { completion: 'ref' },
      promptTemplate: new PromptTemplate('{mr} {title}'),
    }),
    /row 1\): the prompt template uses \{title\} but the row has no such column \(it has: mr, ref, completion\)/,
  );
  await assert.rejects(
    loadDataset(VIGGO, tok, { maxSeqLen: 64 }),
    /cannot tell the row format from its fields \(mr, ref\).*--columns/,
  );

  const path = join(dir, 'mixed.jsonl');
  await writeFile(
    path,
    [
      '{"prompt": "2+2=", "completion": "4"}',
      '{"prompt": "3+3=", "completion": 6}',
      '{"prompt": "x", "answer": "y"}',
      '{"prompt": "5+5=" "completion": "10"}',
      '["prompt", "completion"]',
      '{"prompt": "1+1=", "completion": "   "}',
      '{"prompt": "4+4=", "completion": "8"}',
    ].join('\n'),
  );
  await assert.rejects(
    loadDataset(path, tok, { maxSeqLen: 64 }),
    /mixed\.jsonl, line 2 \(row 2\): 'completion' must be text, got a number 6/,
  );
  const skipped = await loadDataset(path, tok, {
    maxSeqLen: 64,
    skipBadRows: true,
    validFraction: 0,
  });
  assert.equal(skipped.train.length, 2);
  assert.equal(skipped.stats.train.badRows, 5);
  assert.deepEqual(
    skipped.stats.train.badRowMessages.map((m) => m.replace(/^.*?\): /, '')),
    [
      "'completion' must be text, got a number 6",
      "is missing 'completion' (it has: prompt, answer)",
      "malformed JSON: unexpected '\"', expected ',' or '}'",
      'a row must be an object with named fields, got a list ["prompt","completion"]',
      'the completion is empty: nothing to learn from this row',
    ],
  );
  assert.match(skipped.stats.train.badRowMessages[2]!, /line 4, column 19 \(row 4\)/);

  // A stray first row does not fix the format: with skipBadRows it is skipped like any bad row.
  const stray = join(dir, 'stray.jsonl');
  await writeFile(
    stray,
    '{"junk": 1}\n{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n',
  );
  await assert.rejects(
    loadDataset(stray, tok, { maxSeqLen: 64 }),
    /line 1 \(row 1\): cannot tell the row format from its fields \(junk\)/,
  );
  const strayed = await loadDataset(stray, tok, {
    maxSeqLen: 64,
    skipBadRows: true,
    validFraction: 0,
  });
  assert.equal(strayed.format, 'completion');
  assert.equal(strayed.train.length, 2);
  assert.equal(strayed.stats.train.badRows, 1);

  const empty = join(dir, 'empty.jsonl');
  await writeFile(empty, '\n\n');
  await assert.rejects(
    loadDataset(empty, tok, { maxSeqLen: 64 }),
    (e: unknown) =>
      e instanceof DatasetError && /the train data is empty: it has no rows/.test(e.message),
  );
  const allBad = join(dir, 'bad.jsonl');
  await writeFile(allBad, '{"text": 1}\n{"text": 2}\n');
  await assert.rejects(
    loadDataset(allBad, tok, { maxSeqLen: 64, skipBadRows: true }),
    /empty: 2 row\(s\) read, 2 bad, 0 dropped.*; first bad row: .*bad\.jsonl, line 1 \(row 1\): 'text' must be text, got a number 1/,
  );
  await assert.rejects(
    loadDataset(allBad, tok, { maxSeqLen: 1 }),
    /max sequence length must be an integer >= 2/,
  );
});
