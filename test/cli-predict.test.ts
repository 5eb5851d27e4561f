// qlora generate --data (issue 10.10): one JSON line per row with the prompt rendered as in training
// (the adapter's columns), the greedy prediction and the reference; written atomically.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resolveChatTemplate } from '../src/data/chat-template-source.js';
import { ChatTemplate } from '../src/data/chat-template.js';
import { RowRenderer } from '../src/data/formats.js';
import { alpacaPrompt } from '../src/data/alpaca.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const VIGGO = path.join(root, 'fixtures', 'datasets', 'viggo');

function qlora(args: string[], cwd: string) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
  });
}

test("generate --data predicts every row with the adapter's recipe, greedy, one JSON line each", () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-predict-'));
  try {
    const train = qlora(
      [
        'train',
        '-m',
        MODEL,
        '-d',
        VIGGO,
        '--columns',
        'prompt=mr,completion=ref',
        '--max-steps',
        '2',
        '--seq-len',
        '256',
        '--eval-every',
        '0',
        '--save-every',
        '0',
        '-o',
        'viggo',
      ],
      cwd,
    );
    assert.equal(train.status, 0, train.stderr);
    // Rows as a user's test file has them: the mr and ref columns, and one row without its reference.
    const rows = [
      { mr: 'inform(name[Tomb Raider], rating[good])', ref: 'Tomb Raider is a good game.' },
      { mr: 'request(specifier[dark])', ref: 'Do you like dark games?' },
      { mr: 'confirm(name[Doom])' },
    ];
    fs.writeFileSync(path.join(cwd, 'test.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
    const pred = qlora(
      ['generate', '-a', 'viggo', '--data', 'test.jsonl', '-o', 'preds.jsonl', '--max-tokens', '8'],
      cwd,
    );
    assert.equal(pred.status, 0, pred.stderr);
    assert.match(
      pred.stderr,
      /data: format completion, columns prompt=mr,completion=ref, as the adapter was trained/,
    );
    const lines = fs
      .readFileSync(path.join(cwd, 'preds.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 3);
    lines.forEach((l, i) => {
      assert.equal(l.prompt, rows[i]!.mr);
      assert.equal(l.reference, rows[i]!.ref);
      assert.equal(typeof l.prediction, 'string');
    });
    assert.ok(!('reference' in lines[2]), 'no reference key for a row without one');
    // Each prediction is what greedy generation from that prompt gives.
    for (const i of [0, 2]) {
      const one = qlora(['generate', '-a', 'viggo', '-p', rows[i]!.mr, '-t', '0', '-n', '8'], cwd);
      assert.equal(one.status, 0, one.stderr);
      assert.equal(one.stdout, `${rows[i]!.mr}${lines[i].prediction}\n`);
    }

    // The validation split of a folder.
    const valid = qlora(
      [
        'generate',
        '-a',
        'viggo',
        '--data',
        VIGGO,
        '--split',
        'valid',
        '-o',
        'valid.jsonl',
        '-n',
        '2',
      ],
      cwd,
    );
    assert.equal(valid.status, 0, valid.stderr);
    assert.equal(
      fs.readFileSync(path.join(cwd, 'valid.jsonl'), 'utf8').trim().split('\n').length,
      100,
    );

    // A bad row stops the run naming the row, and no partial file is left behind.
    fs.writeFileSync(
      path.join(cwd, 'bad.jsonl'),
      `${JSON.stringify(rows[0])}\n${JSON.stringify({ ref: 'no mr' })}\n`,
    );
    const bad = qlora(
      ['generate', '-a', 'viggo', '--data', 'bad.jsonl', '-o', 'bad-preds.jsonl', '-n', '2'],
      cwd,
    );
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /bad\.jsonl, line 2.*'prompt'/);
    assert.deepEqual(
      fs.readdirSync(cwd).filter((f) => f.includes('bad-preds')),
      [],
    );
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('prompts of Alpaca and chat rows end where the answer begins, and the answer is the reference', () => {
  const loc = { file: 'x.jsonl', row: 1 };
  const alpaca = new RowRenderer({}).renderPrompt(
    { instruction: 'Add 2 and 3.', input: '', output: '5' },
    loc,
  );
  assert.deepEqual(alpaca, { prompt: alpacaPrompt('Add 2 and 3.', ''), reference: '5', bos: true });
  const t = new ChatTemplate(resolveChatTemplate('chatml').source, {
    bosToken: '<s>',
    eosToken: '</s>',
  });
  const chat = new RowRenderer({ chatTemplate: () => t }).renderPrompt(
    {
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
      ],
    },
    loc,
  );
  assert.deepEqual(chat, {
    prompt: '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    reference: 'Hello!',
    bos: true,
  });
  const open = new RowRenderer({ format: 'chat', chatTemplate: () => t }).renderPrompt(
    { instruction: 'Say hi.' },
    loc,
  );
  assert.deepEqual(open, {
    prompt: '<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n',
    reference: null,
    bos: true,
  });
});
