// Gemma 2 and Gemma 3 through GGUF: the transformers-written tiny checkpoints (fixtures/gemma/)
// exported to GGUF load back with the HF folder's logits (norms stored as w + 1 and read back as
// w), and llama.cpp (node-llama-cpp: CPU, f32 KV cache, no flash attention) agrees with our forward
// on next-token log-probabilities within 1e-4 and on greedy continuations for (a) the base,
// (b) base + exported GGUF LoRA and (c) the merged model. A Gemma setting llama.cpp would misread
// (query_pre_attn_scalar ≠ head_dim: the Gemma 2 fixture as transformers wrote it) is refused.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { getLlama, type Llama } from 'node-llama-cpp';
import { getBackend } from '../src/backends/index.js';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { exportGgufModel } from '../src/export/gguf-model.js';
import { writeHfFolder } from '../src/export/hf-writer.js';
import { vocabFromHfFolder } from '../src/export/gguf-vocab.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { GgufReader } from '../src/io/gguf.js';
import { buildLlama, type LoraConfig } from '../src/models/build.js';
import {
  llamaCppNextTokens,
  logProbDiff,
  ourNextTokens,
  writeRandomPeftAdapter,
  type NextTokenResult,
} from './export-support.js';
import { allLogits, fixtureCopy, gemmaFixture, ggmlGeluBackend } from './gemma-support.js';

const STEPS = 12;
let llama: Llama;
let tmp: string;

before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-gemma-export-'));
});

after(async () => {
  await llama?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function assertSame(
  what: string,
  ours: NextTokenResult,
  theirs: NextTokenResult,
  tolerance = 1e-4,
): number {
  assert.equal(theirs.logProbs.length, ours.logProbs.length, `${what}: vocabulary size`);
  const d = logProbDiff(ours.logProbs, theirs.logProbs);
  assert.ok(d.compared >= 0.99 * ours.logProbs.length, `${what}: only ${d.compared} comparable`);
  assert.ok(d.max <= tolerance, `${what}: next-token log-probabilities differ by ${d.max}`);
  if (tolerance <= 1e-4)
    assert.deepEqual(theirs.greedy, ours.greedy, `${what}: greedy continuation`);
  return d.max;
}

function effect(a: NextTokenResult, b: NextTokenResult): number {
  let m = 0;
  for (let i = 0; i < a.logProbs.length; i++)
    m = Math.max(m, Math.abs(a.logProbs[i]! - b.logProbs[i]!));
  return m;
}

const LORA: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0,
  useRslora: false,
  init: 'kaiming',
  seed: 3,
  targets: 'all-linear',
  layers: null,
};

const CASES = [
  // llama.cpp scales Gemma queries by 1/sqrt(head_dim) (outside the 27B shapes), so the Gemma 2
  // fixture's query_pre_attn_scalar (24, chosen to catch that very mistake) is set to head_dim here.
  ['gemma2-tiny', (c: Record<string, unknown>) => (c.query_pre_attn_scalar = 16)],
  ['gemma3-tiny', () => {}],
] as const;

for (const [name, edit] of CASES) {
  test(`${name}: HF folder, exported GGUF and the GGUF converted back to HF give the same logits; llama.cpp matches base, base + GGUF LoRA and merged within 1e-4`, async () => {
    const dir = fixtureCopy(tmp, name, edit);
    const ref = gemmaFixture(name).ref;
    const ck = openCheckpoint(dir);
    const basePath = path.join(tmp, `${name}.gguf`);
    const loraPath = path.join(tmp, `${name}-lora.gguf`);
    const mergedPath = path.join(tmp, `${name}-merged.gguf`);
    try {
      const vocab = vocabFromHfFolder(dir, ck.config.vocabSize);
      exportGgufModel(ck, basePath, { dtype: 'f32', vocab });
      // Norms are stored as llama.cpp's converter stores Gemma's: w + 1.
      const reader = GgufReader.open(basePath);
      try {
        const stored = reader.readF32('blk.0.post_attention_norm.weight');
        const w = ck.loadTensor('model.layers.0.post_attention_layernorm.weight');
        assert.ok(Math.abs(stored[0]! - (w[0]! + 1)) < 1e-6, 'norm stored as w + 1');
        assert.equal(reader.gguf.metadata.get('general.architecture'), name.slice(0, 6));
      } finally {
        reader.close();
      }
      const gguf = openCheckpoint(basePath);
      try {
        assert.equal(gguf.config.architecture, ck.config.architecture);
        assert.deepEqual(gguf.config.slidingLayers, ck.config.slidingLayers);
        assert.equal(gguf.config.queryPreAttnScalar, ck.config.queryPreAttnScalar);
        assert.equal(gguf.config.attnLogitSoftcap ?? null, ck.config.attnLogitSoftcap ?? null);
        assert.equal(gguf.config.finalLogitSoftcap ?? null, ck.config.finalLogitSoftcap ?? null);
        const be = await getBackend('cpu');
        const a = await buildLlama(ck.config, ck, { backend: be });
        const b = await buildLlama(gguf.config, gguf, { backend: be });
        try {
          const la = await allLogits(a, ref.input_ids);
          const lb = await allLogits(b, ref.input_ids);
          let worst = 0;
          for (let i = 0; i < la.length; i++) worst = Math.max(worst, Math.abs(la[i]! - lb[i]!));
          // f32 w → w + 1 → w may move a norm weight by an ulp of 1 + w.
          assert.ok(worst < 1e-5, `${name}: HF and GGUF logits differ by ${worst}`);
          // And converted back to an HF folder (qlora convert): config.json and norms as w.
          const back = path.join(tmp, `${name}-from-gguf`);
          writeHfFolder(gguf, back, { dtype: 'f32' });
          const hf2 = openCheckpoint(back);
          try {
            assert.equal(hf2.config.architecture, ck.config.architecture);
            const c = await buildLlama(hf2.config, hf2, { backend: be });
            try {
              const lc = await allLogits(c, ref.input_ids);
              let w2 = 0;
              for (let i = 0; i < la.length; i++) w2 = Math.max(w2, Math.abs(la[i]! - lc[i]!));
              assert.ok(w2 < 1e-5, `${name}: HF → GGUF → HF logits differ by ${w2}`);
            } finally {
              c.dispose();
            }
          } finally {
            hf2.close();
          }
        } finally {
          a.dispose();
          b.dispose();
        }
      } finally {
        gguf.close();
      }

      const adapter = await writeRandomPeftAdapter(
        path.join(tmp, `${name}-peft`),
        ck.config,
        ck,
        LORA,
        7,
        0.3,
      );
      exportGgufLora(adapter, ck.config, loraPath);
      exportGgufModel(ck, mergedPath, { dtype: 'f32', vocab, adapter });
      const prompt = ref.input_ids.slice(0, 16);
      const ggml = ggmlGeluBackend(await getBackend('cpu'));
      const oursBase = await ourNextTokens(ck.config, ck, null, prompt, STEPS, ggml);
      const oursLora = await ourNextTokens(ck.config, ck, adapter, prompt, STEPS, ggml);
      const exactBase = await ourNextTokens(ck.config, ck, null, prompt, STEPS);
      assert.ok(effect(oursBase, oursLora) > 0.05, `${name}: the LoRA barely matters`);
      const base = await llama.loadModel({ modelPath: basePath });
      const merged = await llama.loadModel({ modelPath: mergedPath });
      try {
        const cppBase = await llamaCppNextTokens(base, prompt, STEPS, null);
        const da = assertSame(`${name} base`, oursBase, cppBase);
        const db = assertSame(
          `${name} base + GGUF LoRA`,
          oursLora,
          await llamaCppNextTokens(base, prompt, STEPS, loraPath),
        );
        const dc = assertSame(
          `${name} merged`,
          oursLora,
          await llamaCppNextTokens(merged, prompt, STEPS, null),
        );
        // Our exact GELU against llama.cpp's fp16 table: only that rounding apart.
        const exact = assertSame(`${name} base, exact GELU`, exactBase, cppBase, 1e-2);
        console.log(
          `# ${name}: llama.cpp max |Δ log p| base ${da.toExponential(2)}, lora ${db.toExponential(2)}, merged ${dc.toExponential(2)} (our GeGLU with ggml's fp16 GELU table; exact GELU ${exact.toExponential(2)}); LoRA effect ${effect(oursBase, oursLora).toFixed(3)}`,
        );
      } finally {
        await base.dispose();
        await merged.dispose();
      }
    } finally {
      ck.close();
    }
  });
}

test('a Gemma that llama.cpp would misread is refused on GGUF export, naming the setting', () => {
  const dir = fixtureCopy(tmp, 'gemma2-tiny', () => {});
  const ck = openCheckpoint(dir);
  try {
    assert.throws(
      () =>
        exportGgufModel(ck, path.join(tmp, 'refused.gguf'), {
          dtype: 'f32',
          vocab: vocabFromHfFolder(dir, ck.config.vocabSize),
        }),
      /cannot export this gemma2 model to GGUF without changing it: query_pre_attn_scalar 24/,
    );
    assert.equal(fs.existsSync(path.join(tmp, 'refused.gguf')), false);
  } finally {
    ck.close();
  }
});
