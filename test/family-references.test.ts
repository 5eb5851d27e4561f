// The Llama, Mistral and Qwen2 families against independent references written by Hugging Face's
// own libraries (scripts/family-reference.py; fixtures/families/NOTICE.md): our forward on the
// weights `qlora init-random --config FAMILY --tiny --seed 7` writes equals transformers' logits,
// and the adapter we save for LoRA on every linear projection has the tensor names and
// target_modules HF PEFT writes for that model. (Qwen3, Gemma and Phi-3 have their own test files.)
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { initRandomModel } from '../src/export/init-random.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { loadPeftAdapter, savePeftAdapter } from '../src/io/peft.js';
import { buildLlama, type LoraConfig } from '../src/models/build.js';
import { logitsOf, maxDiff } from './family-support.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-family-ref-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const LORA: LoraConfig = {
  r: 2,
  alpha: 3,
  dropout: 0,
  useRslora: false,
  init: 'kaiming',
  seed: 5,
  targets: 'all-linear',
  layers: null,
};

interface Reference {
  readonly config: string;
  readonly seed: number;
  readonly model_class: string;
  readonly input_ids: number[];
  readonly logits: number[][];
}

for (const family of ['llama', 'mistral', 'qwen2']) {
  const reference = JSON.parse(
    fs.readFileSync(here(`../fixtures/families/${family}-tiny.reference.json`), 'utf8'),
  ) as Reference;
  const peft = JSON.parse(
    fs.readFileSync(here(`../fixtures/families/${family}-peft-keys.json`), 'utf8'),
  ) as { target_modules: string[]; keys: string[] };

  test(`${family}: forward equals transformers ${reference.model_class}; the PEFT adapter has PEFT's names`, async () => {
    const dir = path.join(tmp, family);
    initRandomModel({ config: reference.config, output: dir, tiny: true, seed: reference.seed });
    const ours = await logitsOf(dir, reference.input_ids);
    assert.equal(ours.length, reference.input_ids.length * reference.logits[0]!.length);
    const { max, scale } = maxDiff(ours, reference.logits);
    assert.ok(scale > 0.1, 'reference logits are not all ~0');
    assert.ok(max <= 1e-4, `${family}: logits differ from transformers by ${max}`);
    console.log(`# ${family} tiny vs transformers: max |Δ logit| ${max.toExponential(2)}`);

    // The adapter: LoRA on every linear projection of the same tiny model.
    const be = await getBackend('cpu');
    const ck2 = openCheckpoint(dir);
    const withLora = await buildLlama(ck2.config, ck2, { backend: be, lora: LORA });
    ck2.close();
    const adapterDir = path.join(tmp, `${family}-adapter`);
    try {
      await savePeftAdapter(adapterDir, withLora, LORA, null);
    } finally {
      withLora.dispose();
    }
    const adapter = loadPeftAdapter(adapterDir);
    assert.deepEqual([...adapter.tensors.keys()].sort(), [...peft.keys].sort());
    assert.deepEqual(adapter.config.target_modules, [...peft.target_modules].sort());
  });
}
