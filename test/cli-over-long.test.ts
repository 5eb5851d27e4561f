// Over-long data is never silently gutted (issue 10.3): train warns with the counts and the remedy,
// refuses when most examples lose every loss token unless --force, and warns when --seq-len exceeds
// the model's context.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadDataset } from '../src/data/dataset.js';
import { PromptTemplate, unescapeCommandLine } from '../src/data/prompt-template.js';
import { parseColumnMapping } from '../src/data/columns.js';
import { loadTokenizer } from '../src/tokenizer/index.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const VIGGO = path.join(root, 'fixtures', 'datasets', 'viggo');
// A long instruction before each ViGGO sentence (as the seed blog's template has): the mr completion comes last.
const TEMPLATE =
  'Given a target sentence construct the underlying meaning representation of the input sentence as a single function with attributes and attribute values.\\n\\n### Target sentence:\\n{ref}\\n\\n### Meaning representation:\\n';

function qlora(args: string[], cwd: string) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
  });
}

test('train refuses when most examples lose all their loss tokens, names the counts and the remedy, and goes on with --force', async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-long-'));
  try {
    // The untruncated lengths, independently: how many exceed 150 tokens, and their p95.
    const tokenizer = loadTokenizer(path.join(root, 'fixtures', 'stories260K', 'tok512.bin'));
    const full = await loadDataset(path.join(VIGGO, 'train.csv'), tokenizer, {
      maxSeqLen: 100_000,
      columns: parseColumnMapping('completion=mr'),
      promptTemplate: new PromptTemplate(unescapeCommandLine(TEMPLATE)),
      validFraction: 0,
    });
    const lengths = full.train.map((e) => e.ids.length).sort((a, b) => a - b);
    const p95 = lengths[Math.ceil(0.95 * lengths.length) - 1]!;
    const over = lengths.filter((n) => n > 150).length;
    assert.ok(
      over > 150 && p95 > 150 && p95 <= 512,
      `fixture lengths: ${over} over 150, p95 ${p95}`,
    );

    const args = [
      'train',
      '-m',
      MODEL,
      '-d',
      VIGGO,
      '--columns',
      'completion=mr',
      '--template',
      TEMPLATE,
      '--seq-len',
      '150',
      '--max-steps',
      '1',
      '--eval-every',
      '0',
      '--save-every',
      '0',
      '-o',
      'out',
    ];
    const refused = qlora(args, cwd);
    assert.notEqual(refused.status, 0);
    assert.match(
      refused.stderr,
      new RegExp(
        `warning: ${over} of 300 examples \\(\\d+%\\) are longer than --seq-len 150 tokens and were shortened \\(truncate-right\\): \\d+ lost every loss token`,
      ),
    );
    const m = /(\d+) of 300 examples \(\d+%\) lose all their loss tokens at --seq-len 150/.exec(
      refused.stderr,
    );
    assert.ok(m && Number(m[1]) > 150, refused.stderr);
    assert.match(
      refused.stderr,
      new RegExp(
        `--seq-len ${p95} covers 95% of examples \\(the longest has ${lengths.at(-1)} tokens\\)`,
      ),
    );
    assert.match(refused.stderr, /--truncation truncate-left keeps the end of each example/);
    assert.match(refused.stderr, /Pass --force to train anyway/);
    assert.ok(
      !fs.existsSync(path.join(cwd, 'out', 'adapter_model.safetensors')),
      'nothing trained',
    );

    const forced = qlora([...args, '--force'], cwd);
    assert.equal(forced.status, 0, forced.stderr);
    assert.match(forced.stderr, /lost every loss token/);
    assert.match(forced.stderr, /continuing because of --force/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test("train warns when --seq-len exceeds the model's context, and not when it does not", () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-long-'));
  try {
    const base = [
      'train',
      '-m',
      MODEL,
      '-d',
      VIGGO,
      '--columns',
      'prompt=mr,completion=ref',
      '--max-steps',
      '1',
      '--eval-every',
      '0',
      '--save-every',
      '0',
      '--batch-size',
      '1',
    ];
    const long = qlora([...base, '--seq-len', '1024', '-o', 'a'], cwd);
    assert.equal(long.status, 0, long.stderr);
    assert.match(
      long.stderr,
      /warning: --seq-len 1024 exceeds the model's context of 512 tokens.*use --seq-len 512 or less/,
    );
    const fits = qlora([...base, '--seq-len', '512', '-o', 'b'], cwd);
    assert.equal(fits.status, 0, fits.stderr);
    assert.doesNotMatch(fits.stderr, /warning/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
