// qlora merge: dequant(NF4 base) + scale·B·A written as an HF folder gives the same logits as the
// 4-bit base with the adapter applied (within 1e-4), and `qlora generate` loads the result.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/load/load-model.js';
import { asQuantizedBase } from '../src/cli/merge.js';
import { writeCheckpointAs } from '../src/export/convert.js';
import { loadPeftAdapter, savePeftAdapter } from '../src/io/peft.js';
import type { LoraConfig } from '../src/models/build.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import { maxAbsDiff, randn } from './util.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const ids = Int32Array.from([1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298]);

async function logits(model: LlamaModel): Promise<Float32Array> {
  const arena = model.backend.createArena(1 << 20);
  const cache = new KvCache(model, 64);
  try {
    return Float32Array.from(await model.forwardCached(ids, cache, arena, ids.length).read());
  } finally {
    cache.dispose();
    arena.dispose();
  }
}

for (const useRslora of [false, true]) {
  test(`merged model logits equal NF4 base + adapter logits (rsLoRA ${useRslora})`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-merge-'));
    try {
      const lora: LoraConfig = {
        r: 4,
        alpha: 8,
        dropout: 0,
        useRslora,
        init: 'kaiming',
        seed: 1,
        targets: 'all-linear',
        layers: null,
      };
      const q = { quantType: 'nf4' as const, blocksize: 64, doubleQuant: true };
      const trained = await loadModel({ model: MODEL, quantization: q, lora });
      trained.model.parameters().forEach((p, i) => {
        if (p.name.endsWith('lora_B.weight')) p.value.write(randn(p.value.size, 50 + i, 0.2));
      });
      const adapterDir = path.join(dir, 'adapter');
      await savePeftAdapter(adapterDir, trained.model, lora, null);
      const want = await logits(trained.model);
      trained.model.dispose();

      const out = path.join(dir, 'merged');
      const ck = openCheckpoint(MODEL);
      writeCheckpointAs(asQuantizedBase(ck, q), out, {
        adapter: loadPeftAdapter(adapterDir),
        dtype: 'f32',
      });
      ck.close();
      const merged = await loadModel({ model: out });
      const got = await logits(merged.model);
      merged.model.dispose();
      const diff = maxAbsDiff(got, want);
      assert.ok(diff < 1e-4, `merged vs base+adapter logits differ by ${diff}`);

      // The same merge written as a GGUF (Q/K permuted on the way) loads back with the same logits.
      const ggufOut = path.join(dir, 'merged.gguf');
      const ck3 = openCheckpoint(MODEL);
      writeCheckpointAs(asQuantizedBase(ck3, q), ggufOut, {
        adapter: loadPeftAdapter(adapterDir),
        dtype: 'f32',
      });
      ck3.close();
      const fromGguf = await loadModel({ model: ggufOut });
      const ggufDiff = maxAbsDiff(await logits(fromGguf.model), want);
      fromGguf.model.dispose();
      assert.ok(ggufDiff < 1e-4, `merged GGUF vs base+adapter logits differ by ${ggufDiff}`);

      // Without the 4-bit round trip the merge would not match (so the check above has teeth).
      const plainOut = path.join(dir, 'plain');
      const ck2 = openCheckpoint(MODEL);
      writeCheckpointAs(ck2, plainOut, { adapter: loadPeftAdapter(adapterDir), dtype: 'f32' });
      ck2.close();
      const plain = await loadModel({ model: plainOut });
      assert.ok(maxAbsDiff(await logits(plain.model), want) > 1e-3);
      plain.model.dispose();

      // The CLI path end to end: merge, then generate from the merged folder.
      const cliOut = path.join(dir, 'cli');
      const cli = path.join(root, 'src', 'cli', 'run.ts');
      /** tsx's loader by URL, so child processes running in other folders find it. */
      const TSX = import.meta.resolve('tsx');
      execFileSync(
        process.execPath,
        ['--import', TSX, cli, 'merge', '-m', MODEL, '-a', adapterDir, '-o', cliOut],
        { stdio: 'pipe' },
      );
      assert.ok(
        fs.existsSync(path.join(cliOut, 'model.safetensors')) &&
          fs.existsSync(path.join(cliOut, 'config.json')),
      );
      const text = execFileSync(
        process.execPath,
        [
          '--import',
          TSX,
          cli,
          'generate',
          '-m',
          cliOut,
          '-p',
          'Once upon a time',
          '-n',
          '8',
          '-t',
          '0',
        ],
        { encoding: 'utf8' },
      );
      assert.match(text, /^Once upon a time/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
