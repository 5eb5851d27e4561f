// --quant keep refuses what it cannot do by name (issue 17.3): a model that is not a GGUF file, a
// backend without GGUF-block kernels, and a 4-bit quantization asked for at the same time.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ggmlKernelsOf, hasGgmlKernels } from '../src/backends/capabilities.js';
import { getBackend } from '../src/backends/index.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { buildLlama } from '../src/models/build.js';
import type { Backend } from '../src/tensor/backend.js';
import { train } from '../src/train/run.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const STORIES = path.join(root, 'fixtures', 'stories260K');

test('--quant keep on a llama2.c or an unquantized-source model is refused, naming the file', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-keep-err-'));
  try {
    await assert.rejects(
      train({
        model: path.join(STORIES, 'stories260K.bin'),
        data: path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt'),
        output: path.join(out, 'run'),
        quant: 'keep',
        maxSteps: 1,
      } as Parameters<typeof train>[0]),
      /--quant keep trains on a GGUF file's own quantization; .*stories260K\.bin is not a GGUF file/,
    );
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
  const ck = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  try {
    await assert.rejects(
      buildLlama(ck.config, ck, { backend: await getBackend('ref'), keepQuantized: true }),
      /is not a GGUF file/,
    );
  } finally {
    ck.close();
  }
});

test('a backend without GGUF-block kernels, and keep together with NF4, are refused before anything loads', async () => {
  const ref = await getBackend('ref');
  const bare = { name: 'bare' } as Backend;
  assert.equal(hasGgmlKernels(ref), true);
  assert.equal(hasGgmlKernels(bare), false);
  assert.throws(
    () => ggmlKernelsOf(bare),
    /backend 'bare' cannot hold GGUF-quantized weights \(Q4_0, Q8_0, Q4_K, Q5_K, Q6_K\) as stored \(--quant keep\); the cpu, webgpu and ref backends can, or load with --quant nf4\|none/,
  );
  // stories260K.gguf stores its projections as F32: keep is allowed (they stay full precision), but
  // not together with a 4-bit quantization.
  const ck = openCheckpoint(path.join(STORIES, 'stories260K.gguf'));
  try {
    await assert.rejects(
      buildLlama(ck.config, ck, {
        backend: ref,
        keepQuantized: true,
        quantization: { quantType: 'nf4' },
      }),
      /keepQuantized \(--quant keep\) and a 4-bit quantization exclude each other/,
    );
  } finally {
    ck.close();
  }
});
