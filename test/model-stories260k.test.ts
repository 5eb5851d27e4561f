// stories260K end to end on each backend: loaded from the llama2.c .bin and from the .gguf, the
// model reproduces the independent reference (stories260K.reference.json): position-0 logits,
// teacher-forced per-token NLL, and 256 greedy tokens from BOS.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { generate } from '../src/generate/generate.js';
import { buildLlama } from '../src/models/build.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { KvCache } from '../src/models/llama.js';
import { loadTokenizer } from '../src/tokenizer/index.js';
import { maxAbsDiff } from './util.js';

const dir = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'fixtures',
  'stories260K',
);
const reference = JSON.parse(
  fs.readFileSync(path.join(dir, 'stories260K.reference.json'), 'utf8'),
) as {
  greedy_from_bos: { token_ids: number[]; text?: string };
  logits_pos0_after_bos: { all: number[] };
  teacher_forced_nll: { token_ids: number[]; per_token_nll_nats: number[] };
};

for (const backendName of ['ref', 'cpu'] as const) {
  for (const file of ['stories260K.bin', 'stories260K.gguf']) {
    test(`${backendName}: ${file} reproduces the reference logits, NLL and greedy text`, async () => {
      const be = await getBackend(backendName);
      const ck = openCheckpoint(path.join(dir, file));
      const model = await buildLlama(ck.config, ck, { backend: be, maxPositions: 512 });
      ck.close();
      const arena = be.createArena(1 << 20);
      try {
        // Position-0 logits after BOS.
        const cache = new KvCache(model, 512);
        const logits0 = await model.forwardCached(Int32Array.of(1), cache, arena, 1).read();
        const diff0 = maxAbsDiff(logits0, reference.logits_pos0_after_bos.all);
        assert.ok(diff0 < 1e-4, `position-0 logits differ by ${diff0}`);

        // Teacher-forced NLL of the reference sentence, all positions in one prefill.
        const ids = reference.teacher_forced_nll.token_ids;
        cache.truncate(0);
        arena.reset();
        const all = await model
          .forwardCached(Int32Array.from(ids), cache, arena, ids.length)
          .read();
        const V = model.dims.vocabSize;
        for (let t = 0; t + 1 < ids.length; t++) {
          const row = all.subarray(t * V, (t + 1) * V);
          let max = -Infinity;
          for (const v of row) max = Math.max(max, v);
          let sum = 0;
          for (const v of row) sum += Math.exp(v - max);
          const nll = Math.log(sum) + max - row[ids[t + 1]!]!;
          const expected = reference.teacher_forced_nll.per_token_nll_nats[t]!;
          assert.ok(Math.abs(nll - expected) < 1e-4, `token ${t}: nll ${nll} vs ${expected}`);
        }
        cache.dispose();

        // Greedy generation from BOS; run.c stops when BOS (1) comes out.
        const tokenizer = loadTokenizer(
          path.join(dir, file.endsWith('.gguf') ? file : 'tok512.bin'),
          { vocabSize: V },
        );
        const expectedIds = reference.greedy_from_bos.token_ids;
        const res = await generate(model, tokenizer, [1], arena, {
          maxTokens: 256,
          temperature: 0,
          stopTokens: [1],
          contextLength: 512,
        });
        assert.deepEqual(res.tokens, expectedIds.slice(0, res.tokens.length));
        assert.equal(res.tokens.length, expectedIds.length);
      } finally {
        arena.dispose();
        model.dispose();
      }
    });
  }
}
