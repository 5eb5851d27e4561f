// Gemma 2 and Gemma 3 against Hugging Face transformers: fixtures/gemma/<name>/ holds a tiny random
// checkpoint written by transformers itself and the logits transformers computed for it
// (scripts/gemma-reference.py; provenance in each reference.json). Our forward must reproduce them
// from the HF folder, on every backend. The fixtures keep each family's structure: (1 + w) norms,
// pre/post norms, GeGLU, sqrt(hidden) embedding scale, tied embeddings, sliding/global layers with
// a window shorter than the sequence, soft-caps (Gemma 2), q/k norms, two rope bases and linear
// scaling on global layers only (Gemma 3), query_pre_attn_scalar ≠ head_dim (Gemma 2).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { buildLlama } from '../src/models/build.js';
import type { Backend } from '../src/tensor/backend.js';
import { backendsUnderTest } from './backends-under-test.js';
import { allLogits, GEMMA_FIXTURES, gemmaFixture } from './gemma-support.js';

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
