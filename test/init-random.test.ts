// `qlora init-random`: models of real families and shapes with seeded random weights. Every
// family name and shape resolves; --tiny keeps each family's structure (head_dim ratio, GQA ratio,
// biases, tied head, rope scaling, q/k norms); the output loads (HF folder and GGUF), its
// tokenizer encodes and decodes text, the seed decides the weights, the tokenizer's special ids
// are the config's, and a used output folder is refused without touching it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { initRandomModel, resolveModelConfig } from '../src/export/init-random.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { configFromHf } from '../src/io/config.js';
import { tinyHfConfig } from '../src/io/tiny-config.js';
import { FAMILIES, familyOf, tensorTable } from '../src/models/registry.js';
import { NAMED_SHAPES, namedHfConfig } from '../src/train/plan-shapes.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { loadModel } from '../src/load/load-model.js';
import { generate } from '../src/generate/generate.js';
import { train } from '../src/train/run.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-init-random-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('every family name resolves to its default shape, every shape to its config', () => {
  for (const f of FAMILIES.filter((f) => f.defaultShape !== undefined)) {
    const r = resolveModelConfig(f.name);
    assert.equal(configFromHf(r.hf).architecture, f.name, f.name);
  }
  for (const n of NAMED_SHAPES) assert.ok(configFromHf(namedHfConfig(n)!, n).numLayers > 0, n);
  assert.throws(() => resolveModelConfig('no-such-model'), /not a config\.json, a known shape/);
});

test('--tiny keeps every named shape’s structure at 2 layers (Gemma 3: 6), hidden ≈ 64, vocabulary 512', () => {
  for (const n of NAMED_SHAPES) {
    const big = configFromHf(namedHfConfig(n)!, n);
    const small = configFromHf(tinyHfConfig(namedHfConfig(n)!), n);
    const what = `${n}: ${JSON.stringify(small)}`;
    assert.equal(small.architecture, big.architecture, what);
    // Gemma 3's local/global pattern is 6 layers long: a tiny one holds one whole pattern.
    assert.equal(small.numLayers, big.architecture === 'gemma3' ? 6 : 2, what);
    assert.ok(small.hiddenSize >= 32 && small.hiddenSize <= 96, what);
    assert.equal(small.vocabSize, 512, what);
    assert.equal(small.numHeads / small.numKvHeads, big.numHeads / big.numKvHeads, what);
    // head_dim against hidden/heads: equal where the real model's is, else the same ratio up to
    // rounding to an even size (Qwen3-4B: 128·32/2560 = 1.6 → 26·4/64).
    const ratio = (c: typeof big) => (c.headDim * c.numHeads) / c.hiddenSize;
    assert.equal(ratio(small) === 1, ratio(big) === 1, what);
    // (Within one head_dim step: Gemma-3-4B's 0.8 → 12·4/64 = 0.75.)
    assert.ok(
      Math.abs(ratio(small) - ratio(big)) <= small.numHeads / small.hiddenSize + 1e-9,
      what,
    );
    for (const k of ['tieWordEmbeddings', 'attentionBias', 'ropeTheta'] as const)
      assert.deepEqual(small[k], big[k], `${what}: ${k}`);
    const s = small.ropeScaling;
    const b = big.ropeScaling;
    if (s?.ropeType === 'longrope' && b?.ropeType === 'longrope') {
      // LongRoPE (Phi-3): the same context extension; factor curves resampled to the tiny rotary
      // width (first and last kept); an original context a test sequence passes.
      assert.equal(s.factor, b.factor, what);
      assert.equal(s.originalMaxPositionEmbeddings, 8, what);
      assert.equal(s.shortFactor.length, (small.rotaryDim ?? small.headDim) / 2, what);
      assert.equal(s.longFactor.at(-1), b.longFactor.at(-1), what);
      assert.equal(s.longFactor[0], b.longFactor[0], what);
    } else assert.deepEqual(s, b, `${what}: ropeScaling`);
    // Partial rotary (Phi-4-mini) stays partial.
    assert.equal(small.rotaryDim == null, big.rotaryDim == null, what);
    // The same kinds of tensors per layer (q/k norms, biases) as the real model.
    const kinds = (c: typeof big) =>
      tensorTable(c)
        .filter((e) => e.hf.startsWith('model.layers.0.'))
        .map((e) => e.hf);
    assert.deepEqual(kinds(small), kinds(big), what);
    if (big.architecture === 'gemma2' || big.architecture === 'gemma3') {
      // The pattern's first period (sliding layers, then one global), a window short enough to
      // slide on test sequences, the query scale still head_dim's, soft-caps and rope bases kept.
      assert.deepEqual(small.slidingLayers, big.slidingLayers!.slice(0, small.numLayers), what);
      assert.ok(small.slidingLayers!.includes(true) && small.slidingLayers!.includes(false), what);
      assert.equal(small.slidingWindow, 16, what);
      assert.equal(big.queryPreAttnScalar, big.headDim, n);
      assert.equal(small.queryPreAttnScalar, small.headDim, what);
      for (const k of ['attnLogitSoftcap', 'finalLogitSoftcap', 'ropeLocalTheta'] as const)
        assert.deepEqual(small[k], big[k], `${what}: ${k}`);
    }
  }
  const g2 = configFromHf(tinyHfConfig(namedHfConfig('gemma-2-2b')!));
  assert.deepEqual([g2.attnLogitSoftcap, g2.finalLogitSoftcap], [50, 30]);
  const g3 = configFromHf(tinyHfConfig(namedHfConfig('gemma-3-4b')!));
  assert.deepEqual([g3.ropeTheta, g3.ropeLocalTheta], [1e6, 1e4]);
  assert.deepEqual(g3.ropeScaling, { ropeType: 'linear', factor: 8 });
  assert.deepEqual(g3.slidingLayers, [true, true, true, true, true, false]);
  // transformers v5's layer_types: the tiny model keeps its first whole period.
  const v5 = configFromHf(
    tinyHfConfig({
      ...namedHfConfig('gemma-3-1b')!,
      sliding_window_pattern: undefined,
      layer_types: Array.from({ length: 26 }, (_, i) =>
        (i + 1) % 6 === 0 ? 'full_attention' : 'sliding_attention',
      ),
    }),
  );
  assert.deepEqual(v5.slidingLayers, [true, true, true, true, true, false]);
  // A 27B-style query scale (hidden/heads, not head_dim) keeps that relation too.
  const q27 = configFromHf(
    tinyHfConfig({ ...namedHfConfig('gemma-2-2b')!, query_pre_attn_scalar: 2304 / 8 }),
  );
  assert.equal(q27.queryPreAttnScalar, q27.hiddenSize / q27.numHeads);
});

// A tiny Gemma of each family name (gemma2 → gemma-2-2b, gemma3 → gemma-3-1b) and of a shape
// (gemma-3-4b: linear rope scaling on its global layers) loads through loadModel (HF folder and GGUF),
// generates, and trains: a short train() run lowers the eval loss.
for (const spec of ['gemma2', 'gemma3', 'gemma-3-4b'] as const) {
  test(`init-random --tiny ${spec}: loads (HF and GGUF), generates and trains`, async () => {
    const dir = path.join(tmp, `tiny-${spec}`);
    const r = initRandomModel({ config: spec, output: dir, tiny: true, seed: 7 });
    const family = spec === 'gemma2' ? 'gemma2' : 'gemma3';
    assert.equal(r.config.architecture, family);
    assert.equal(
      r.source,
      spec === 'gemma-3-4b' ? 'gemma-3-4b' : `${spec} (${familyOf(spec).defaultShape})`,
    );
    const gguf = initRandomModel({
      config: spec,
      output: path.join(tmp, `tiny-${spec}-gguf`),
      tiny: true,
      seed: 7,
      format: 'gguf',
    });
    const prompt = 'the cat sat on the mat and the dog ran after it';
    const texts: string[] = [];
    for (const model of [r.model, gguf.model]) {
      const loaded = await loadModel({ model, backend: 'cpu', quantization: null, lora: null });
      const arena = loaded.model.backend.createArena();
      try {
        assert.deepEqual(loaded.checkpoint.config.slidingLayers, r.config.slidingLayers);
        const ids = loaded.tokenizer.encode(prompt);
        // Longer than the 16-token window: the local layers slide.
        assert.ok(ids.length + 8 > 16, `${ids.length} prompt tokens`);
        const g = await generate(loaded.model, loaded.tokenizer, ids, arena, {
          maxTokens: 8,
          temperature: 0,
          stopTokens: [],
        });
        assert.equal(g.tokens.length, 8);
        texts.push(g.tokens.join(','));
      } finally {
        arena.dispose();
        loaded.model.dispose();
      }
    }
    assert.equal(texts[1], texts[0], 'the GGUF generates what the HF folder generates');
    const rows = Array.from({ length: 16 }, (_, i) => ({
      text: 'the cat sat on the mat. '.repeat(2 + (i % 3)),
    }));
    const evals: number[] = [];
    await train({
      model: r.model,
      data: { train: rows, valid: rows.slice(0, 4) },
      output: path.join(tmp, `tiny-${spec}-run`),
      backend: 'cpu',
      maxSteps: 16,
      seqLen: 32,
      batchSize: 2,
      lr: 1e-2,
      warmupSteps: 0,
      evalEvery: 8,
      evalBatches: 2,
      saveEvery: 0,
      onEval: (m) => evals.push(m.evalLoss),
    });
    console.log(`# tiny ${spec}: eval loss ${evals.map((e) => e.toFixed(3)).join(' → ')}`);
    // From ln(512) ≈ 6.24 (random weights, frozen tied head): 6.26 → 5.24 seen here.
    assert.ok(evals.length >= 2 && evals.at(-1)! < 0.9 * evals[0]!, evals.join(', '));
  });
}

test('init-random writes a loadable HF folder and GGUF with a working tokenizer; the seed decides the weights', () => {
  const a = initRandomModel({ config: 'qwen3', output: path.join(tmp, 'a'), tiny: true, seed: 5 });
  const b = initRandomModel({ config: 'qwen3', output: path.join(tmp, 'b'), tiny: true, seed: 6 });
  assert.deepEqual(fs.readdirSync(a.model).sort(), [
    'config.json',
    'model.safetensors',
    'tokenizer.json',
    'tokenizer_config.json',
  ]);
  const ca = openCheckpoint(a.model);
  const cb = openCheckpoint(b.model);
  const name = 'model.layers.1.self_attn.k_norm.weight';
  assert.notDeepEqual(ca.loadTensor(name), cb.loadTensor(name));
  assert.equal(familyOf(ca.config).attention.qkNorm, true);
  ca.close();
  cb.close();
  const tok = HfTokenizer.fromDirectory(a.model);
  const text = 'the quick brown fox, 日本語 🦙';
  const ids = tok.encode(text, { addSpecialTokens: false });
  assert.ok(ids.length < Buffer.byteLength(text), 'merges shorten common text');
  assert.ok(ids.every((i) => i < 512));
  assert.equal(tok.decode(ids), text);
  assert.equal(a.config.eosTokenId, tok.tokenToId('</s>'));

  const g = initRandomModel({
    config: 'llama-3.2-1b',
    output: path.join(tmp, 'g'),
    tiny: true,
    format: 'gguf',
    dtype: 'q8_0',
  });
  assert.deepEqual(fs.readdirSync(path.join(tmp, 'g')), ['model.gguf']);
  const cg = openCheckpoint(g.model);
  assert.equal(cg.config.ropeScaling?.ropeType, 'llama3');
  assert.equal(cg.config.tieWordEmbeddings, true);
  assert.equal(cg.config.bosTokenId, 256, 'Llama keeps a BOS');
  cg.close();
});

test('init-random refuses a used output folder and leaves it as it was', () => {
  const dir = path.join(tmp, 'used');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'keep.txt'), 'mine');
  assert.throws(
    () => initRandomModel({ config: 'llama', output: dir, tiny: true }),
    /exists and is not an empty folder/,
  );
  assert.deepEqual(fs.readdirSync(dir), ['keep.txt']);
});

test('qlora init-random (CLI): a config.json file, full size, bf16', () => {
  const config = path.join(tmp, 'small-config.json');
  fs.writeFileSync(
    config,
    JSON.stringify({
      model_type: 'qwen3',
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      head_dim: 24,
      vocab_size: 300,
      tie_word_embeddings: false,
    }),
  );
  const out = path.join(tmp, 'cli');
  const stdout = execFileSync(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/cli/run.ts',
      'init-random',
      '--config',
      config,
      '-o',
      out,
      '--dtype',
      'bf16',
    ],
    { cwd: root, encoding: 'utf8' },
  );
  assert.match(stdout, /qwen3 from .*small-config\.json, 1 layers, hidden 32, vocabulary 300/);
  const ck = openCheckpoint(out);
  assert.deepEqual(ck.shapeOf('model.layers.0.self_attn.q_norm.weight'), [24]);
  assert.ok(ck.has('lm_head.weight'));
  ck.close();
  assert.equal(
    JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).torch_dtype,
    'bfloat16',
  );
});
