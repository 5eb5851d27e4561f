// llama2.c checkpoints (v0 legacy, v0 with unshared classifier, v1 "ak42") and tokenizer.bin.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GgufMetadataView, readGgufMetadata } from '../src/io/gguf.js';
import { Llama2cCheckpoint, readLlama2cTokenizer } from '../src/io/llama2c.js';
import { openCheckpoint } from '../src/io/checkpoint.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const BIN = here('../fixtures/stories260K/stories260K.bin');
const TOK = here('../fixtures/stories260K/tok512.bin');
const GGUF = here('../fixtures/stories260K/stories260K.gguf');

test('stories260K.bin v0 header and tensor layout', () => {
  const ck = Llama2cCheckpoint.open(BIN);
  try {
    assert.deepEqual(ck.header, {
      version: 0,
      dim: 64,
      hiddenDim: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      vocabSize: 512,
      seqLen: 512,
      sharedClassifier: true,
    });
    assert.equal(ck.tensor('token_embedding').offset, 28);
    // rms_att follows the 512×64 embedding: 28 + 4·32768.
    assert.equal(ck.tensor('layers.0.rms_att').offset, 28 + 4 * 512 * 64);
    assert.deepEqual(ck.tensor('layers.4.w2').shape, [64, 172]);
    // rms_final then the two freq_cis tables [512, 4] end the file exactly.
    const fin = ck.tensor('rms_final');
    assert.equal(fin.offset + fin.byteSize + 2 * 4 * 512 * 4, fs.statSync(BIN).size);
    assert.ok(!ck.tensors.has('wcls'));
  } finally {
    ck.close();
  }
});

/** Rebuilds stories260K as a v1 ("ak42") file and as a v0 file with an explicit classifier. */
function rewrite(dir: string): { v1: string; v0Unshared: string; wcls: Float32Array } {
  const ck = Llama2cCheckpoint.open(BIN);
  try {
    const h = ck.header;
    const t = (n: string): Buffer => Buffer.from(ck.readF32(n).buffer);
    const layers = (kind: string): Buffer[] =>
      Array.from({ length: h.nLayers }, (_, l) => t(`layers.${l}.${kind}`));
    // An unshared classifier distinct from the embedding, so a mix-up would show.
    const wcls = ck.readF32('token_embedding').map((v, i) => v * 0.5 + (i % 7));
    const v1Header = Buffer.alloc(256);
    v1Header.writeUInt32LE(0x616b3432, 0);
    v1Header.writeInt32LE(1, 4);
    [h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.vocabSize, h.seqLen].forEach((v, i) =>
      v1Header.writeInt32LE(v, 8 + 4 * i),
    );
    v1Header.writeUInt8(0, 36); // unshared
    const v1 = Buffer.concat([
      v1Header,
      ...layers('rms_att'),
      ...layers('rms_ffn'),
      t('rms_final'),
      t('token_embedding'),
      ...layers('wq'),
      ...layers('wk'),
      ...layers('wv'),
      ...layers('wo'),
      ...layers('w1'),
      ...layers('w2'),
      ...layers('w3'),
      Buffer.from(wcls.buffer),
    ]);
    const original = fs.readFileSync(BIN);
    const v0 = Buffer.concat([original, Buffer.from(wcls.buffer)]);
    v0.writeInt32LE(-h.vocabSize, 20); // negative vocab ⇒ classifier stored at the end
    const p1 = path.join(dir, 'v1.bin');
    const p0 = path.join(dir, 'v0-unshared.bin');
    fs.writeFileSync(p1, v1);
    fs.writeFileSync(p0, v0);
    return { v1: p1, v0Unshared: p0, wcls };
  } finally {
    ck.close();
  }
}

test('v1 and unshared-classifier v0 files load the same canonical tensors plus lm_head', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-l2c-'));
  const base = openCheckpoint(BIN);
  try {
    const { v1, v0Unshared, wcls } = rewrite(dir);
    for (const file of [v1, v0Unshared]) {
      const ck = openCheckpoint(file);
      try {
        assert.equal(ck.source, 'llama2c');
        assert.deepEqual(ck.config, { ...base.config, tieWordEmbeddings: false });
        assert.deepEqual(ck.tensorNames, [...base.tensorNames, 'lm_head.weight']);
        for (const n of base.tensorNames)
          assert.deepEqual(ck.loadTensor(n), base.loadTensor(n), `${file} ${n}`);
        assert.deepEqual(ck.loadTensor('lm_head.weight'), wcls);
      } finally {
        ck.close();
      }
    }
  } finally {
    base.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('header and size checks', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-l2c-'));
  try {
    const original = fs.readFileSync(BIN);
    const f = path.join(dir, 'm.bin');
    const cases: [string, (b: Buffer) => Buffer, RegExp][] = [
      [
        'truncated',
        (b) => b.subarray(0, b.length - 4),
        /m\.bin: file size 1056536 does not match the v0 header .* expected 1056540 bytes/,
      ],
      ['zero heads', (b) => (b.writeInt32LE(0, 12), b), /n_heads = 0 is not a plausible size/],
      ['kv not dividing', (b) => (b.writeInt32LE(3, 16), b), /not a multiple of n_kv_heads 3/],
      [
        'v2',
        (b) => Buffer.concat([Buffer.from([0x32, 0x34, 0x6b, 0x61, 2, 0, 0, 0]), b]),
        /version 2 \(Q8_0/,
      ],
      [
        'v1 bad flag',
        (b) => {
          const h = Buffer.alloc(256);
          h.writeUInt32LE(0x616b3432, 0);
          h.writeInt32LE(1, 4);
          b.copy(h, 8, 0, 28);
          h.writeUInt8(7, 36);
          return Buffer.concat([h, b.subarray(28)]);
        },
        /shared_classifier flag 7/,
      ],
    ];
    for (const [what, mutate, pattern] of cases) {
      fs.writeFileSync(f, mutate(Buffer.from(original)));
      assert.throws(() => Llama2cCheckpoint.open(f).close(), pattern, what);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('tok512.bin: 512 pieces with llama2.c spellings; same pieces and scores as the GGUF vocabulary', () => {
  const tok = readLlama2cTokenizer(TOK, 512);
  // The file's first int32 is 7 (bytes 07 00 00 00; the shared-assets README says 9, which is wrong),
  // and it equals the longest piece ("\n</s>\n" is 7 bytes).
  assert.equal(tok.maxTokenLength, 7);
  assert.equal(Math.max(...tok.tokens.map((b) => b.length)), 7);
  assert.equal(tok.tokens.length, 512);
  const text = tok.tokens.map((b) => Buffer.from(b).toString('utf8'));
  assert.deepEqual(text.slice(0, 4), ['<unk>', '\n<s>\n', '\n</s>\n', '<0x00>']);
  assert.equal(text[258], '<0xFF>');
  for (let id = 259; id < 512; id++) assert.equal(tok.scores[id], -(id - 259));
  // Independent source: the GGUF's embedded vocabulary (U+2581 for spaces, <s>/</s> for BOS/EOS).
  const m = new GgufMetadataView(readGgufMetadata(GGUF));
  const ggufTokens = m.stringArray('tokenizer.ggml.tokens')!;
  const ggufScores = m.numberArray('tokenizer.ggml.scores')!;
  for (let id = 3; id < 512; id++) {
    assert.equal(text[id], ggufTokens[id]!.replaceAll('\u2581', ' '), `token ${id}`);
    assert.equal(tok.scores[id], ggufScores[id], `score ${id}`);
  }
  // Without a vocab size the file is read to its end; a wrong size is reported.
  assert.equal(readLlama2cTokenizer(TOK).tokens.length, 512);
  assert.throws(
    () => readLlama2cTokenizer(TOK, 500),
    /tok512\.bin: \d+ trailing bytes after 500 tokens/,
  );
  assert.throws(
    () => readLlama2cTokenizer(TOK, 600),
    /tok512\.bin: token 512 score .*runs past end of file/,
  );
});
