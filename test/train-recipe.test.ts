// The output folder records the recipe: a resolved config.yaml that `qlora train --config` reads
// back to the same settings (and the same adapter), a model card, and the base model's name (not a
// local path) in adapter_config.json.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { trainConfigYaml } from '../src/cli/recipe.js';
import { modelName } from '../src/io/model-name.js';
import { readConfigFile, resolveTrainConfig } from '../src/cli/train-config.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'viggo', 'train.csv');

function qlora(args: string[], cwd: string) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
  });
}

test('config.yaml round trip: every resolved setting reads back the same', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-recipe-'));
  try {
    const config = resolveTrainConfig(
      {
        model: MODEL,
        data: DATA,
        output: path.join(dir, 'out'),
        epochs: 2.5,
        lr: 1e-3,
        schedule: 'linear',
        rank: 4,
        alpha: 8,
        targets: ['q_proj', 'v_proj'],
        layers: [0, 2],
        rslora: true,
        batchSize: 3,
        seqLen: 96,
        packing: false,
        columns: 'prompt=mr,completion=ref',
        template: 'Meaning: {mr}\n"Sentence": ',
        loadBest: true,
        quant: 'fp4',
        doubleQuant: false,
        samplePrompt: 'inform(',
        resume: true,
        overwrite: true,
      },
      'test',
    );
    fs.writeFileSync(path.join(dir, 'config.yaml'), trainConfigYaml(config));
    const file = readConfigFile(path.join(dir, 'config.yaml'));
    const back = resolveTrainConfig(file.values, 'config.yaml', file.keys);
    // resume/overwrite steer one invocation; they are not part of the recipe.
    assert.deepEqual(back, { ...config, resume: false, overwrite: false });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the base model is named by its Hub id when its config.json has one, else by its folder or file name', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-name-'));
  try {
    const hub = path.join(dir, 'snapshot-123');
    fs.mkdirSync(hub);
    fs.writeFileSync(
      path.join(hub, 'config.json'),
      JSON.stringify({ _name_or_path: 'TinyLlama/TinyLlama-1.1B-Chat-v1.0' }),
    );
    assert.equal(modelName(hub), 'TinyLlama/TinyLlama-1.1B-Chat-v1.0');
    const local = path.join(dir, 'my-llama');
    fs.mkdirSync(local);
    fs.writeFileSync(
      path.join(local, 'config.json'),
      JSON.stringify({ _name_or_path: '/home/someone/models/llama' }),
    );
    assert.equal(modelName(local), 'my-llama', 'a local path in _name_or_path is not a name');
    assert.equal(modelName(MODEL), 'stories260K');
    assert.equal(modelName('/models/tinyllama-q8_0.gguf'), 'tinyllama-q8_0');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a run writes config.yaml and a model card; --config config.yaml reproduces the adapter bit for bit', () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-recipe-'));
  try {
    const r1 = qlora(
      [
        'train',
        '-m',
        MODEL,
        '-d',
        DATA,
        '--columns',
        'prompt=mr,completion=ref',
        '--seq-len',
        '128',
        '-b',
        '2',
        '-r',
        '2',
        '--lr',
        '0.001',
        '--max-steps',
        '3',
        '--eval-every',
        '0',
        '--save-every',
        '0',
        '--eval-batches',
        '1',
        '-o',
        'out',
      ],
      cwd,
    );
    assert.equal(r1.status, 0, r1.stderr);
    const out = path.join(cwd, 'out');
    const adapterConfig = JSON.parse(
      fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'),
    );
    assert.equal(
      adapterConfig.base_model_name_or_path,
      'stories260K',
      'a name, not a path on this machine',
    );
    const card = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
    assert.match(card, /^---\nbase_model: "stories260K"\nlibrary_name: peft\n/);
    assert.match(card, /\| training \| 3 steps, 2 × 128 tokens/);
    assert.match(
      card,
      /\| data \| train\.csv \(completion format, \d+ training examples, \d+ validation\)/,
    );
    assert.match(card, /\| eval loss \| \d+\.\d{4} at step 3 \|/);
    for (const use of [
      'qlora generate -m',
      'PeftModel.from_pretrained',
      'llama-cli -m base.gguf --lora adapter.gguf',
    ])
      assert.ok(card.includes(use), use);

    const r2 = qlora(['train', '--config', 'out/config.yaml', '-o', 'again'], cwd);
    assert.equal(r2.status, 0, r2.stderr);
    assert.deepEqual(
      fs.readFileSync(path.join(cwd, 'again', 'adapter_model.safetensors')),
      fs.readFileSync(path.join(out, 'adapter_model.safetensors')),
    );
    const yaml1 = fs.readFileSync(path.join(out, 'config.yaml'), 'utf8');
    const yaml2 = fs.readFileSync(path.join(cwd, 'again', 'config.yaml'), 'utf8');
    assert.equal(yaml2, yaml1.replace(`output: ${out}`, `output: ${path.join(cwd, 'again')}`));

    // Tools that need the base find it through config.yaml, not adapter_config.json.
    const ex = qlora(['export', '-a', 'out', '--format', 'gguf-lora', '-o', 'adapter.gguf'], cwd);
    assert.equal(ex.status, 0, ex.stderr);
    assert.ok(fs.statSync(path.join(cwd, 'adapter.gguf')).size > 0);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
