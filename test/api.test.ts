// The library API through its public entry point: the README's example runs as written (so the
// README cannot drift from the code), train() fills in `qlora train`'s defaults and takes a loaded
// model and in-memory rows, and a Trainer runs on defaultTrainOptions and Batcher.source().
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolveTrainConfig } from '../src/cli/train-config.js';
import {
  Batcher,
  LORA_DEFAULTS,
  Trainer,
  defaultTrainOptions,
  defaultTrainSettings,
  generate,
  loadDataset,
  loadModel,
  loadPeftAdapter,
  train,
} from '../src/index.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');

/** The ```ts block of README.md's "The library" section. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## The library\n'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(m, 'README.md has a ```ts block under "## The library"');
  return m[1]!;
}

test('the README library example runs as written (the package name mapped to src/index.ts)', () => {
  const code = readmeExample();
  assert.match(code, /from 'qlora-ts';/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-readme-'));
  try {
    // Its paths are relative to the repository root: the fixtures are linked into a scratch folder,
    // so what it writes (out/, out-rows/) stays there.
    fs.symlinkSync(path.join(root, 'fixtures'), path.join(dir, 'fixtures'));
    const index = pathToFileURL(path.join(root, 'src', 'index.ts')).href;
    fs.writeFileSync(
      path.join(dir, 'example.mts'),
      code.replace(`from 'qlora-ts'`, `from '${index}'`),
    );
    const tsx = import.meta.resolve('tsx');
    const r = spawnSync(process.execPath, ['--import', tsx, 'example.mts'], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, QLORA_THREADS: '1' },
    });
    assert.equal(r.status, 0, `the example failed:\n${r.stderr}`);
    const out = r.stdout;
    assert.match(out, /^step 1: loss \d+\.\d{3}, \d+ tok\/s$/m);
    assert.match(out, /^step 30: loss/m);
    assert.match(out, /^eval loss \d+\.\d{3}$/m);
    assert.match(out, /^adapter: out\/adapter_model\.safetensors, eval loss \d+\.\d{3}$/m);
    for (const run of ['out', 'out-rows']) {
      for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'metrics.jsonl'])
        assert.ok(fs.existsSync(path.join(dir, run, f)), `${run}/${f}`);
    }
    // The defaults it relies on: r=16 alpha=32 on all linear layers; the loaded model's own r=8.
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.r, defaultTrainSettings().rank);
    assert.equal(cfg.lora_alpha, defaultTrainSettings().alpha);
    const rowsCfg = JSON.parse(
      fs.readFileSync(path.join(dir, 'out-rows', 'adapter_config.json'), 'utf8'),
    );
    assert.equal(rowsCfg.r, 8);
    assert.equal(rowsCfg.lora_alpha, 16);
    // The last line is the trained model's greedy continuation: generated text, not an error.
    assert.ok(out.trim().split('\n').length >= 33);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("qlora train's defaults are the library's: one source (src/train/settings.ts)", () => {
  const d = defaultTrainSettings();
  const cli = resolveTrainConfig({ model: 'm', data: 'd', output: 'o' }, 'test');
  const { model, data, output, sampleTokens, ...settings } = cli;
  assert.deepEqual([model, data, output, sampleTokens], ['m', 'd', 'o', 64]);
  assert.deepEqual(settings, d);
  // LoRA and 4-bit defaults come from the layers that own them.
  assert.equal(d.rank, LORA_DEFAULTS.r);
  assert.equal(d.alpha, LORA_DEFAULTS.alpha);
  assert.equal(d.quant, 'nf4');
  const o = defaultTrainOptions({ outputDir: 'x', maxSteps: 100 });
  assert.equal(o.lr, d.lr);
  assert.equal(o.warmupSteps, Math.ceil(100 * d.warmupRatio));
  assert.equal(o.gradAccum, d.gradAccum);
  assert.equal(o.evalEvery, d.evalEvery);
});

test('train() with a loaded model and rows: the LoRA and 4-bit settings are the model’s, given twice is an error', async () => {
  const loaded = await loadModel({
    model: MODEL,
    quantization: { quantType: 'fp4', blocksize: 128 },
    lora: { r: 4, alpha: 4, targets: ['q_proj', 'v_proj'] },
  });
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-api-'));
  try {
    await assert.rejects(
      train({ model: loaded, data: ['a b c'], output: out, rank: 8 }),
      /rank describe how the model is built; give them to loadModel\(\)/,
    );
    await assert.rejects(
      train({ model: MODEL, data: ['a'], output: out, lrr: 1 } as never),
      /train\(\): unknown setting 'lrr'/,
    );
    await assert.rejects(
      train({ model: MODEL, data: { trian: [] } as never, output: out, maxSteps: 1 }),
      /in-memory data is an array of rows or \{ train, valid\?, test\? \} \(got 'trian'\)/,
    );
    fs.rmSync(out, { recursive: true, force: true });
    const rows = (n: number, from: number) =>
      Array.from({ length: n }, (_, i) => ({
        prompt: `Count on from ${from + i}:`,
        completion: ` ${from + i + 1}, ${from + i + 2}.`,
      }));
    const steps: number[] = [];
    const evals: number[] = [];
    const r = await train({
      model: loaded,
      data: { train: rows(12, 0), valid: rows(4, 50) },
      output: out,
      maxSteps: 3,
      seqLen: 64,
      batchSize: 2,
      onStep: (m) => steps.push(m.step),
      onEval: (m) => evals.push(m.evalLoss),
    });
    assert.deepEqual(steps, [1, 2, 3]);
    assert.ok(evals.length >= 1 && evals.every(Number.isFinite));
    assert.equal(r.format, 'completion');
    assert.equal(r.trainExamples, 12);
    assert.equal(r.validExamples, 4, 'the valid rows, not a held-out share of train');
    assert.equal(r.settings.lr, defaultTrainSettings().lr);
    assert.equal(r.settings.rank, 4);
    assert.equal(r.adapterPath, path.join(out, 'adapter_model.safetensors'));
    const adapter = loadPeftAdapter(out);
    assert.equal(adapter.lora.r, 4);
    assert.equal(adapter.tensors.size, 2 * 2 * 5, 'q_proj and v_proj A/B in 5 layers');
    const recipe = JSON.parse(fs.readFileSync(path.join(out, 'qlora_config.json'), 'utf8'));
    assert.equal(recipe.quantization_config.bnb_4bit_quant_type, 'fp4');
    assert.equal(recipe.quantization_config.blocksize, 128);
    // The caller's model stays loaded and trained.
    const arena = loaded.model.backend.createArena();
    const ids = loaded.tokenizer.encode('Count on from 3:', { addSpecialTokens: true });
    const g = await generate(loaded.model, loaded.tokenizer, ids, arena, {
      maxTokens: 4,
      temperature: 0,
    });
    assert.equal(g.tokens.length, 4);
    arena.dispose();
  } finally {
    loaded.model.dispose();
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test('a Trainer on defaultTrainOptions and Batcher.source(); a model without LoRA is refused', async () => {
  const { model, tokenizer } = await loadModel({
    model: MODEL,
    quantization: { quantType: 'nf4' },
    lora: { r: 4, alpha: 8 },
  });
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-api-'));
  try {
    const data = await loadDataset(DATA, tokenizer, { maxSeqLen: 64 });
    const padId = tokenizer.eosId ?? 0;
    const batches = new Batcher(data.train, { batchSize: 4, seqLen: 64, padId, seed: 0 });
    const valid = new Batcher(data.valid, { batchSize: 4, seqLen: 64, padId, shuffle: false });
    const trainer = new Trainer(
      model,
      defaultTrainOptions({
        outputDir: out,
        maxSteps: 4,
        lr: 2e-3,
        saveEvery: 2,
        keepCheckpoints: 1,
      }),
      batches.source(),
      () => [...valid.epoch(0)].slice(0, 2),
    );
    const summary = await trainer.run();
    trainer.dispose();
    assert.equal(summary.steps, 4);
    assert.ok(summary.finalEvalLoss !== null && Number.isFinite(summary.finalEvalLoss));
    assert.equal(loadPeftAdapter(out).tensors.size, 70);
    assert.deepEqual(
      fs.readdirSync(out).filter((f) => f.startsWith('checkpoint-')),
      ['checkpoint-4'],
      'keeps the newest checkpoint only',
    );
  } finally {
    model.dispose();
    fs.rmSync(out, { recursive: true, force: true });
  }
  const base = await loadModel({ model: MODEL, quantization: { quantType: 'nf4' } });
  try {
    const t = new Trainer(
      base.model,
      defaultTrainOptions({ outputDir: out, maxSteps: 1 }),
      null!,
      null,
    );
    await assert.rejects(t.run(), /the model has no trainable \(LoRA\) parameters/);
    assert.throws(() => t.lora, /the model has no LoRA adapters to train/);
    t.dispose();
  } finally {
    base.model.dispose();
  }
});
