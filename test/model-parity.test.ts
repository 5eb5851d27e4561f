// A random-weight model of TinyLlama-1.1B's real shape (its config.json, one layer deep for test
// time) written as an HF folder and exported to GGUF (Q/K rows permuted to llama.cpp's layout)
// loads back through both paths with bit-identical logits.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { getBackend } from '../src/backends/index.js';
import { exportGgufModel } from '../src/export/gguf-model.js';
import { vocabFromHfFolder } from '../src/export/gguf-vocab.js';
import { GgufReader } from '../src/io/gguf.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { buildLlama } from '../src/models/build.js';
import { openCheckpoint, permuteToInterleavedRows } from '../src/io/checkpoint.js';
import { configFromHf } from '../src/io/config.js';
import { KvCache } from '../src/models/llama.js';
import { syntheticSource } from '../src/models/synthetic.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

test('TinyLlama-shaped random model: HF folder and GGUF give bit-identical logits', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-parity-'));
  try {
    const hfJson = {
      ...JSON.parse(fs.readFileSync(path.join(root, 'fixtures', 'tinyllama-config.json'), 'utf8')),
      num_hidden_layers: 1,
    };
    const config = configFromHf(hfJson);
    assert.equal(config.hiddenSize, 2048);
    assert.equal(config.numKvHeads, 4);
    const hfDir = path.join(dir, 'hf');
    fs.mkdirSync(hfDir);
    fs.writeFileSync(path.join(hfDir, 'config.json'), JSON.stringify(hfJson));
    const tok = path.join(root, 'fixtures', 'tokenizers', 'tinyllama');
    fs.writeFileSync(
      path.join(hfDir, 'tokenizer.json'),
      zlib.gunzipSync(fs.readFileSync(path.join(tok, 'tokenizer.json.gz'))),
    );
    fs.copyFileSync(
      path.join(tok, 'tokenizer_config.json'),
      path.join(hfDir, 'tokenizer_config.json'),
    );
    const src = syntheticSource(config, 77);
    writeSafetensors(
      path.join(hfDir, 'model.safetensors'),
      src.names.map((name) => ({
        name,
        dtype: 'F16',
        shape: src.shape(name),
        data: src.load(name),
      })),
    );

    const ggufPath = path.join(dir, 'model.gguf');
    const hf = openCheckpoint(hfDir);
    exportGgufModel(hf, ggufPath, {
      dtype: 'f16',
      vocab: vocabFromHfFolder(hfDir, config.vocabSize),
    });
    // The GGUF really holds the interleaved (permuted) Q rows.
    const reader = GgufReader.open(ggufPath);
    const q = hf.loadTensor('model.layers.0.self_attn.q_proj.weight');
    const stored = reader.readF32('blk.0.attn_q.weight');
    reader.close();
    assert.notDeepEqual(stored, q);
    assert.deepEqual(stored, permuteToInterleavedRows(q, config.numHeads, config.hiddenSize));

    const be = await getBackend('cpu');
    const ids = Int32Array.from([1, 15043, 29892, 920, 526, 366, 29973, 306]);
    const logitsOf = async (p: string) => {
      const ck = openCheckpoint(p);
      const model = await buildLlama(ck.config, ck, { backend: be, maxPositions: 64 });
      ck.close();
      const arena = be.createArena(1 << 24);
      const cache = new KvCache(model, 16);
      const out = Float32Array.from(
        await model.forwardCached(ids, cache, arena, ids.length).read(),
      );
      cache.dispose();
      arena.dispose();
      model.dispose();
      return out;
    };
    hf.close();
    const a = await logitsOf(hfDir);
    const b = await logitsOf(ggufPath);
    assert.equal(a.length, ids.length * 32000);
    assert.ok(a.some((v) => Math.abs(v) > 1e-3));
    assert.deepEqual(a, b);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
