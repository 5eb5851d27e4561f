// Gemma 2 and Gemma 3 against Hugging Face transformers: fixtures/gemma/<name>/ holds a tiny random
// checkpoint written by transformers itself and the logits transformers computed for it
// (scripts/gemma-reference.py; provenance in each reference.json). Our forward must reproduce them
// from the HF folder, on every backend. The fixtures keep each family's structure: (1 + w) norms,
// pre/post norms, GeGLU, sqrt(hidden) embedding scale, tied embeddings, sliding/global layers with
// a window shorter than the sequence, soft-caps (Gemma 2), q/k norms, two rope bases and linear
// scaling on global layers only (Gemma 3), query_pre_attn_scalar ≠ head_dim (Gemma 2).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { configFromHf, configToHf } from '../src/io/config.js';
import { buildLlama, LORA_DEFAULTS, type LoraConfig } from '../src/models/build.js';
import { savePeftAdapter } from '../src/io/peft.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { train } from '../src/train/run.js';
import type { Backend } from '../src/tensor/backend.js';
import { backendsUnderTest } from './backends-under-test.js';
import { allLogits, fixtureCopy, GEMMA_FIXTURES, gemmaFixture } from './gemma-support.js';

const CONFIGS = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'fixtures',
  'model-configs',
);

async function backends(): Promise<{ name: string; be: Backend }[]> {
  return [{ name: 'ref', be: await getBackend('ref') }, ...(await backendsUnderTest())];
}

for (const name of GEMMA_FIXTURES) {
  test(`${name}: logits equal transformers' on every backend (HF folder)`, async () => {
    const { dir, ref } = gemmaFixture(name);
    const ckpt = openCheckpoint(dir);
    try {
      assert.equal(ckpt.config.architecture, name.startsWith('gemma2') ? 'gemma2' : 'gemma3');
      const vocab = ckpt.config.vocabSize;
      const want = ref.logits.flat();
      let maxAbs = 0;
      for (const w of want) maxAbs = Math.max(maxAbs, Math.abs(w));
      for (const { name: beName, be } of await backends()) {
        const model = await buildLlama(ckpt.config, ckpt, { backend: be });
        try {
          const got = await allLogits(model, ref.input_ids);
          assert.equal(got.length, ref.input_ids.length * vocab);
          let worst = 0;
          for (let i = 0; i < got.length; i++)
            worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
          console.log(
            `# ${name} ${beName}: max |logit - transformers| = ${worst.toExponential(2)} (|logit| ≤ ${maxAbs.toFixed(1)})`,
          );
          assert.ok(worst < 1e-4, `${name} on ${beName}: logits differ by ${worst}`);
        } finally {
          model.dispose();
        }
      }
    } finally {
      ckpt.close();
    }
  });
}

test('PEFT adapter key names of Gemma 2 and Gemma 3 are the ones HF PEFT writes (all linear projections)', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-gemma-peft-'));
  try {
    for (const name of GEMMA_FIXTURES) {
      const { dir, ref } = gemmaFixture(name);
      const ckpt = openCheckpoint(dir);
      const lora: LoraConfig = { ...LORA_DEFAULTS, r: 2, alpha: 4 };
      const model = await buildLlama(ckpt.config, ckpt, { backend: await getBackend('cpu'), lora });
      try {
        const out = path.join(tmp, name);
        await savePeftAdapter(out, model, lora, null);
        const file = SafetensorsFile.open(path.join(out, 'adapter_model.safetensors'));
        try {
          assert.deepEqual([...file.tensors.keys()].sort(), ref.peft_keys, `${name}: PEFT keys`);
        } finally {
          file.close();
        }
      } finally {
        model.dispose();
        ckpt.close();
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

for (const name of GEMMA_FIXTURES) {
  test(`${name}: a short QLoRA run (train(): NF4 base, LoRA on every projection) lowers the eval loss`, async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-gemma-train-'));
    try {
      const dir = fixtureCopy(tmp, name);
      const phrase = 'the cat sat on the mat. ';
      const rows = Array.from({ length: 24 }, (_, i) => ({ text: phrase.repeat(2 + (i % 3)) }));
      const evals: number[] = [];
      const result = await train({
        model: dir,
        data: { train: rows, valid: rows.slice(0, 4) },
        output: path.join(tmp, 'out'),
        backend: 'cpu',
        maxSteps: 24,
        seqLen: 32,
        batchSize: 2,
        lr: 1e-2,
        warmupSteps: 0,
        evalEvery: 8,
        evalBatches: 2,
        saveEvery: 0,
        onEval: (m) => evals.push(m.evalLoss),
      });
      assert.ok(evals.length >= 3, `evaluations: ${evals.length}`);
      console.log(`# ${name}: eval loss ${evals.map((e) => e.toFixed(3)).join(' → ')}`);
      assert.ok(
        evals.at(-1)! < 0.8 * evals[0]!,
        `${name}: eval loss did not fall (${evals.join(', ')})`,
      );
      assert.ok(fs.existsSync(result.adapterPath));
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
}

test("the real configs (gemma-2-2b, gemma-3-1b) and transformers v5's spelling normalize to Gemma's settings", () => {
  const read = (f: string): Record<string, unknown> =>
    JSON.parse(fs.readFileSync(path.join(CONFIGS, f), 'utf8')) as Record<string, unknown>;
  const g2 = configFromHf(read('gemma-2-2b.json'));
  assert.equal(g2.architecture, 'gemma2');
  assert.deepEqual(
    [g2.hiddenSize, g2.numLayers, g2.numHeads, g2.numKvHeads, g2.headDim, g2.vocabSize],
    [2304, 26, 8, 4, 256, 256000],
  );
  assert.deepEqual(
    g2.slidingLayers,
    Array.from({ length: 26 }, (_, i) => i % 2 === 0),
  );
  assert.deepEqual(
    [g2.slidingWindow, g2.attnLogitSoftcap, g2.finalLogitSoftcap, g2.queryPreAttnScalar],
    [4096, 50, 30, 256],
  );
  assert.equal(g2.tieWordEmbeddings, true);
  const g3 = configFromHf(read('gemma-3-1b.json'));
  assert.equal(g3.architecture, 'gemma3');
  assert.deepEqual(
    g3.slidingLayers,
    Array.from({ length: 26 }, (_, i) => (i + 1) % 6 !== 0),
  );
  assert.deepEqual(
    [g3.slidingWindow, g3.ropeTheta, g3.ropeLocalTheta, g3.attnLogitSoftcap, g3.finalLogitSoftcap],
    [512, 1e6, 1e4, null, null],
  );
  // transformers v5 writes layer_types and per-type rope_parameters instead.
  const v5 = configFromHf({
    ...read('gemma-3-1b.json'),
    num_hidden_layers: 3,
    rope_theta: undefined,
    rope_local_base_freq: undefined,
    sliding_window_pattern: undefined,
    layer_types: ['sliding_attention', 'full_attention', 'sliding_attention'],
    rope_parameters: {
      sliding_attention: { rope_type: 'default', rope_theta: 20000 },
      full_attention: { rope_type: 'linear', factor: 8, rope_theta: 500000 },
    },
  });
  assert.deepEqual(v5.slidingLayers, [true, false, true]);
  assert.deepEqual([v5.ropeTheta, v5.ropeLocalTheta], [500000, 20000]);
  assert.deepEqual(v5.ropeScaling, { ropeType: 'linear', factor: 8 });
  assert.throws(
    () => configFromHf({ ...read('gemma-2-2b.json'), hidden_activation: 'gelu' }),
    /hidden_activation 'gelu' is not supported by gemma2 here \(only gelu_pytorch_tanh\)/,
  );
  // Written back, the HF config reads as the same model.
  assert.deepEqual(configFromHf(configToHf(g3)), g3);
  assert.deepEqual(configFromHf(configToHf(g2)), g2);
});
