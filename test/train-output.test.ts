// The training output folder as a user (or an attacker) leaves it: symlinks planted in it are never
// written through, unusable paths fail at once, a used folder is refused unless --resume or
// --overwrite, a resume with other options names them, and what a killed run left is cleaned.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { listCheckpoints } from '../src/train/checkpoint.js';
import { cleanStaleFiles, prepareOutputDir } from '../src/train/output-dir.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');

function qlora(args: string[], cwd: string, timeout = 240_000) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout,
  });
}

/** A tiny real run: 64-token rows, rank 2, a checkpoint every step. */
const RUN = [
  'train',
  '-m',
  MODEL,
  '-d',
  DATA,
  '--seq-len',
  '64',
  '-b',
  '2',
  '-r',
  '2',
  '--eval-every',
  '0',
  '--save-every',
  '1',
  '--keep-checkpoints',
  '2',
];

/** Steps of the training records in a metrics.jsonl. */
function trainSteps(file: string): number[] {
  return fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l))
    .filter((r) => 'loss' in r)
    .map((r) => r.step);
}

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-out-'));
}

test('files the trainer writes replace symlinks planted in the output folder, never write through them', () => {
  const cwd = tmp();
  try {
    const r1 = qlora([...RUN, '--max-steps', '2', '-o', 'out'], cwd);
    assert.equal(r1.status, 0, r1.stderr);
    // Someone with access to the folder points every file the next run writes at files outside it.
    const outside = path.join(cwd, 'outside');
    fs.mkdirSync(outside);
    const names = [
      'metrics.jsonl',
      'loss.svg',
      'adapter_model.safetensors',
      'adapter_config.json',
      'checkpoint-4',
    ];
    for (const name of names) {
      fs.writeFileSync(path.join(outside, name), 'precious');
      fs.rmSync(path.join(cwd, 'out', name), { recursive: true, force: true });
      fs.symlinkSync(path.join(outside, name), path.join(cwd, 'out', name));
    }
    const r2 = qlora([...RUN, '--max-steps', '4', '-o', 'out', '--resume'], cwd);
    assert.equal(r2.status, 0, r2.stderr);
    for (const name of names) {
      assert.equal(
        fs.readFileSync(path.join(outside, name), 'utf8'),
        'precious',
        `${name} was written through its link`,
      );
      assert.ok(
        !fs.lstatSync(path.join(cwd, 'out', name)).isSymbolicLink(),
        `${name} is still a link`,
      );
    }
    // The linked metrics.jsonl was not ours to read: the record starts again at the resumed steps.
    assert.deepEqual(trainSteps(path.join(cwd, 'out', 'metrics.jsonl')), [3, 4]);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('an unusable --output fails at once with its path (no hang on /proc, no crash on a file)', () => {
  const cwd = tmp();
  try {
    const proc = qlora([...RUN, '--max-steps', '1', '-o', '/proc/qlora-x/y'], cwd, 60_000);
    assert.equal(proc.error, undefined, 'the command returned (no hang)');
    assert.notEqual(proc.status, 0);
    assert.match(proc.stderr, /output folder \/proc\/qlora-x\/y: cannot create \/proc\/qlora-x/);
    fs.writeFileSync(path.join(cwd, 'afile'), 'x');
    const file = qlora([...RUN, '--max-steps', '1', '-o', 'afile/out'], cwd, 60_000);
    assert.notEqual(file.status, 0);
    assert.match(file.stderr, /afile is not a folder/);
    assert.doesNotMatch(proc.stderr + file.stderr, /^\s+at /m, 'a message, not a stack trace');
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('a used output folder is refused; --overwrite replaces only the old run; a resume with other options names them', () => {
  const cwd = tmp();
  try {
    assert.equal(qlora([...RUN, '--max-steps', '3', '-o', 'out'], cwd).status, 0);
    fs.writeFileSync(path.join(cwd, 'out', 'notes.txt'), 'mine');
    const again = qlora([...RUN, '--max-steps', '2', '-o', 'out'], cwd);
    assert.notEqual(again.status, 0);
    assert.match(
      again.stderr,
      /output folder out is not empty \(.*\): pass --resume to continue the run in it, --overwrite to replace it/,
    );
    assert.ok(
      fs.existsSync(path.join(cwd, 'out', 'checkpoint-3')),
      'a refused run touches nothing',
    );

    const differs = qlora(
      [...RUN, '--max-steps', '5', '-o', 'out', '--resume', '--lr', '0.001', '-r', '4'],
      cwd,
    );
    assert.notEqual(differs.status, 0);
    assert.match(differs.stderr, /--lr 0\.001 \(checkpoint: 0\.0002\)/);
    assert.match(differs.stderr, /--rank 4 \(checkpoint: 2\)/);

    const over = qlora([...RUN, '--max-steps', '2', '-o', 'out', '--overwrite'], cwd);
    assert.equal(over.status, 0, over.stderr);
    const left = fs.readdirSync(path.join(cwd, 'out')).sort();
    assert.ok(!left.includes('checkpoint-3'), "the old run's checkpoints are gone");
    assert.ok(left.includes('notes.txt'), 'files the tool did not write are kept');
    assert.deepEqual(
      left.filter((n) => n.startsWith('.')),
      [],
      'no staging folder or temp file is left behind',
    );
    assert.deepEqual(trainSteps(path.join(cwd, 'out', 'metrics.jsonl')), [1, 2]);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('what a killed run left is cleaned on the next start, and an incomplete checkpoint is never listed', () => {
  const dir = tmp();
  try {
    const complete = (name: string) => {
      fs.mkdirSync(path.join(dir, name));
      for (const f of [
        'adapter_model.safetensors',
        'adapter_config.json',
        'optimizer.safetensors',
        'trainer_state.json',
      ])
        fs.writeFileSync(path.join(dir, name, f), '{}');
    };
    complete('checkpoint-2');
    complete('checkpoint-4');
    // A kill while pruning checkpoint-4 (older code deleted in place): state remains, weights gone.
    fs.rmSync(path.join(dir, 'checkpoint-4', 'adapter_model.safetensors'));
    // A kill while writing checkpoint-6, one during an atomic write, one between the final renames.
    fs.mkdirSync(path.join(dir, '.tmp-checkpoint-6-12345'));
    fs.writeFileSync(path.join(dir, '.tmp-checkpoint-6-12345', 'trainer_state.json'), '{}');
    fs.writeFileSync(path.join(dir, '.loss.svg.12345.1700000000000.tmp'), 'half');
    fs.mkdirSync(path.join(dir, '.tmp-adapter-12345'));
    fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), 'weights without their config');
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), '');
    assert.deepEqual(
      listCheckpoints(dir).map((c) => c.step),
      [2],
      'the half-deleted checkpoint-4 is not listed',
    );
    prepareOutputDir(dir, { resume: true, overwrite: false });
    assert.deepEqual(fs.readdirSync(dir).sort(), ['checkpoint-2', 'metrics.jsonl']);
    assert.deepEqual(cleanStaleFiles(dir), [], 'nothing left to clean');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
