// One vocabulary across commands (issue 10.6): plan takes train's flags and defaults, train refuses a
// plan beyond this machine's memory unless --force, familiar aliases, one-line unknown-flag errors
// naming the closest flag, YAML errors in YAML names, -o/--output everywhere, one --adapter.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resolveTrainConfig } from '../src/cli/train-config.js';
import { planOptionsOf } from '../src/train/settings.js';
import { planTraining, resolvePlanModel } from '../src/train/plan.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const TEXT = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');

function qlora(args: string[], cwd: string) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
  });
}

test("plan takes train's flags with train's defaults (batch 4, no checkpointing, dropout 0.05)", async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-vocab-'));
  try {
    const r = qlora(['plan', '--model', 'llama2-7b'], cwd);
    assert.match(
      r.stdout,
      /plan for llama2-7b: batch 4 × seq 512, LoRA r=16 on all linear layers, adamw, .*gradient checkpointing off/,
    );
    // The same numbers as the planner gives for train's resolved defaults.
    const defaults = resolveTrainConfig({ model: 'llama2-7b', data: '-', output: '-' }, 'test');
    const want = await planTraining(resolvePlanModel('llama2-7b').config, planOptionsOf(defaults));
    const gib = (want.peakBytes / 2 ** 30).toFixed(2);
    assert.match(r.stdout, new RegExp(`predicted peak\\s+${gib} GiB`));
    // Train's own flags (and data/output, which plan ignores), the familiar aliases, and a config file.
    fs.writeFileSync(path.join(cwd, 'run.yaml'), 'lora_r: 8\nper_device_train_batch_size: 2\n');
    const r2 = qlora(
      [
        'plan',
        '-m',
        'llama2-7b',
        '-d',
        'x.jsonl',
        '-o',
        'out',
        '--config',
        'run.yaml',
        '--gradient-checkpointing',
        '--lora-dropout',
        '0',
        '--learning-rate',
        '1e-4',
      ],
      cwd,
    );
    assert.equal(r2.status, 0, r2.stderr);
    assert.match(r2.stdout, /batch 2 × seq 512, LoRA r=8 .*gradient checkpointing on/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test("train refuses a run the plan says exceeds this machine's memory unless --force", () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-vocab-'));
  try {
    const r = qlora(
      ['train', '-m', MODEL, '-d', TEXT, '--batch-size', '200000', '--seq-len', '512', '-o', 'out'],
      cwd,
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /warning: predicted peak .* exceeds/);
    assert.match(
      r.stderr,
      /the plan above needs more memory than this machine has: .* pass --force to try anyway/,
    );
    assert.doesNotMatch(r.stderr, /continuing anyway/);
    assert.ok(!fs.existsSync(path.join(cwd, 'out', 'adapter_model.safetensors')));
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('familiar aliases train as their short names; giving both is an error', () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-vocab-'));
  try {
    const r = qlora(
      [
        'train',
        '--max-steps',
        '1',
        '--eval-every',
        '0',
        '--sample-tokens',
        '0',
        '--lora-r',
        '2',
        '--lora-alpha',
        '4',
        '--lora-dropout',
        '0.1',
        '--learning-rate',
        '1e-3',
      ],
      cwd,
    );
    assert.equal(r.status, 0, r.stderr);
    const config = JSON.parse(
      fs.readFileSync(path.join(cwd, 'qlora-demo-output', 'adapter_config.json'), 'utf8'),
    );
    assert.deepEqual([config.r, config.lora_alpha, config.lora_dropout], [2, 4, 0.1]);
    assert.match(r.stderr, /lr 0\.001/);
    const both = qlora(['train', '--lr', '1e-3', '--learning-rate', '2e-3'], cwd);
    assert.notEqual(both.status, 0);
    assert.match(both.stderr, /give --lr or --learning-rate, not both/);
    const epochs = qlora(['plan', '--num-epochs', '2', '--max-steps', '3'], cwd);
    assert.match(epochs.stderr, /give either --max-steps or --epochs, not both/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('an unknown flag is one line naming the closest flag; YAML errors name YAML keys; two adapters are refused', () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-vocab-'));
  try {
    const typo = qlora(['train', '--seqlen', '64'], cwd);
    assert.notEqual(typo.status, 0);
    assert.equal(typo.stderr, "error: unknown option '--seqlen' (did you mean --seq-len?)\n");
    const other = qlora(['generate', '--tempreature', '0'], cwd);
    assert.equal(
      other.stderr,
      "error: unknown option '--tempreature' (did you mean --temperature?)\n",
    );

    fs.writeFileSync(
      path.join(cwd, 'run.yaml'),
      `model: ${MODEL}\ndata: ${TEXT}\noutput: out\nmax_steps: -1\n`,
    );
    const yaml = qlora(['train', '--config', 'run.yaml'], cwd);
    assert.match(yaml.stderr, /run\.yaml: max_steps: /);
    fs.writeFileSync(
      path.join(cwd, 'run.yaml'),
      `model: ${MODEL}\ndata: ${TEXT}\noutput: out\nmax-steps: 2\nnum_epochs: 1\n`,
    );
    const both = qlora(['train', '--config', 'run.yaml'], cwd);
    assert.match(both.stderr, /run\.yaml: give either max-steps or num_epochs, not both/);

    const two = qlora(['generate', '-m', MODEL, '-a', 'one', '-a', 'two', '-p', 'x'], cwd);
    assert.notEqual(two.status, 0);
    assert.match(two.stderr, /give one --adapter \(got 2: one, two\)/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test("-o/--output names the output of every command that writes; data inspect uses train's --seq-len default", () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-vocab-'));
  try {
    const conv = qlora(['convert', MODEL, '-o', 'm.gguf', '--dtype', 'f32'], cwd);
    assert.equal(conv.status, 0, conv.stderr);
    assert.ok(fs.existsSync(path.join(cwd, 'm.gguf')));
    const exp = qlora(['export', '-m', MODEL, '--output', 'e.gguf', '--dtype', 'f32'], cwd);
    assert.equal(exp.status, 0, exp.stderr);
    const q = qlora(['quantize', MODEL, '--output', 'q'], cwd);
    assert.equal(q.status, 0, q.stderr);
    assert.ok(fs.existsSync(path.join(cwd, 'q', 'config.json')));
    const inspect = qlora(['data', 'inspect', TEXT, '-m', MODEL, '--show', '0'], cwd);
    assert.equal(inspect.status, 0, inspect.stderr);
    assert.match(inspect.stdout, /max length\s+512 tokens/);
    // The dataset as train names it (-d) gives the same report; no dataset is one clear line.
    const viaFlag = qlora(['data', 'inspect', '-d', TEXT, '-m', MODEL, '--show', '0'], cwd);
    assert.equal(viaFlag.status, 0, viaFlag.stderr);
    assert.equal(viaFlag.stdout, inspect.stdout);
    const none = qlora(['data', 'inspect', '-m', MODEL], cwd);
    assert.notEqual(none.status, 0);
    assert.match(none.stderr, /which dataset\?/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
