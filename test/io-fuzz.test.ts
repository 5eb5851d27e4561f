// Corrupt inputs: every real checkpoint/tokenizer file truncated at many offsets and with seeded
// random byte flips, plus targeted absurd counts/offsets. Each attempt must either load or throw a
// one-line FileFormatError naming the file — never another exception, a hang or a huge allocation.
// Iteration counts are fixed (not timed) and sized to run in a few seconds.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { FileFormatError } from '../src/io/binary-reader.js';
import { GgufReader, readGgufMetadata } from '../src/io/gguf.js';
import { readLlama2cTokenizer } from '../src/io/llama2c.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { rng } from './util.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-fuzz-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Loads everything a file offers, the way real callers do. */
function loadCheckpoint(file: string): void {
  const ck = openCheckpoint(file);
  try {
    for (const n of ck.tensorNames) ck.loadTensor(n);
  } finally {
    ck.close();
  }
}
function loadSafetensors(file: string): void {
  const st = SafetensorsFile.open(file);
  try {
    for (const t of st.tensors.values()) {
      if (t.dtype === 'U8') st.readRaw(t.name);
      else st.readF32(t.name);
    }
  } finally {
    st.close();
  }
}
function loadVocabGguf(file: string): void {
  readGgufMetadata(file);
  GgufReader.open(file).close();
}

/** Runs `load` on `bytes` written as `name`; returns 'ok' or 'rejected' and fails on anything else. */
function attempt(
  name: string,
  bytes: Uint8Array,
  load: (f: string) => void,
  what: string,
): 'ok' | 'rejected' {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, bytes);
  try {
    load(file);
    return 'ok';
  } catch (e) {
    if (!(e instanceof FileFormatError))
      assert.fail(`${what}: non-format error ${(e as Error)?.stack ?? String(e)}`);
    assert.ok(
      e.message.startsWith(`${name}: `),
      `${what}: message does not name the file: ${e.message}`,
    );
    assert.ok(!/[\r\n]/.test(e.message), `${what}: multi-line message`);
    return 'rejected';
  }
}

interface Subject {
  name: string;
  bytes: Uint8Array;
  load: (f: string) => void;
  /** Where the parseable structure lives (flips there are more interesting than in raw weights). */
  headerBytes: number;
  truncations: number;
  flips: number;
}

function subjects(): Subject[] {
  const stFile = path.join(tmp, 'source.safetensors');
  const ck = openCheckpoint(here('../fixtures/stories260K/stories260K.bin'));
  try {
    const names = ck.tensorNames.slice(0, 12);
    writeSafetensors(
      stFile,
      names.map((n, i) => ({
        name: n,
        dtype: ['F32', 'F16', 'BF16'][i % 3]!,
        shape: [...ck.shapeOf(n)],
        data: ck.loadTensor(n),
      })),
      { format: 'pt' },
    );
  } finally {
    ck.close();
  }
  const read = (p: string): Uint8Array => new Uint8Array(fs.readFileSync(p));
  return [
    {
      name: 'stories260K.gguf',
      bytes: read(here('../fixtures/stories260K/stories260K.gguf')),
      load: loadCheckpoint,
      headerBytes: 14176,
      truncations: 60,
      flips: 60,
    },
    {
      name: 'stories260K.bin',
      bytes: read(here('../fixtures/stories260K/stories260K.bin')),
      load: loadCheckpoint,
      headerBytes: 28,
      truncations: 30,
      flips: 40,
    },
    {
      name: 'tok512.bin',
      bytes: read(here('../fixtures/stories260K/tok512.bin')),
      load: (f) => readLlama2cTokenizer(f, 512),
      headerBytes: 6227,
      truncations: 60,
      flips: 60,
    },
    {
      name: 'vocab.gguf',
      bytes: read(here('../fixtures/gguf-vocab/ggml-vocab-llama-spm.gguf')),
      load: loadVocabGguf,
      headerBytes: 723869,
      truncations: 20,
      flips: 20,
    },
    {
      name: 'model.safetensors',
      bytes: read(stFile),
      load: loadSafetensors,
      headerBytes: 1500,
      truncations: 40,
      flips: 60,
    },
  ];
}

test('truncated files are rejected with one line naming the file', () => {
  const r = rng(7);
  for (const s of subjects()) {
    // Dense near the start (header fields), then spread over the file; never the full length.
    const cuts = new Set<number>([
      0,
      1,
      3,
      4,
      7,
      8,
      15,
      16,
      23,
      24,
      27,
      31,
      32,
      40,
      64,
      s.bytes.length - 1,
    ]);
    while (cuts.size < s.truncations)
      cuts.add(
        Math.floor(r() * Math.min(s.bytes.length, r() < 0.5 ? s.headerBytes + 64 : s.bytes.length)),
      );
    for (const cut of cuts) {
      const outcome = attempt(s.name, s.bytes.subarray(0, cut), s.load, `${s.name} cut at ${cut}`);
      assert.equal(outcome, 'rejected', `${s.name} truncated to ${cut} bytes must not load`);
    }
  }
});

test('random byte flips either load or are rejected cleanly (seeded)', () => {
  const r = rng(11);
  for (const s of subjects()) {
    let rejected = 0;
    for (let i = 0; i < s.flips; i++) {
      const copy = Uint8Array.from(s.bytes);
      const nFlips = 1 + Math.floor(r() * 4);
      for (let k = 0; k < nFlips; k++) {
        const region = r() < 0.8 ? Math.min(s.headerBytes, copy.length) : copy.length;
        const at = Math.floor(r() * region);
        copy[at] = copy[at]! ^ (1 + Math.floor(r() * 255));
      }
      if (attempt(s.name, copy, s.load, `${s.name} flip #${i}`) === 'rejected') rejected++;
    }
    assert.ok(rejected > 0, `${s.name}: some corruptions must be detected`);
  }
});

test('absurd counts, lengths and offsets are refused before allocating', () => {
  const gguf = Buffer.from(fs.readFileSync(here('../fixtures/stories260K/stories260K.gguf')));
  const at = (mutate: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(gguf);
    mutate(b);
    return b;
  };
  // Header: magic 0, version 4, tensor_count 8, kv_count 16, first key length 24.
  const firstKeyLen = Number(gguf.readBigUInt64LE(24));
  const firstType = 32 + firstKeyLen; // first kv is the token list: ARRAY of STRING
  const cases: [string, Buffer, RegExp][] = [
    [
      'huge tensor count',
      at((b) => b.writeBigUInt64LE(2n ** 60n, 8)),
      /tensor count .* (absurdly large|needs at least)/,
    ],
    [
      'huge kv count',
      at((b) => b.writeBigUInt64LE(2n ** 40n, 16)),
      /metadata count 1099511627776 needs at least/,
    ],
    [
      'u64 max key length',
      at((b) => b.writeBigUInt64LE(2n ** 64n - 1n, 24)),
      /metadata key #0 length 18446744073709551615 is absurdly large/,
    ],
    [
      'key length past end',
      at((b) => b.writeBigUInt64LE(10n ** 9n, 24)),
      /metadata key #0 \[offset 32, 1000000000 bytes\] runs past end of file/,
    ],
    ['unknown value type', at((b) => b.writeUInt32LE(77, firstType)), /unknown GGUF value type 77/],
    [
      'array count too big',
      at((b) => b.writeBigUInt64LE(2n ** 50n, firstType + 8)),
      /array count 1125899906842624 needs at least/,
    ],
    [
      'bad array element type',
      at((b) => b.writeUInt32LE(13, firstType + 4)),
      /unknown GGUF array element type 13/,
    ],
    ['version 1', at((b) => b.writeUInt32LE(1, 4)), /version 1 is not supported/],
    ['big-endian', at((b) => b.writeUInt32BE(3, 4)), /big-endian GGUF is not supported/],
    ['bad magic', at((b) => b.write('GGUX', 0)), /not a GGUF file/],
  ];
  for (const [what, bytes, pattern] of cases) {
    const file = path.join(tmp, 'absurd.gguf');
    fs.writeFileSync(file, bytes);
    assert.throws(
      () => GgufReader.open(file),
      (e: Error) =>
        e instanceof FileFormatError &&
        /^absurd\.gguf: /.test(e.message) &&
        pattern.test(e.message),
      what,
    );
  }
  // A tensor whose offset points past the end: patch the last tensor info's offset (just before the alignment padding).
  const r = GgufReader.open(here('../fixtures/stories260K/stories260K.gguf'));
  const last = r.tensors[r.tensors.length - 1]!;
  r.close();
  const idx = gguf.lastIndexOf(Buffer.from(last.name));
  const offsetField = idx + last.name.length + 4 + 8 * last.ne.length + 4;
  assert.equal(Number(gguf.readBigUInt64LE(offsetField)), last.relativeOffset);
  const file = path.join(tmp, 'model.gguf');
  fs.writeFileSync(
    file,
    at((b) => b.writeBigUInt64LE(BigInt(last.relativeOffset + 32 * 1000), offsetField)),
  );
  assert.throws(
    () => GgufReader.open(file),
    new RegExp(
      `^FileFormatError: model\\.gguf: tensor '${last.name.replace(/\./g, '\\.')}' data \\[offset \\d+, 256 bytes\\] runs past end of file \\(size 1185376\\)$`,
    ),
  );
  fs.writeFileSync(
    file,
    at((b) => b.writeBigUInt64LE(BigInt(last.relativeOffset + 4), offsetField)),
  );
  assert.throws(() => GgufReader.open(file), /is not aligned to 32/);
  fs.writeFileSync(
    file,
    at((b) => b.writeBigUInt64LE(0n, offsetField)),
  );
  assert.throws(() => GgufReader.open(file), /overlaps tensor/);

  // llama2.c header with an absurd dim and a tokenizer with an absurd token length.
  const bin = Buffer.from(fs.readFileSync(here('../fixtures/stories260K/stories260K.bin')));
  bin.writeInt32LE(2 ** 31 - 1, 0);
  fs.writeFileSync(path.join(tmp, 'm.bin'), bin);
  assert.throws(
    () => openCheckpoint(path.join(tmp, 'm.bin')),
    /^FileFormatError: m\.bin: header dim = 2147483647 is not a plausible size/,
  );
  const tok = Buffer.from(fs.readFileSync(here('../fixtures/stories260K/tok512.bin')));
  tok.writeInt32LE(2 ** 31 - 1, 8); // token 0 length
  fs.writeFileSync(path.join(tmp, 't.bin'), tok);
  assert.throws(
    () => readLlama2cTokenizer(path.join(tmp, 't.bin'), 512),
    /^FileFormatError: t\.bin: token 0 length 2147483647 is outside 0\.\.max_token_length 7/,
  );
});
