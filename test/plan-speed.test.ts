// The speed plan (issue 17.2): the kernels of one real training step, recorded on the counting
// backend, timed on the run's backend, with the timings kept per machine and build.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { configFromHf } from '../src/io/config.js';
import { KernelTimes } from '../src/train/kernel-times.js';
import { kernelSignature, timeKernel } from '../src/train/plan-kernels.js';
import {
  measureTrainingMemory,
  PLAN_DEFAULTS,
  type PlanOptions,
  planTraining,
  predictSpeed,
  type SpeedPlan,
} from '../src/train/plan.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

const TINY = configFromHf({
  model_type: 'llama',
  hidden_size: 64,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  intermediate_size: 176,
  vocab_size: 1000,
  max_position_embeddings: 256,
  tie_word_embeddings: false,
});

const OPTIONS: PlanOptions = { ...PLAN_DEFAULTS, seqLen: 64, batchSize: 2, lossChunkRows: 48 };

function counts(ops: readonly { op: string }[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const { op } of ops) c[op] = (c[op] ?? 0) + 1;
  return c;
}

test("the step's kernel inventory is the Trainer's: projections, recomputation, loss chunks, optimizer", async () => {
  const layers = TINY.numLayers;
  for (const gradientCheckpointing of [false, true]) {
    const m = await measureTrainingMemory(TINY, { ...OPTIONS, gradientCheckpointing });
    const c = counts(m.stepKernels);
    const passes = gradientCheckpointing ? 2 : 1; // the forward again before each layer's backward
    assert.equal(c['matmul4bit'], layers * 7 * passes, 'every projection, once per forward pass');
    assert.equal(c['attention'], layers * passes);
    assert.equal(c['attentionBackward'], layers);
    // 128 tokens in loss chunks of 48 rows.
    assert.equal(c['crossEntropy'], Math.ceil(128 / 48));
    assert.equal(c['adamw'], 2 * 7 * layers, 'A and B of every adapted projection');
    assert.equal(m.stepTokens, 128);
    // Arguments by shape: the q projection's forward reads [tokens, hidden].
    const q = m.stepKernels.find((k) => k.op === 'matmul4bit');
    assert.deepEqual(q?.args[0], { tensor: [128, 64], dtype: 'f32' });
  }
  // 8-bit AdamW on the tensors of at least 4096 elements (A is [64, 64] at rank 64), as bitsandbytes.
  const eightBit = counts(
    (await measureTrainingMemory(TINY, { ...OPTIONS, rank: 64, optimizer: 'adamw8bit' }))
      .stepKernels,
  );
  assert.ok((eightBit['adamw8bit'] ?? 0) > 0);
  assert.equal((eightBit['adamw8bit'] ?? 0) + (eightBit['adamw'] ?? 0), 2 * 7 * layers);
  // Nothing trained, nothing to time.
  assert.equal((await measureTrainingMemory(TINY, { ...OPTIONS, rank: 0 })).stepKernels.length, 0);
});

test('a step takes the sum of its calls: timings given, nothing is timed and the arithmetic is exact', async () => {
  const be = await getBackend('cpu');
  const m = await measureTrainingMemory(TINY, OPTIONS);
  const times = KernelTimes.inMemory();
  // Every distinct call "takes" 1 ms except the 4-bit matmuls, 3 ms.
  for (const call of m.stepKernels)
    times.set(kernelSignature(call), call.op === 'matmul4bit' ? 3e-3 : 1e-3);
  const s = (await predictSpeed(TINY, OPTIONS, m, be, {
    times,
  })) as SpeedPlan;
  const quantized = m.stepKernels.filter((k) => k.op === 'matmul4bit').length;
  // Plus the JavaScript the recorded step ran between its kernels (measured, so above zero).
  assert.ok(m.stepHostSeconds > 0, `${m.stepHostSeconds}`);
  assert.equal(s.hostSeconds, m.stepHostSeconds);
  const expected = quantized * 3e-3 + (m.stepKernels.length - quantized) * 1e-3 + m.stepHostSeconds;
  assert.ok(Math.abs(s.stepSeconds - expected) < 1e-12, `${s.stepSeconds} vs ${expected}`);
  assert.ok(Math.abs(s.tokensPerSecond / (128 / expected) - 1) < 1e-9, `${s.tokensPerSecond}`);
  assert.equal(s.kernels.timedNow, 0);
  assert.equal(s.kernels.calls, m.stepKernels.length);
  assert.ok(s.kernels.distinct < s.kernels.calls, "a layer's calls repeat in every layer");
  const split = Object.fromEntries(s.split.map((k) => [k.kind, k.seconds]));
  assert.ok(
    Math.abs(
      split['4-bit matmuls']! -
        quantized * 3e-3 -
        counts(m.stepKernels)['matmul4bitInputGrad']! * 1e-3,
    ) < 1e-12,
    JSON.stringify(split),
  );
  assert.equal(s.split.reduce((a, k) => a + k.seconds, 0).toFixed(12), s.stepSeconds.toFixed(12));
  // The optimizer's step and learning rate do not make a new call: one signature per parameter shape.
  const adam = m.stepKernels.filter((k) => k.op === 'adamw');
  const shapes = new Set(adam.map((k) => JSON.stringify(k.args[0])));
  assert.equal(new Set(adam.map(kernelSignature)).size, shapes.size);
  assert.ok(shapes.size < adam.length);
});

test('on the cpu backend the kernels are timed once and the timings kept in the cache folder', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-kt-'));
  try {
    const be = await getBackend('cpu');
    const facts = { cpu: 'test', backend: be.describe?.() ?? be.name };
    const first = await planTraining(TINY, OPTIONS, {
      backend: be,
      times: KernelTimes.open(facts, dir),
    });
    const s1 = first.speed as SpeedPlan;
    assert.ok(Number.isFinite(s1.tokensPerSecond) && s1.tokensPerSecond > 0);
    assert.equal(s1.kernels.timedNow, s1.kernels.distinct);
    assert.ok(s1.peakFlops !== null && s1.peakFlops > 0, 'the cpu backend measures its FMA peak');
    assert.ok(s1.mfu !== null && s1.mfu > 0);
    const files = fs.readdirSync(dir);
    assert.equal(files.length, 1);
    assert.match(files[0]!, /^kernel-times-[0-9a-f]{16}\.json$/);
    // A new process's view of the same folder: nothing timed again, the same prediction.
    const second = await planTraining(TINY, OPTIONS, {
      backend: be,
      times: KernelTimes.open(facts, dir),
    });
    const s2 = second.speed as SpeedPlan;
    assert.equal(s2.kernels.timedNow, 0);
    // The kernels' part is read back; the host part is measured with each plan.
    const kernels = (s: SpeedPlan) => s.stepSeconds - s.hostSeconds;
    assert.ok(Math.abs(kernels(s2) - kernels(s1)) < 1e-12, `${kernels(s2)} vs ${kernels(s1)}`);
    // Another build (or machine) is another file.
    const other = KernelTimes.open({ ...facts, build: 'rebuilt' }, dir);
    assert.equal(other.size, 0);
    // Timings taken on a busier machine than now are taken again; a broken file is an empty cache.
    const file = path.join(dir, files[0]!);
    const json = JSON.parse(fs.readFileSync(file, 'utf8')) as {
      entries: Record<string, { seconds: number; load: number | null }>;
    };
    const [sig] = Object.keys(json.entries);
    json.entries[sig!]!.load = 1e6;
    fs.writeFileSync(file, JSON.stringify(json));
    assert.equal(KernelTimes.open(facts, dir).get(sig!), undefined);
    fs.writeFileSync(file, '{"version": 1, "entries": [not json');
    const broken = KernelTimes.open(facts, dir);
    assert.equal(broken.size, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('timeKernel runs a recorded call on zero tensors of its shapes (4-bit weights and options too)', async () => {
  const be = await getBackend('cpu');
  const m = await measureTrainingMemory(TINY, OPTIONS);
  for (const op of ['matmul4bitInputGrad', 'attentionBackward', 'crossEntropy', 'rope', 'adamw']) {
    const call = m.stepKernels.find((k) => k.op === op);
    assert.ok(call, op);
    const seconds = await timeKernel(be, call);
    assert.ok(Number.isFinite(seconds) && seconds > 0, `${op}: ${seconds}`);
  }
  const before = be.memoryStats().allocatedBytes;
  await timeKernel(
    be,
    m.stepKernels.find((k) => k.op === 'matmul4bit')!,
  );
  assert.equal(be.memoryStats().allocatedBytes, before, 'the replay frees what it allocates');
});

test('timeKernel cycles through copies of the arguments, as a step reaches tensors not hot in cache', async () => {
  const be = await getBackend('cpu');
  const m = await measureTrainingMemory(TINY, OPTIONS);
  const call = m.stepKernels.find((k) => k.op === 'rmsnorm')!;
  // Which input tensors the timed runs received (the backend's own method, observed from outside).
  const seen = new Set<unknown>();
  const target = be as unknown as Record<string, (...a: unknown[]) => unknown>;
  const original = target['rmsnorm']!;
  const own = Object.prototype.hasOwnProperty.call(be, 'rmsnorm');
  target['rmsnorm'] = (...args: unknown[]) => {
    seen.add(args[0]);
    return original.apply(be, args);
  };
  try {
    await timeKernel(be, call);
  } finally {
    if (own) target['rmsnorm'] = original;
    else delete target['rmsnorm'];
  }
  assert.equal(target['rmsnorm'], original);
  // A small call: eight copies (the arguments are far below the 256 MiB the copies may hold).
  assert.equal(seen.size, 8);
});

test('qlora plan prints the speed timed on the run backend; without a backend it says so', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-kt-'));
  try {
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        path.join(root, 'src', 'cli', 'run.ts'),
        'plan',
        '-m',
        path.join(root, 'fixtures', 'stories260K', 'stories260K.bin'),
        '--seq-len',
        '64',
        '--backend',
        'cpu',
      ],
      { cwd: root, encoding: 'utf8', env: { ...process.env, QLORA_CACHE_DIR: dir } },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /predicted speed +\d+ tok\/s .*FMA peak; this step's \d+ distinct kernels timed on native addon/,
    );
    assert.equal(fs.readdirSync(dir).length, 1, 'the timings were kept');
    const none = await planTraining(TINY, OPTIONS);
    assert.deepEqual(none.speed, { unmeasured: 'no backend to time the kernels on' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
