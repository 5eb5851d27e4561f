// Llama2cTokenizer (llama2.c tokenizer.bin, run.c encode/decode) against stories260K.reference.json,
// which an independent NumPy port of run.c produced.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { readLlama2cTokenizer } from '../src/io/llama2c.js';
import { Llama2cTokenizer, loadTokenizer } from '../src/tokenizer/index.js';
import { FIXTURES } from './tokenizer-fixtures.js';

const TOK512 = path.join(FIXTURES, 'stories260K', 'tok512.bin');
const reference = JSON.parse(
  fs.readFileSync(path.join(FIXTURES, 'stories260K', 'stories260K.reference.json'), 'utf8'),
) as {
  encode_llama2c: { text: string; token_ids: number[] };
  greedy_from_bos: { token_ids: number[]; text: string };
};

test('tok512.bin: the vocabulary has the spec layout (512 tokens, specials, byte tokens, merge scores)', () => {
  const tok = Llama2cTokenizer.fromFile(TOK512, 512);
  assert.equal(tok.vocabSize, 512);
  assert.deepEqual(
    [0, 1, 2, 3, 258].map((i) => tok.idToToken(i)),
    ['<unk>', '\n<s>\n', '\n</s>\n', '<0x00>', '<0xFF>'],
  );
  // Scores come from src/io/llama2c.ts's reader; merges are scored -(id - 259) in tok512.
  const scores = readLlama2cTokenizer(TOK512, 512).scores;
  for (let id = 259; id < 512; id++) assert.equal(scores[id], -(id - 259), `score of merge ${id}`);
});

test('tok512.bin: encoding the reference prompt gives the recorded ids (BOS, dummy prefix, merges)', () => {
  const tok = loadTokenizer(TOK512, { vocabSize: 512 });
  assert.ok(tok instanceof Llama2cTokenizer);
  assert.deepEqual(tok.encode(reference.encode_llama2c.text), reference.encode_llama2c.token_ids);
  assert.deepEqual(
    tok.encode(reference.encode_llama2c.text, { addSpecialTokens: false }),
    reference.encode_llama2c.token_ids.slice(1),
  );
});

test('tok512.bin: decoding the reference greedy ids gives the recorded text', () => {
  const tok = Llama2cTokenizer.fromFile(TOK512);
  // Generation starts from BOS, which run.c never prints; the first piece's space is dropped after it.
  assert.equal(
    tok.decode([1, ...reference.greedy_from_bos.token_ids], { skipSpecialTokens: true }),
    reference.greedy_from_bos.text,
  );
  assert.equal(tok.decode(reference.greedy_from_bos.token_ids), reference.greedy_from_bos.text);
});

test('tok512.bin: characters without a piece fall back to byte tokens (id = byte + 3) and decode back', () => {
  const tok = Llama2cTokenizer.fromFile(TOK512);
  const text = 'Lily ate 日本 cake ✓';
  const ids = tok.encode(text, { addSpecialTokens: false });
  const utf8 = [...Buffer.from('日本', 'utf8')].map((b) => b + 3);
  const at = ids.findIndex((_id, i) => utf8.every((u, k) => ids[i + k] === u));
  assert.ok(at >= 0, `byte tokens ${utf8} appear in ${ids}`);
  assert.equal(tok.decode(ids), text);
  assert.equal(tok.decode([1, ...ids, 2]), `<s>${text}</s>`);
  assert.equal(tok.decode([1, ...ids, 2], { skipSpecialTokens: true }), text);
  assert.deepEqual(tok.encode(''), [1]);
  assert.deepEqual(tok.encode('hi</s>', { addSpecialTokens: false }).at(-1), 2);
  assert.deepEqual(
    [tok.bosId, tok.eosId, tok.unkId, tok.vocabSize, tok.addBos, tok.addEos],
    [1, 2, 0, 512, true, false],
  );
  assert.deepEqual(
    [0, 1, 2, 3, 300].map((i) => tok.isSpecial(i)),
    [true, true, true, false, false],
  );
});

test('tok512.bin: a wrong vocab size, a truncated file or a too-small vocabulary is a clear error', () => {
  assert.throws(() => loadTokenizer(TOK512, { vocabSize: 500 }), /trailing bytes after 500 tokens/);
  assert.throws(() => loadTokenizer(TOK512, { vocabSize: 513 }), /tok512\.bin/);
  const bytes = fs.readFileSync(TOK512);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-tok-'));
  try {
    const cut = path.join(dir, 'tokenizer.bin');
    fs.writeFileSync(cut, bytes.subarray(0, 3001));
    assert.throws(() => loadTokenizer(cut), /tokenizer\.bin/);
    // 100 whole tokens parse, but a llama2.c vocabulary needs 3 specials + 256 byte tokens first.
    let end = 4;
    for (let i = 0; i < 100; i++) end += 8 + bytes.readInt32LE(end + 4);
    fs.writeFileSync(cut, bytes.subarray(0, end));
    assert.throws(() => loadTokenizer(cut), /only 100 tokens/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
