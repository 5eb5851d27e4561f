// The tokenizers of the model families load through our tokenizer layer (tokenizer.json via
// @huggingface/tokenizers, HfTokenizer) and give the ids the families' reference outputs give:
// - Qwen2.5 and Qwen3 share one byte-level BPE (151643 tokens, the same merges, NFC, the same
//   split regex); Qwen3 adds four special tokens (151665–151668: tool_response, think). The
//   fixture is Qwen3's tokenizer.json; Qwen2.5's is the same file with Qwen2.5's 22 added tokens,
//   which its own tokenizer_config.json lists (checked equal here). Expected ids: swift-transformers'
//   MultilingualConformance baseline for Qwen/Qwen2.5-0.5B (transformers 4.57.1) and llama.cpp's
//   test-tokenizer-0 vectors for its qwen2 vocabulary.
// - Gemma (1/2): test/tokenizer-hf.test.ts runs swift-transformers' pcuenq/gemma-tokenizer cases.
// Provenance and licenses: fixtures/tokenizers/NOTICE.md.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HfTokenizer, loadTokenizer, type Tokenizer } from '../src/tokenizer/index.js';
import {
  checkBaseline,
  llamaCppVectors,
  materialize,
  readJsonFixture,
  readTokenizerFixture,
} from './tokenizer-fixtures.js';

type Json = Record<string, unknown>;
interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  single_word: boolean;
}

const qwen3Json = (): Json => readJsonFixture<Json>('qwen3/tokenizer.json.gz');

/** Qwen2.5's tokenizer: the shared BPE with the added tokens Qwen2.5's tokenizer_config lists. */
function qwen25(): Tokenizer {
  const json = qwen3Json();
  const config = readJsonFixture<Json>('qwen2.5/tokenizer_config.json');
  const decoder = config.added_tokens_decoder as Record<string, Omit<AddedToken, 'id'>>;
  const added = (json.added_tokens as AddedToken[]).filter((t) => decoder[String(t.id)]);
  // Qwen3's first 22 added tokens are Qwen2.5's, flag for flag.
  assert.equal(added.length, Object.keys(decoder).length);
  for (const t of added) {
    const { id, ...rest } = t;
    assert.deepEqual(rest, decoder[String(id)], `added token ${id}`);
  }
  assert.deepEqual(
    (json.added_tokens as AddedToken[]).filter((t) => !decoder[String(t.id)]).map((t) => t.id),
    [151665, 151666, 151667, 151668],
  );
  return new HfTokenizer({
    tokenizerJson: { ...json, added_tokens: added },
    tokenizerConfig: config,
  });
}

test('Qwen2.5: MultilingualConformance ids, tokens and decodes equal transformers 4.57.1 (Qwen/Qwen2.5-0.5B)', () => {
  const tok = qwen25();
  assert.equal(tok.vocabSize, 151665);
  assert.equal(tok.addBos, false);
  assert.equal(tok.eosId, 151645, '<|im_end|> (the instruct tokenizer_config)');
  assert.equal(tok.padId, 151643);
  checkBaseline(tok, 'Qwen__Qwen2.5-0.5B.json');
});

test("Qwen2.5: llama.cpp's qwen2 vocabulary vectors (test-tokenizer-0) encode to the same ids", () => {
  const tok = qwen25();
  const vectors = llamaCppVectors('qwen2');
  assert.ok(vectors.length >= 30);
  for (const { text, ids } of vectors) {
    assert.deepEqual(
      tok.encode(text, { addSpecialTokens: false }),
      ids,
      `qwen2 ${JSON.stringify(text)}`,
    );
    assert.equal(tok.decode(ids), text, `decode ${JSON.stringify(text)}`);
  }
});

test('Qwen3 folder (tokenizer.json + tokenizer_config.json as published): Qwen2.5 ids for text, its own special tokens and chat template', () => {
  const dir = materialize({
    'qwen3/tokenizer.json.gz': 'tokenizer.json',
    'qwen3/tokenizer_config.json': 'tokenizer_config.json',
  });
  try {
    const tok = loadTokenizer(dir.dir);
    assert.equal(tok.vocabSize, 151669);
    assert.equal(tok.addBos, false);
    assert.deepEqual([tok.eosId, tok.padId], [151645, 151643]);
    // The same BPE as Qwen2.5: the baseline's ids (no special tokens in its inputs).
    checkBaseline(tok, 'Qwen__Qwen2.5-0.5B.json');
    // Qwen3's added tokens are single tokens; <think> is not special (it stays in decoded text).
    assert.deepEqual(
      tok.encode('<think>\n\n</think>\n\nHi', { addSpecialTokens: false }),
      [151667, 271, 151668, 271, 13048],
    );
    assert.equal(tok.isSpecial(151667), false);
    assert.equal(tok.isSpecial(151644), true);
    assert.deepEqual(tok.encode('<|im_start|>user', { addSpecialTokens: false }), [151644, 872]);
    assert.equal(tok.decode([151644, 872], { skipSpecialTokens: true }), 'user');
    assert.match(tok.chatTemplate ?? '', /<think>/);
  } finally {
    dir.cleanup();
  }
});

test('the Qwen3 fixture is the published file (sha256 after decompression) and its pieces are bytes', () => {
  const raw = readTokenizerFixture('qwen3/tokenizer.json.gz');
  assert.equal(raw.length, 11422654);
  const json = JSON.parse(raw.toString('utf8')) as { model: { vocab: Record<string, number> } };
  assert.equal(Object.keys(json.model.vocab).length, 151643);
});
