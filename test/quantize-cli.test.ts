// qlora quantize writes a bitsandbytes-layout 4-bit HF folder; loading it uses the stored 4-bit
// weights directly and gives exactly the model that quantizing on load gives.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/load/load-model.js';
import { writeBnb4bitFolder } from '../src/export/bnb-writer.js';
import { vocabForCheckpoint } from '../src/export/vocab-source.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');

async function logits(model: LlamaModel): Promise<Float32Array> {
  const arena = model.backend.createArena(1 << 20);
  const cache = new KvCache(model, 32);
  try {
    return Float32Array.from(
      await model.forwardCached(Int32Array.from([1, 403, 407, 261, 378]), cache, arena, 5).read(),
    );
  } finally {
    cache.dispose();
    arena.dispose();
  }
}

test('quantized HF folder: bnb keys and config, loads its 4-bit weights directly with identical logits', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-quantize-'));
  try {
    const quantization = { quantType: 'nf4' as const, blocksize: 64, doubleQuant: true };
    const ck = openCheckpoint(MODEL);
    const r = writeBnb4bitFolder(ck, dir, {
      quantization,
      dtype: 'f32',
      vocab: vocabForCheckpoint(ck),
    });
    const original = ck.loadTensor('model.layers.2.mlp.down_proj.weight');
    ck.close();
    assert.ok(
      (r.quantizedBytes * 8) / r.quantizedParams < 4.2,
      `${(r.quantizedBytes * 8) / r.quantizedParams} bits/param`,
    );
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    assert.equal(config.quantization_config.quant_method, 'bitsandbytes');
    assert.equal(config.quantization_config.bnb_4bit_quant_type, 'nf4');
    assert.equal(config.quantization_config.bnb_4bit_use_double_quant, true);
    const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    try {
      const name = 'model.layers.2.mlp.down_proj.weight';
      assert.equal(f.tensor(name).dtype, 'U8');
      assert.deepEqual(f.tensor(name).shape, [(64 * 172) / 2, 1]);
      for (const k of [
        'absmax',
        'quant_map',
        'nested_absmax',
        'nested_quant_map',
        'quant_state.bitsandbytes__nf4',
      ])
        assert.ok(f.tensors.has(`${name}.${k}`), k);
      assert.deepEqual(f.readRaw(name), quantize4bit(original, quantization).packed);
      assert.equal(f.tensor('model.embed_tokens.weight').dtype, 'F32');
    } finally {
      f.close();
    }
    assert.ok(fs.existsSync(path.join(dir, 'tokenizer.json')));

    const fromFolder = await loadModel({ model: dir, quantization });
    const fromBin = await loadModel({ model: MODEL, quantization });
    assert.deepEqual(await logits(fromFolder.model), await logits(fromBin.model));
    // Without asking for 4-bit, the stored weights are dequantized into a dense model: same numbers.
    const dense = await loadModel({ model: dir });
    const a = await logits(dense.model);
    const b = await logits(fromBin.model);
    assert.ok(a.every((v, i) => Math.abs(v - b[i]!) < 1e-4));
    for (const m of [fromFolder, fromBin, dense]) m.model.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
