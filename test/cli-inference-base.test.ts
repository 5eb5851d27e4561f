// Inference runs on the base the adapter was trained on (issue 10.2): training records the 4-bit base
// in qlora_config.json beside the PEFT files, and generate / eval / export use it unless told otherwise.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');

function qlora(args: string[], cwd: string) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
  });
}

/** The keys PEFT's LoraConfig has accepted since its early releases: adapter_config.json must not grow others. */
const PEFT_KEYS = new Set([
  'alpha_pattern',
  'auto_mapping',
  'base_model_name_or_path',
  'bias',
  'fan_in_fan_out',
  'inference_mode',
  'init_lora_weights',
  'layers_pattern',
  'layers_to_transform',
  'lora_alpha',
  'lora_dropout',
  'modules_to_save',
  'peft_type',
  'r',
  'rank_pattern',
  'revision',
  'target_modules',
  'task_type',
  'use_rslora',
]);

test("generate -a <out> -t 0 prints the demo's after-training sample; eval and export use the recorded NF4 base", () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-base-'));
  try {
    // 24 steps is enough for the adapter's greedy text on the NF4 base to differ from the f32 base's.
    const train = qlora(
      ['train', '--max-steps', '24', '--eval-every', '0', '--sample-tokens', '48'],
      cwd,
    );
    assert.equal(train.status, 0, train.stderr);
    const marker = '--- sample after training ---\n';
    const from = train.stderr.indexOf(marker) + marker.length;
    const sample = train.stderr.slice(from, train.stderr.indexOf('\n\ndone (', from));
    assert.match(sample, /^ROMEO:/);
    const out = path.join(cwd, 'qlora-demo-output');

    const recipe = JSON.parse(fs.readFileSync(path.join(out, 'qlora_config.json'), 'utf8'));
    assert.deepEqual(recipe.quantization_config, {
      quant_method: 'bitsandbytes',
      load_in_4bit: true,
      bnb_4bit_quant_type: 'nf4',
      bnb_4bit_use_double_quant: true,
      blocksize: 64,
      quantize_lm_head: false,
      quantize_embeddings: false,
    });
    for (const dir of [out, path.join(out, 'checkpoint-24')]) {
      assert.ok(fs.existsSync(path.join(dir, 'qlora_config.json')), `${dir} has the recipe`);
      const keys = Object.keys(
        JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')),
      );
      assert.deepEqual(
        keys.filter((k) => !PEFT_KEYS.has(k)),
        [],
        'adapter_config.json keeps to keys PEFT loads',
      );
    }

    // No --model: the adapter names its base; no --quant: the base it was trained on, said in one line.
    const gen = qlora(
      ['generate', '-a', 'qlora-demo-output', '-p', 'ROMEO:', '-t', '0', '-n', '48'],
      cwd,
    );
    assert.equal(gen.status, 0, gen.stderr);
    assert.equal(gen.stdout, `${sample}\n`);
    assert.match(
      gen.stderr,
      /^base: NF4, block 64, double quant, as the adapter was trained \(.*qlora_config\.json\)/m,
    );
    // Asked for the full-precision base, it says the adapter was trained on another and the text changes.
    const f32 = qlora(
      [
        'generate',
        '-a',
        'qlora-demo-output',
        '-p',
        'ROMEO:',
        '-t',
        '0',
        '-n',
        '48',
        '--quant',
        'none',
      ],
      cwd,
    );
    assert.equal(f32.status, 0, f32.stderr);
    assert.notEqual(f32.stdout, gen.stdout);
    assert.match(
      f32.stderr,
      /base: full precision \(f32\) as asked, but the adapter was trained on NF4/,
    );

    const evalNf4 = qlora(
      ['eval', '-a', 'qlora-demo-output', '-d', DATA, '--seq-len', '128', '--json'],
      cwd,
    );
    assert.equal(evalNf4.status, 0, evalNf4.stderr);
    assert.match(evalNf4.stderr, /base: NF4, block 64, double quant, as the adapter was trained/);
    const evalOld = qlora(
      [
        'eval',
        '-a',
        'qlora-demo-output',
        '-d',
        DATA,
        '--seq-len',
        '128',
        '--json',
        '--quantize',
        'none',
      ],
      cwd,
    );
    assert.equal(evalOld.status, 0, evalOld.stderr);
    assert.notEqual(JSON.parse(evalNf4.stdout).loss, JSON.parse(evalOld.stdout).loss);

    // A merged GGUF export folds the adapter into the same NF4 base: its greedy text is the adapter's
    // computed in f32 (a merged f32 model has no 4-bit matmuls, so it never computes in bf16 as the
    // adapter's NF4 base does by default on a CPU with AVX512_BF16).
    const exp = qlora(
      ['export', '-a', 'qlora-demo-output', '--dtype', 'f32', '-o', 'merged.gguf'],
      cwd,
    );
    assert.equal(exp.status, 0, exp.stderr);
    assert.match(exp.stderr, /base: NF4, block 64, double quant, as the adapter was trained/);
    const merged = qlora(
      ['generate', '-m', 'merged.gguf', '-p', 'ROMEO:', '-t', '0', '-n', '48'],
      cwd,
    );
    assert.equal(merged.status, 0, merged.stderr);
    const adapterF32 = qlora(
      [
        'generate',
        '-a',
        'qlora-demo-output',
        '-p',
        'ROMEO:',
        '-t',
        '0',
        '-n',
        '48',
        '--compute-dtype',
        'f32',
      ],
      cwd,
    );
    assert.equal(adapterF32.status, 0, adapterF32.stderr);
    assert.equal(merged.stdout, adapterF32.stdout);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
