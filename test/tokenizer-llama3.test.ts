// Llama 3 tiktoken vocabulary (Meta's tokenizer.model) against HF Python outputs
// (tokenizer_tests.json, llama_3.2_encoded.json) and llama.cpp's ggml-vocab-llama-bpe vectors.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { loadTokenizer, type Tokenizer } from '../src/tokenizer/index.js';
import { llamaCppVectors, materialize, readJsonFixture } from './tokenizer-fixtures.js';

let folder: { dir: string; cleanup: () => void };
let tok: Tokenizer;
before(() => {
  folder = materialize({ 'llama3/tokenizer.model.gz': 'tokenizer.model' });
  tok = loadTokenizer(path.join(folder.dir, 'tokenizer.model'));
});
after(() => folder.cleanup());

test('Llama 3 tiktoken: special tokens from Meta tokenizer.py and BOS added by default', () => {
  assert.equal(tok.vocabSize, 128256);
  assert.deepEqual(
    [tok.bosId, tok.eosId, tok.bosToken, tok.eosToken],
    [128000, 128001, '<|begin_of_text|>', '<|end_of_text|>'],
  );
  assert.ok(tok.eosIds.includes(128009), 'eot_id ends generation');
  assert.equal(tok.addBos, true);
  assert.equal(tok.tokenToId('<|start_header_id|>'), 128006);
  // Meta's list: 12 named specials, then <|reserved_special_token_2..245|> up to 256 in all.
  assert.equal(tok.idToToken(128255), '<|reserved_special_token_245|>');
  assert.equal(tok.padId, 128004);
  assert.deepEqual(
    tok
      .encode('<|start_header_id|>user<|end_header_id|>', { addSpecialTokens: false })
      .filter((i) => tok.isSpecial(i)),
    [128006, 128007],
  );
});

test('Llama 3 tiktoken: all llama.cpp ggml-vocab-llama-bpe vectors encode exactly', () => {
  const vectors = llamaCppVectors('llama-bpe');
  assert.equal(vectors.length, 46);
  for (const { text, ids } of vectors) {
    assert.deepEqual(
      tok.encode(text, { addSpecialTokens: false }),
      ids,
      `encode ${JSON.stringify(text)}`,
    );
  }
});

test('Llama 3 tiktoken: tokenizer_tests.json Llama-3.2 cases (ids and both decodes)', () => {
  const cases = readJsonFixture<
    Record<
      string,
      {
        input: string;
        encoded: { input_ids: number[] };
        decoded_with_special: string;
        decoded_without_special: string;
      }[]
    >
  >('swift-transformers/tokenizer_tests.json')['pcuenq/Llama-3.2-1B-Instruct-tokenizer']!;
  assert.equal(cases.length, 18);
  for (const c of cases) {
    const ids = tok.encode(c.input);
    assert.deepEqual(ids, c.encoded.input_ids, `ids of ${JSON.stringify(c.input)}`);
    assert.equal(tok.decode(ids), c.decoded_with_special);
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), c.decoded_without_special);
  }
});

test('Llama 3 tiktoken: llama_3.2_encoded.json French paragraph', () => {
  const ref = readJsonFixture<{
    text: string;
    bpe_tokens: string[];
    token_ids: number[];
    decoded_text: string;
  }>('swift-transformers/llama_3.2_encoded.json');
  const ids = tok.encode(ref.text);
  assert.deepEqual(ids, ref.token_ids);
  assert.deepEqual(
    ids.slice(1).map((i) => tok.idToToken(i)),
    ref.bpe_tokens,
  );
  assert.equal(tok.decode(ids), ref.decoded_text);
});
