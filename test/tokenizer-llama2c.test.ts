// Llama2cTokenizer (llama2.c tokenizer.bin, run.c encode/decode) against stories260K.reference.json,
// which an independent NumPy port of run.c produced.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Llama2cTokenizer, loadTokenizer, parseLlama2cTokenizer } from '../src/tokenizer/index.js';
import { FIXTURES } from './tokenizer-fixtures.js';

const TOK512 = path.join(FIXTURES, 'stories260K', 'tok512.bin');
const reference = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'stories260K', 'stories260K.reference.json'), 'utf8')) as {
  encode_llama2c: { text: string; token_ids: number[] };
  greedy_from_bos: { token_ids: number[]; text: string };
};

test('tok512.bin: the file layout matches the spec (max_token_length, 512 tokens, byte tokens, merge scores)', () => {
  const vocab = parseLlama2cTokenizer(fs.readFileSync(TOK512), 512);
  // The header is the longest piece length (7 here; the shared assets README says 9, which the file contradicts).
  assert.equal(vocab.maxTokenLength, Math.max(...vocab.pieces.map((p) => p.length)));
  assert.equal(vocab.pieces.length, 512);
  assert.deepEqual(vocab.pieces.slice(0, 3), ['<unk>', '\n<s>\n', '\n</s>\n']);
  assert.equal(vocab.pieces[3], '<0x00>');
  assert.equal(vocab.pieces[258], '<0xFF>');
  for (let id = 259; id < 512; id++) assert.equal(vocab.scores[id], -(id - 259), `score of merge ${id}`);
});

test('tok512.bin: encoding the reference prompt gives the recorded ids (BOS, dummy prefix, merges)', () => {
  const tok = loadTokenizer(TOK512, { vocabSize: 512 });
  assert.ok(tok instanceof Llama2cTokenizer);
  assert.deepEqual(tok.encode(reference.encode_llama2c.text), reference.encode_llama2c.token_ids);
  assert.deepEqual(tok.encode(reference.encode_llama2c.text, { addSpecialTokens: false }), reference.encode_llama2c.token_ids.slice(1));
});

test('tok512.bin: decoding the reference greedy ids gives the recorded text', () => {
  const tok = Llama2cTokenizer.fromFile(TOK512);
  // Generation starts from BOS, which run.c never prints; the first piece's space is dropped after it.
  assert.equal(tok.decode([1, ...reference.greedy_from_bos.token_ids], { skipSpecialTokens: true }), reference.greedy_from_bos.text);
  assert.equal(tok.decode(reference.greedy_from_bos.token_ids), reference.greedy_from_bos.text);
});

test('tok512.bin: characters without a piece fall back to byte tokens (id = byte + 3) and decode back', () => {
  const tok = Llama2cTokenizer.fromFile(TOK512);
  const text = 'Lily ate 日本 cake ✓';
  const ids = tok.encode(text, { addSpecialTokens: false });
  const utf8 = [...Buffer.from('日本', 'utf8')].map((b) => b + 3);
  const at = ids.findIndex((id, i) => utf8.every((u, k) => ids[i + k] === u));
  assert.ok(at >= 0, `byte tokens ${utf8} appear in ${ids}`);
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.decode([1, ...ids, 2]), `<s>${text}</s>`);
  assert.equal(tok.decode([1, ...ids, 2], { skipSpecialTokens: true }), text);
  assert.deepEqual(tok.encode(''), [1]);
  assert.deepEqual(tok.encode('hi</s>', { addSpecialTokens: false }).at(-1), 2);
  assert.deepEqual([tok.bosId, tok.eosId, tok.unkId, tok.vocabSize, tok.addBos, tok.addEos], [1, 2, 0, 512, true, false]);
  assert.deepEqual([0, 1, 2, 3, 300].map((i) => tok.isSpecial(i)), [true, true, true, false, false]);
});

test('tok512.bin: a wrong vocab size or a truncated file is a clear error', () => {
  const bytes = fs.readFileSync(TOK512);
  assert.throws(() => parseLlama2cTokenizer(bytes, 500), /bytes left after 500 tokens/);
  assert.throws(() => parseLlama2cTokenizer(bytes, 513), /token 512: header runs past end of file/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-tok-'));
  try {
    const cut = path.join(dir, 'tokenizer.bin');
    fs.writeFileSync(cut, bytes.subarray(0, 3000));
    assert.throws(() => loadTokenizer(cut), /tokenizer\.bin: token \d+: bad length|header runs past end/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
