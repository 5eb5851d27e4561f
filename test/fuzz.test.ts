// Issue 11.11: a bounded run of the mutation fuzzer (test/fuzz/) over every parser — safetensors,
// HF config, GGUF, llama2.c, tokenizer.bin, tokenizer.json, tokenizer_config.json + chat template,
// PEFT adapters, GGUF LoRA, and JSONL/JSON/CSV/TSV/text data. Each case runs in a child process
// with a heap cap, a memory watch and a deadline; a crash, hang, memory blow-up or unclear message
// (no file name, raw engine text) fails. Fixed seed and case count, so a failure reproduces with
// `npm run fuzz -- --seed 20261206 --from N --cases 1 --keep`. Long runs: `npm run fuzz -- --cases 100000`.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runFuzz } from './fuzz/run.js';

test(
  'fuzz: 200 mutated files across every parser load or fail with a clear error',
  { timeout: 240_000 },
  async () => {
    const summary = await runFuzz({
      cases: 200,
      seed: 20261206,
      jobs: 2,
      batch: 100,
      caseTimeoutMs: 60_000,
    });
    const bad = Object.fromEntries(
      Object.entries(summary.examples).map(([k, v]) => [k, v.slice(0, 3)]),
    );
    assert.equal(summary.cases, 200);
    assert.deepEqual(
      {
        crash: summary.counts.crash,
        hang: summary.counts.hang,
        blowup: summary.counts.blowup,
        unclear: summary.counts.unclear,
      },
      { crash: 0, hang: 0, blowup: 0, unclear: 0 },
      JSON.stringify(bad),
    );
    // Both outcomes occur: the fuzzer explores inputs that load as well as ones that fail.
    assert.ok(summary.counts.ok > 0 && summary.counts.clean > 0, JSON.stringify(summary.counts));
    assert.equal(Object.keys(summary.bySubject).length, 10);
  },
);
