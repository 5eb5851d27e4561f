// LoRA rank against the model (issue 11.6): a rank above both dimensions of every targeted
// projection is refused before anything is allocated; a rank above min(in, out) of a projection is
// a warning naming it (its update cannot have more than min(in, out) independent directions).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { type BuildConfig, buildLlama, type LoraConfig } from '../src/models/build.js';
import { PROJECTIONS } from '../src/models/llama.js';
import { checkLoraRank } from '../src/models/lora-rank.js';
import { syntheticSource } from '../src/models/synthetic.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');

// q/o [16×16], k/v [8×16], gate/up [40×16], down [16×40].
const config: BuildConfig = {
  vocabSize: 32,
  hiddenSize: 16,
  intermediateSize: 40,
  numLayers: 2,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 8,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 64,
  tieWordEmbeddings: true,
  attentionBias: false,
};
const all = new Set(PROJECTIONS);

test('checkLoraRank: silent up to min(in, out), warns past it naming the projections, refuses past every dimension', () => {
  assert.deepEqual(checkLoraRank(config, 8, all), []);
  const [warning, ...rest] = checkLoraRank(config, 9, all);
  assert.deepEqual(rest, []);
  assert.match(warning!, /LoRA rank 9 exceeds min\(in, out\) of k_proj \[8×16\], v_proj \[8×16\]:/);
  assert.doesNotMatch(warning!, /q_proj/);
  assert.match(checkLoraRank(config, 17, all)[0]!, /q_proj \[16×16\].*down_proj \[16×40\]/);
  // 40 is still a dimension of gate/up/down: a warning, not an error.
  assert.equal(checkLoraRank(config, 40, all).length, 1);
  assert.throws(
    () => checkLoraRank(config, 41, all),
    /LoRA rank 41 is larger than every dimension of the projections it adapts \(the largest is 40\).*use a rank ≤ 16/,
  );
  // Only the targeted projections count.
  assert.throws(
    () => checkLoraRank(config, 17, new Set(['q_proj', 'k_proj'] as const)),
    /the largest is 16/,
  );
  assert.throws(() => checkLoraRank(config, 0, all), /positive integer, got 0/);
  assert.throws(() => checkLoraRank(config, 2.5, all), /positive integer, got 2.5/);
});

test('buildLlama refuses an absurd rank before allocating anything', async () => {
  const be = await getBackend('ref');
  const lora: LoraConfig = {
    r: 100_000,
    alpha: 16,
    dropout: 0,
    useRslora: false,
    init: 'kaiming',
    seed: 0,
    targets: 'all-linear',
    layers: null,
  };
  const before = be.memoryStats().allocatedBytes;
  await assert.rejects(
    buildLlama(config, syntheticSource(config, 1), { backend: be, lora }),
    /LoRA rank 100000 is larger than every dimension/,
  );
  assert.equal(be.memoryStats().allocatedBytes, before, 'nothing was allocated');
  // A rank past min(in, out) still builds (the CLI prints the warning).
  const model = await buildLlama(config, syntheticSource(config, 1), {
    backend: be,
    lora: { ...lora, r: 17 },
  });
  // Every projection of the (Llama) family: q, k, v, o, gate, up, down.
  assert.equal(model.loraLayers().length, 2 * 7);
  model.dispose();
});

test('qlora train: --rank past every dimension exits 1 before the plan; past min(in, out) it warns and trains', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-rank-'));
  try {
    const run = (rank: number) =>
      spawnSync(
        process.execPath,
        [
          '--import',
          TSX,
          cli,
          'train',
          '--output',
          path.join(dir, `r${rank}`),
          '--rank',
          String(rank),
          '--max-steps',
          '1',
          '--seq-len',
          '32',
          '--batch-size',
          '1',
          '--eval-every',
          '0',
        ],
        { cwd: dir, encoding: 'utf8', timeout: 240_000 },
      );
    const refused = run(1000);
    assert.equal(refused.status, 1, refused.stderr);
    assert.match(
      refused.stderr,
      /LoRA rank 1000 is larger than every dimension of the projections it adapts \(the largest is 172\)/,
    );
    assert.doesNotMatch(refused.stderr, /predicted peak/, 'refused before the memory plan');
    assert.ok(!fs.existsSync(path.join(dir, 'r1000', 'adapter_model.safetensors')));
    const warned = run(65);
    assert.equal(warned.status, 0, warned.stderr);
    assert.match(
      warned.stderr,
      /warning: LoRA rank 65 exceeds min\(in, out\) of q_proj \[64×64\], k_proj \[32×64\]/,
    );
    assert.ok(fs.existsSync(path.join(dir, 'r65', 'adapter_model.safetensors')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
