// Tokenizers from GGUF vocabularies against llama.cpp's test-tokenizer-0 vectors, and the
// stories260K GGUF vocabulary against the llama2.c tokenizer.bin of the same model.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { readGgufMetadata } from '../src/io/gguf.js';
import {
  Llama2cTokenizer,
  SpmTokenizer,
  loadTokenizer,
  tokenizerFromGgufMetadata,
  type Tokenizer,
} from '../src/tokenizer/index.js';
import { FIXTURES, llamaCppVectors, materialize, readJsonFixture } from './tokenizer-fixtures.js';

function checkVectors(tok: Tokenizer, vocab: string): void {
  const vectors = llamaCppVectors(vocab);
  assert.equal(vectors.length, 46);
  for (const { text, ids } of vectors) {
    // The .out files hold ids without BOS (llama.cpp encodes them with add_special = false).
    assert.deepEqual(
      tok.encode(text, { addSpecialTokens: false }),
      ids,
      `encode ${JSON.stringify(text)}`,
    );
    assert.equal(tok.decode(ids), text, `decode ${JSON.stringify(text)}`);
  }
}

test('GGUF llama (SPM) vocabulary: all llama.cpp ggml-vocab-llama-spm vectors', () => {
  const tok = loadTokenizer(path.join(FIXTURES, 'gguf-vocab', 'ggml-vocab-llama-spm.gguf'));
  assert.ok(tok instanceof SpmTokenizer);
  assert.deepEqual(
    [tok.vocabSize, tok.unkId, tok.bosId, tok.eosId, tok.addBos, tok.addEos],
    [32000, 0, 1, 2, true, false],
  );
  assert.deepEqual([tok.bosToken, tok.eosToken], ['<s>', '</s>']);
  checkVectors(tok, 'llama-spm');
  assert.deepEqual(tok.encode('Hello world'), [1, 15043, 3186]);
  assert.deepEqual(tok.encode('Hello</s>', { addSpecialTokens: false }), [15043, 2]);
  assert.equal(tok.decode([1, 15043, 3186, 2]), '<s> Hello world</s>');
  assert.equal(tok.decode([1, 15043, 3186, 2], { skipSpecialTokens: true }), 'Hello world');
});

test('GGUF llama (SPM) vocabulary: reproduces HF Python ids for the same Llama-2 vocabulary (TinyLlama baselines)', () => {
  // ggml-vocab-llama-spm carries the same 32000 pieces as TinyLlama's tokenizer.json.
  const tok = loadTokenizer(path.join(FIXTURES, 'gguf-vocab', 'ggml-vocab-llama-spm.gguf'));
  const inputs = readJsonFixture<{ inputs: { id: string; text: string }[] }>(
    'swift-transformers/MultilingualConformance/inputs.json',
  ).inputs;
  const baseline = readJsonFixture<{
    entries: Record<string, { input_ids: number[]; decoded_skip_special: string }>;
  }>(
    'swift-transformers/MultilingualConformance/baselines/TinyLlama__TinyLlama-1.1B-Chat-v1.0.json',
  ).entries;
  for (const { id, text } of inputs) {
    const ids = tok.encode(text);
    assert.deepEqual(ids, baseline[id]!.input_ids, id);
    assert.equal(
      tok.decode(ids, { skipSpecialTokens: true }),
      baseline[id]!.decoded_skip_special,
      id,
    );
  }
  const cases = readJsonFixture<
    Record<string, { input: string; encoded: { input_ids: number[] } }[]>
  >('swift-transformers/tokenizer_tests.json')['coreml-projects/Llama-2-7b-chat-coreml']!;
  for (const c of cases)
    assert.deepEqual(tok.encode(c.input), c.encoded.input_ids, JSON.stringify(c.input));
});

let gpt2Folder: { dir: string; cleanup: () => void };
before(() => {
  gpt2Folder = materialize({ 'llama.cpp-vocab/ggml-vocab-gpt-2.gguf.gz': 'ggml-vocab-gpt-2.gguf' });
});
after(() => gpt2Folder.cleanup());

test('GGUF gpt2 (byte-level BPE, pre gpt-2) vocabulary: all llama.cpp ggml-vocab-gpt-2 vectors', () => {
  const tok = loadTokenizer(path.join(gpt2Folder.dir, 'ggml-vocab-gpt-2.gguf'));
  assert.deepEqual(
    [tok.vocabSize, tok.bosId, tok.eosId, tok.addBos, tok.addEos],
    [50257, 50256, 50256, false, false],
  );
  assert.deepEqual(tok.eosIds, [50256]);
  assert.equal(tok.isSpecial(50256), true);
  checkVectors(tok, 'gpt-2');
  assert.deepEqual(tok.encode('Hello<|endoftext|>'), [15496, 50256]);
  // Same vocabulary as openai-community/gpt2: HF Python's MultilingualConformance outputs.
  const inputs = readJsonFixture<{ inputs: { id: string; text: string }[] }>(
    'swift-transformers/MultilingualConformance/inputs.json',
  ).inputs;
  const baseline = readJsonFixture<{
    entries: Record<string, { input_ids: number[]; decoded_skip_special: string }>;
  }>('swift-transformers/MultilingualConformance/baselines/openai-community__gpt2.json').entries;
  for (const { id, text } of inputs) {
    const ids = tok.encode(text);
    assert.deepEqual(ids, baseline[id]!.input_ids, id);
    assert.equal(
      tok.decode(ids, { skipSpecialTokens: true }),
      baseline[id]!.decoded_skip_special,
      id,
    );
  }
});

test('GGUF: stories260K embedded vocabulary encodes like its llama2.c tok512.bin', () => {
  const meta = readGgufMetadata(path.join(FIXTURES, 'stories260K', 'stories260K.gguf')).metadata;
  const fromGguf = tokenizerFromGgufMetadata(meta);
  const fromBin = Llama2cTokenizer.fromFile(path.join(FIXTURES, 'stories260K', 'tok512.bin'), 512);
  const prompts = [
    'Once upon a time, there was a little girl named Lily.',
    'Tom and Sue\'s "ball" was red!',
    '   leading spaces',
    'trailing spaces  ',
    'One day,\n\nthey went to the park. 日本 😀',
    'a',
  ];
  for (const p of prompts) {
    const ids = fromGguf.encode(p);
    assert.deepEqual(ids, fromBin.encode(p), `same ids for ${JSON.stringify(p)}`);
    assert.equal(fromGguf.decode(ids, { skipSpecialTokens: true }), p);
  }
  // Both must also agree with the independent run.c reference encoding.
  assert.deepEqual(
    fromGguf.encode(prompts[0]!),
    [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426],
  );
});

test('GGUF: unsupported or missing vocabularies are clear errors', () => {
  assert.throws(() => tokenizerFromGgufMetadata(new Map()), /no tokenizer\.ggml\.model/);
  assert.throws(
    () =>
      tokenizerFromGgufMetadata(
        new Map<string, never>([
          ['tokenizer.ggml.model', 'bert' as never],
          ['tokenizer.ggml.tokens', ['a'] as never],
        ]),
      ),
    /tokenizer model 'bert' is not supported/,
  );
  const meta = new Map(
    readGgufMetadata(path.join(gpt2Folder.dir, 'ggml-vocab-gpt-2.gguf')).metadata,
  );
  meta.set('tokenizer.ggml.pre', 'no-such-pre');
  assert.throws(
    () => tokenizerFromGgufMetadata(meta),
    /unsupported byte-level BPE pre-tokenizer 'no-such-pre'/,
  );
});
