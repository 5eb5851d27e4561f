// Issue 11.10: every error names the file and the place and says what was expected. Each case
// below used to surface as a raw library or system message that named nothing ("x.split is not a
// function", "Unterminated string in JSON at position 996", "quantize4bit: non-finite value NaN at
// element 292", "EBADF: bad file descriptor, write", "unknown dtype undefined"), as "not found"
// for a tokenizer that exists, or as `undefined` token ids.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { main } from '../src/cli/main.js';
import { loadModel } from '../src/load/load-model.js';
import { writeFileAtomic } from '../src/io/atomic-write.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { configToHf } from '../src/io/config.js';
import { readLlama2cTokenizer } from '../src/io/llama2c.js';
import { loadPeftAdapter } from '../src/io/peft.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import { Llama2cTokenizer, loadTokenizer } from '../src/tokenizer/index.js';
import { readTokenizerFixture } from './tokenizer-fixtures.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-messages-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const TOK = here('../fixtures/stories260K/tok512.bin');
const MODEL = here('../fixtures/stories260K/stories260K.bin');

function folder(name: string, files: Record<string, string | Buffer>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const [f, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), content);
  return dir;
}

test('tokenizer.json: malformed JSON and wrong field types name the file and the field', () => {
  const text = readTokenizerFixture('tinyllama/tokenizer.json.gz').toString('utf8');
  const cut = folder('cut', { 'tokenizer.json': text.slice(0, 996) });
  assert.throws(
    () => loadTokenizer(cut),
    (e: Error) =>
      e.message.startsWith(`${path.join(cut, 'tokenizer.json')}: cannot read JSON: `) &&
      !/\n/.test(e.message),
  );
  const json = JSON.parse(text) as {
    model: { merges: unknown[] };
    pre_tokenizer: unknown;
    added_tokens: unknown[];
  };
  const merges = folder('merges', {
    'tokenizer.json': JSON.stringify({
      ...json,
      model: { ...json.model, merges: [1, ...json.model.merges.slice(1)] },
    }),
  });
  assert.throws(
    () => loadTokenizer(merges),
    new RegExp(
      `^TokenizerFileError: ${path.join(merges, 'tokenizer.json').replace(/[.\\/]/g, '\\$&')}: field 'model\\.merges\\[0\\]' must be "left right" or \\["left", "right"\\] \\(found 1\\)$`,
    ),
  );
  const pre = folder('pre', {
    'tokenizer.json': JSON.stringify({
      ...json,
      pre_tokenizer: { type: 'Metaspace', replacement: 7 },
    }),
  });
  assert.throws(
    () => loadTokenizer(pre),
    /tokenizer\.json: field 'pre_tokenizer\.replacement' must be a string \(found number 7\)$/,
  );
  const added = folder('added', {
    'tokenizer.json': JSON.stringify({ ...json, added_tokens: [{ id: 1 }] }),
  });
  assert.throws(
    () => loadTokenizer(added),
    /tokenizer\.json: field 'added_tokens\[0\]\.content' must be a string \(found nothing\)$/,
  );
  const unknown = folder('unknown', {
    'tokenizer.json': JSON.stringify({ ...json, pre_tokenizer: { type: 'NoSuchThing' } }),
  });
  assert.throws(
    () => loadTokenizer(unknown),
    /tokenizer\.json: field 'pre_tokenizer' is malformed or unsupported \(Unknown PreTokenizer type: NoSuchThing\)$/,
  );
  const config = folder('config', {
    'tokenizer.json': text,
    'tokenizer_config.json': '{"chat_template": "x",',
  });
  assert.throws(() => loadTokenizer(config), /tokenizer_config\.json: cannot read JSON: /);
});

test('a non-finite weight names the checkpoint and the tensor', async () => {
  const ck = openCheckpoint(MODEL);
  const dir = path.join(tmp, 'nan-model');
  fs.mkdirSync(dir);
  try {
    const tensors = ck.tensorNames.map((n) => {
      const data = ck.loadTensor(n);
      if (n === 'model.layers.1.self_attn.q_proj.weight') data[292] = NaN;
      return { name: n, dtype: 'F32', shape: [...ck.shapeOf(n)], data };
    });
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(configToHf(ck.config)));
  } finally {
    ck.close();
  }
  for (const backend of ['ref', 'cpu'] as const) {
    await assert.rejects(
      loadModel({
        model: dir,
        tokenizer: TOK,
        backend,
        quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
      }),
      (e: Error) =>
        /^nan-model: tensor 'model\.layers\.1\.self_attn\.q_proj\.weight': .*non-finite value NaN at element 292/.test(
          e.message,
        ),
    );
  }
});

test('a failed write names the file being written', () => {
  const target = path.join(tmp, 'out', 'adapter_model.safetensors');
  fs.mkdirSync(path.dirname(target));
  // The system's own message (e.g. "ENOSPC: no space left on device, write") names no file.
  assert.throws(
    () =>
      writeFileAtomic(target, (fd) => {
        fs.closeSync(fd);
        fs.writeSync(fd, 'x');
      }),
    (e: Error) => e.message.startsWith(`${target}: cannot write: EBADF`),
  );
  assert.deepEqual(fs.readdirSync(path.dirname(target)), [], 'no temporary file is left behind');
});

test('safetensors entries missing dtype or data_offsets say which field', () => {
  const header = (json: string): Buffer => {
    const body = Buffer.from(json);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(body.length));
    return Buffer.concat([len, body]);
  };
  const file = path.join(tmp, 'nodtype.safetensors');
  fs.writeFileSync(file, header('{"w":{"shape":[0],"data_offsets":[0,0]}}'));
  assert.throws(
    () => SafetensorsFile.open(file),
    /^FileFormatError: nodtype\.safetensors: tensor 'w': field 'dtype' is missing \(an entry needs dtype, shape and data_offsets\)$/,
  );
  fs.writeFileSync(file, header('{"w":{"dtype":"F99","shape":[0],"data_offsets":[0,0]}}'));
  assert.throws(
    () => SafetensorsFile.open(file),
    /tensor 'w': unknown dtype "F99" \(expected one of BOOL, U8, .*F32.*\)$/,
  );
});

test('info reports a malformed tokenizer as malformed, not as "not found"', async () => {
  const dir = folder('info-model', {
    'tokenizer.bin': Buffer.from(fs.readFileSync(TOK).subarray(0, 1000)),
  });
  fs.copyFileSync(MODEL, path.join(dir, 'model.bin'));
  const lines: string[] = [];
  const original = console.log;
  console.log = (...parts: unknown[]) => lines.push(parts.join(' '));
  try {
    assert.equal(await main(['info', path.join(dir, 'model.bin')]), 0);
  } finally {
    console.log = original;
  }
  const line = lines.find((l) => l.startsWith('tokenizer'))!;
  assert.match(line, /^tokenizer\s+cannot load .*tokenizer\.bin: /);
  assert.doesNotMatch(line, /not found/);
  const missing: string[] = [];
  console.log = (...parts: unknown[]) => missing.push(parts.join(' '));
  try {
    fs.rmSync(path.join(dir, 'tokenizer.bin'));
    assert.equal(await main(['info', path.join(dir, 'model.bin')]), 0);
  } finally {
    console.log = original;
  }
  assert.match(
    missing.find((l) => l.startsWith('tokenizer'))!,
    /^tokenizer\s+not found \(/,
  );
});

test('a truncated tokenizer.bin read without a vocab size never encodes to undefined ids', () => {
  // Cut tok512.bin after its first 300 tokens (at a token boundary): no error is possible without
  // the vocab size, but every id must be a real token and the text must come back.
  const full = readLlama2cTokenizer(TOK);
  let offset = 4;
  const bytes = fs.readFileSync(TOK);
  for (let i = 0; i < 300; i++) offset += 8 + bytes.readInt32LE(offset + 4);
  const file = path.join(tmp, 'tok300.bin');
  fs.writeFileSync(file, bytes.subarray(0, offset));
  const tok = loadTokenizer(file) as Llama2cTokenizer;
  assert.equal(tok.vocabSize, 300);
  assert.ok(full.tokens.length === 512);
  for (const text of [
    'Once upon a time, there was a little girl.',
    'héllo wörld ✓',
    ' leading space',
  ]) {
    const ids = tok.encode(text);
    assert.ok(
      ids.every((id) => Number.isInteger(id) && id >= 0 && id < 300),
      `${text}: ${JSON.stringify(ids)}`,
    );
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), text);
  }
  // A file whose byte tokens are not where run.c expects them is refused, naming the file.
  const shuffled = Buffer.from(bytes);
  shuffled.write('<0xZZ>', 66, 'latin1'); // token 4's text (tokens: 4-byte header, then score, length, bytes each)
  const bad = path.join(tmp, 'badbytes.bin');
  fs.writeFileSync(bad, shuffled);
  assert.throws(
    () => loadTokenizer(bad),
    /badbytes\.bin: token 4 is "<0xZZ>"; expected the byte token <0x01> \(ids 3\.\.258 are the 256 byte tokens\)$/,
  );
});

test('a PEFT adapter_config.json missing a field says which, and that it is missing', () => {
  const dir = folder('adapter', {
    'adapter_config.json': JSON.stringify({ peft_type: 'LORA', lora_alpha: 16 }),
    'adapter_model.safetensors': '',
  });
  assert.throws(
    () => loadPeftAdapter(dir),
    (e: Error) =>
      e.message ===
      `${path.join(dir, 'adapter_config.json')}: r: Invalid input: expected number, but the field is missing`,
  );
});

test('a GGUF whose vocabulary metadata is incomplete is named when loaded as a tokenizer', async () => {
  const { writeGguf } = await import('../src/io/gguf-writer.js');
  const { GgufValueType } = await import('../src/io/gguf.js');
  const file = path.join(tmp, 'novocab.gguf');
  writeGguf(
    file,
    [
      { key: 'general.architecture', type: GgufValueType.STRING, value: 'llama' },
      { key: 'tokenizer.ggml.model', type: GgufValueType.STRING, value: 'llama' },
    ],
    [],
  );
  assert.throws(
    () => loadTokenizer(file),
    (e: Error) => e.message.startsWith(`${file}: `) && /tokenizer\.ggml\.tokens/.test(e.message),
  );
});

test('a piece the vocabulary lacks, with no usable unk_token, is an error naming the file, not an undefined id', () => {
  // Found by the 100,000-case fuzz run (case 69145, seed 2026): `"unk_token": {}` loaded, and
  // encoding then gave `undefined` ids for every piece outside the vocabulary.
  const tokenizerJson = (unk: unknown) =>
    JSON.stringify({
      version: '1.0',
      added_tokens: [],
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      model: {
        type: 'BPE',
        unk_token: unk,
        fuse_unk: true,
        vocab: { '<unk>': 0, a: 1, b: 2, ab: 3 },
        merges: ['a b'],
      },
    });
  const good = loadTokenizer(folder('unk-good', { 'tokenizer.json': tokenizerJson('<unk>') }));
  assert.deepEqual(good.encode('abc', { addSpecialTokens: false }), [3, 0]);

  const object = folder('unk-object', { 'tokenizer.json': tokenizerJson({}) });
  assert.throws(
    () => loadTokenizer(object),
    (e: Error) =>
      e.message ===
      `${path.join(object, 'tokenizer.json')}: field 'model.unk_token' must be a token string or null (found {})`,
  );

  const missing = folder('unk-missing', { 'tokenizer.json': tokenizerJson('<nope>') });
  const tok = loadTokenizer(missing);
  assert.deepEqual(tok.encode('ab', { addSpecialTokens: false }), [3]);
  assert.throws(
    () => tok.encode('abc', { addSpecialTokens: false }),
    (e: Error) =>
      e.message.startsWith(`${path.join(missing, 'tokenizer.json')}: the piece `) &&
      /has no token id in 'model\.vocab'/.test(e.message),
  );
});
