// `qlora train` as a user runs it (one node process, so signals reach the CLI itself): the embedded demo end to end, a YAML config with flags on top,
// and Ctrl-C during training leaving a checkpoint that --resume continues from.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
/** tsx's loader by URL, so child processes running in other folders find it. */
const TSX = import.meta.resolve('tsx');

function qlora(args: string[], cwd: string) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
  });
}

test('qlora train with no model or data runs the bundled demo and prints samples before and after', () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-cli-'));
  try {
    const r = qlora(['train', '--max-steps', '12', '--eval-every', '6'], cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /running the demo/);
    assert.match(r.stderr, /--- sample before training ---\nROMEO:/);
    assert.match(r.stderr, /--- sample after training ---\nROMEO:/);
    assert.match(r.stderr, /eval @ step 6: loss \d+\.\d+/);
    assert.match(r.stderr, /done \(max steps\): 12 steps/);
    const out = path.join(cwd, 'qlora-demo-output');
    for (const f of [
      'adapter_model.safetensors',
      'adapter_config.json',
      'metrics.jsonl',
      'loss.svg',
      'checkpoint-12',
    ]) {
      assert.ok(fs.existsSync(path.join(out, f)), `${f} missing`);
    }
    const lines = fs
      .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(lines.filter((l) => 'loss' in l).length, 12);
    assert.deepEqual(
      lines.filter((l) => 'eval_loss' in l).map((l) => l.step),
      [0, 6, 12],
    );
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('settings come from run.yaml, flags override it, and a bad value names the setting', () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-cli-'));
  try {
    fs.writeFileSync(
      path.join(cwd, 'run.yaml'),
      [
        `model: ${path.join(root, 'fixtures', 'stories260K', 'stories260K.bin')}`,
        `data: ${path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt')}`,
        'output: out',
        'max_steps: 50',
        'seq-len: 64',
        'batch_size: 2',
        'rank: 2',
        'eval_every: 0',
        'save_every: 0',
      ].join('\n'),
    );
    const r = qlora(['train', '--config', 'run.yaml', '--max-steps', '3'], cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /training: 3 steps × 1 × 2 × 64 tokens/);
    assert.equal(
      JSON.parse(fs.readFileSync(path.join(cwd, 'out', 'adapter_config.json'), 'utf8')).r,
      2,
    );
    fs.appendFileSync(path.join(cwd, 'run.yaml'), '\nlearning_rate_typo: 3\n');
    const bad = qlora(['train', '--config', 'run.yaml'], cwd);
    assert.notEqual(bad.status, 0);
    assert.match(
      bad.stderr,
      /run\.yaml: unknown setting 'learning_rate_typo' \(did you mean 'learning_rate'\?\)/,
    );
    const badFlag = qlora(['train', '--rank', 'x'], cwd);
    assert.notEqual(badFlag.status, 0);
    assert.match(badFlag.stderr, /--rank must be an integer/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test('Ctrl-C during training writes a resumable checkpoint and exits cleanly', async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-cli-'));
  try {
    const child = spawn(
      process.execPath,
      [
        '--import',
        TSX,
        cli,
        'train',
        '--max-steps',
        '5000',
        '--eval-every',
        '0',
        '--save-every',
        '0',
      ],
      { cwd, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    let sent = false;
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      stderr += d;
      if (!sent && /step \d+\/5000/.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000); // never leave a runaway child behind
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    assert.ok(sent, `training never reported a step:\n${stderr}`);
    assert.equal(code, 130, stderr);
    assert.match(stderr, /done \(interrupt\)/);
    const out = path.join(cwd, 'qlora-demo-output');
    const ckpt = fs.readdirSync(out).find((f) => /^checkpoint-\d+$/.test(f));
    assert.ok(ckpt, 'a checkpoint was written');
    const step = Number(ckpt.split('-')[1]);
    assert.ok(step >= 1 && step < 5000);
    // Resume, with a new end point two steps later.
    const resumed = qlora(
      [
        'train',
        '--max-steps',
        String(step + 2),
        '--eval-every',
        '0',
        '--save-every',
        '0',
        '--resume',
      ],
      cwd,
    );
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stderr, new RegExp(`resumed from .*checkpoint-${step} at step ${step}`));
    assert.match(resumed.stderr, new RegExp(`done \\(max steps\\): ${step + 2} steps`));
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
