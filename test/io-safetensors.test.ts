// safetensors writer/reader round trips and header validation (docs/formats.md §4.1).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { FileFormatError } from '../src/io/binary-reader.js';
import {
  SafetensorsCollection,
  SafetensorsFile,
  writeSafetensors,
  writeSafetensorsIndex,
} from '../src/io/safetensors.js';
import { randn } from './util.js';

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-st-'));
}

/** A file with the given JSON header (space-padded to 8) and buffer, built by hand. */
function handMade(file: string, header: unknown, buffer: Uint8Array, rawHeader?: string): void {
  let json = Buffer.from(rawHeader ?? JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, buffer]));
}

test('round trip F32/F16/BF16, raw U8/I32, empty tensors and metadata; header padded with spaces', () => {
  const dir = tmpdir();
  try {
    const file = path.join(dir, 'a.safetensors');
    const f32 = Float32Array.from(randn(6, 1));
    // Values exactly representable in f16 and bf16 come back bit-exact.
    const exact = Float32Array.from([0, -0, 1, -2.5, 0.125, 65504, 2 ** -14, 2 ** -24]);
    const bfExact = Float32Array.from([1, -3.5, 2 ** 100, -(2 ** -120), 0.0078125, 256]);
    const i32 = new Int32Array([-1, 0, 7, 2 ** 31 - 1]);
    writeSafetensors(
      file,
      [
        { name: 'w.f32', dtype: 'F32', shape: [2, 3], data: f32 },
        { name: 'w.f16', dtype: 'F16', shape: [8], data: exact },
        { name: 'w.bf16', dtype: 'BF16', shape: [2, 3], data: bfExact },
        { name: 'bytes', dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 255]) },
        { name: 'ints', dtype: 'I32', shape: [4], data: new Uint8Array(i32.buffer) },
        { name: 'empty', dtype: 'F32', shape: [0], data: new Float32Array(0) },
        { name: 'empty2', dtype: 'BF16', shape: [2, 0], data: new Float32Array(0) },
      ],
      { format: 'pt', note: 'hello' },
    );
    const raw = fs.readFileSync(file);
    const n = Number(raw.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    assert.equal(raw[8], 0x7b);
    const header = raw.subarray(8, 8 + n).toString('utf8');
    assert.match(header, /^\{.*\} *$/);
    const parsed = JSON.parse(header) as Record<string, { data_offsets: number[] }>;
    assert.deepEqual(parsed.__metadata__, { format: 'pt', note: 'hello' });

    const st = SafetensorsFile.open(file);
    try {
      assert.deepEqual(st.metadata, { format: 'pt', note: 'hello' });
      assert.deepEqual(st.readF32('w.f32'), f32);
      assert.deepEqual(st.readF32('w.f16'), exact);
      assert.deepEqual(st.readF32('w.bf16'), bfExact);
      assert.deepEqual(st.tensor('w.bf16').shape, [2, 3]);
      assert.deepEqual(Array.from(st.readRaw('bytes')), [1, 2, 255]);
      assert.deepEqual(new Int32Array(st.readRaw('ints').buffer), i32);
      assert.equal(st.readF32('empty').length, 0);
      assert.deepEqual(st.tensor('empty2').shape, [2, 0]);
      assert.throws(() => st.readF32('bytes'), /a\.safetensors: tensor 'bytes' has dtype U8/);
      assert.throws(() => st.readF32('missing'), /no tensor named 'missing'/);
    } finally {
      st.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('F16/BF16 writes round to nearest even (bit patterns from the IEEE definitions)', () => {
  const dir = tmpdir();
  try {
    const file = path.join(dir, 'r.safetensors');
    // 0.1 → f16 0x2E66; 1 + 2^-11 (tie) → 1.0 (even); 1 + 3·2^-11 (tie) → 1 + 2^-9; 70000 → +inf;
    // 2^-25 (tie at half the smallest subnormal) → 0; 3·2^-26 → 2^-24.
    const vals = Float32Array.from([
      0.1,
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      70000,
      2 ** -25,
      3 * 2 ** -26,
    ]);
    // bf16: 1 + 2^-8 (tie) → 1.0; 1 + 3·2^-8 (tie) → 1 + 2^-6.
    const bvals = Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8]);
    writeSafetensors(file, [
      { name: 'h', dtype: 'F16', shape: [6], data: vals },
      { name: 'b', dtype: 'BF16', shape: [2], data: bvals },
    ]);
    const st = SafetensorsFile.open(file);
    try {
      assert.deepEqual(
        Array.from(new Uint16Array(st.readRaw('h').buffer)),
        [0x2e66, 0x3c00, 0x3c02, 0x7c00, 0x0000, 0x0001],
      );
      assert.deepEqual(Array.from(st.readF32('b')), [1, 1 + 2 ** -6]);
    } finally {
      st.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('sharded index: collection resolves each tensor to its shard; bad indexes are rejected', () => {
  const dir = tmpdir();
  try {
    writeSafetensors(path.join(dir, 's1.safetensors'), [
      { name: 'a', dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) },
    ]);
    writeSafetensors(path.join(dir, 's2.safetensors'), [
      { name: 'b', dtype: 'F16', shape: [1], data: Float32Array.from([3]) },
    ]);
    writeSafetensorsIndex(dir, { a: 's1.safetensors', b: 's2.safetensors' }, 10);
    const c = SafetensorsCollection.fromIndex(path.join(dir, 'model.safetensors.index.json'));
    try {
      assert.deepEqual(c.tensorNames.sort(), ['a', 'b']);
      assert.deepEqual(Array.from(c.readF32('a')), [1, 2]);
      assert.deepEqual(Array.from(c.readF32('b')), [3]);
      assert.equal(c.metadata.total_size, 10);
    } finally {
      c.close();
    }
    writeSafetensorsIndex(dir, { a: 's1.safetensors', b: 's1.safetensors' }, 10);
    assert.throws(
      () => SafetensorsCollection.fromIndex(path.join(dir, 'model.safetensors.index.json')),
      /puts 'b' in s1\.safetensors, which lacks it/,
    );
    writeSafetensorsIndex(dir, { a: '../s1.safetensors' }, 10);
    assert.throws(
      () => SafetensorsCollection.fromIndex(path.join(dir, 'model.safetensors.index.json')),
      /invalid shard/,
    );
    writeSafetensorsIndex(dir, { a: 'nope.safetensors' }, 10);
    assert.throws(
      () => SafetensorsCollection.fromIndex(path.join(dir, 'model.safetensors.index.json')),
      /nope\.safetensors: cannot open/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('header validation: each malformed header gives a one-line error naming the file', () => {
  const dir = tmpdir();
  const f = path.join(dir, 'bad.safetensors');
  const t = (shape: number[], off: [number, number], dtype = 'F32') => ({
    dtype,
    shape,
    data_offsets: off,
  });
  const cases: [string, () => void, RegExp][] = [
    [
      'overlap',
      () => handMade(f, { a: t([2], [0, 8]), b: t([2], [4, 12]) }, new Uint8Array(12)),
      /overlaps/,
    ],
    [
      'hole',
      () => handMade(f, { a: t([1], [0, 4]), b: t([1], [8, 12]) }, new Uint8Array(12)),
      /hole \[4, 8\)/,
    ],
    [
      'uncovered tail',
      () => handMade(f, { a: t([1], [0, 4]) }, new Uint8Array(8)),
      /cover 4 bytes but the buffer holds 8/,
    ],
    [
      'past end',
      () => handMade(f, { a: t([4], [0, 16]) }, new Uint8Array(8)),
      /runs past end of buffer/,
    ],
    [
      'size mismatch',
      () => handMade(f, { a: t([3], [0, 8]) }, new Uint8Array(8)),
      /is 12 bytes but data_offsets span 8/,
    ],
    [
      'unknown dtype',
      () => handMade(f, { a: t([2], [0, 8], 'F12') }, new Uint8Array(8)),
      /unknown dtype "F12"/,
    ],
    [
      'a dtype named like an Object method',
      () => handMade(f, { a: t([2], [0, 8], 'toString') }, new Uint8Array(8)),
      /unknown dtype "toString"/,
    ],
    ['negative dim', () => handMade(f, { a: t([-2], [0, 8]) }, new Uint8Array(8)), /shape \[-2\]/],
    [
      'reversed offsets',
      () => handMade(f, { a: t([0], [8, 0]) }, new Uint8Array(8)),
      /begin <= end/,
    ],
    [
      'bad metadata',
      () => handMade(f, { __metadata__: { x: 1 } }, new Uint8Array(0)),
      /__metadata__ 'x' is not a string/,
    ],
    ['not json', () => handMade(f, null, new Uint8Array(0), '{"a": '), /not valid UTF-8 JSON/],
    ['not object', () => handMade(f, null, new Uint8Array(0), '[1,2]'), /does not start with '\{'/],
    [
      'huge header length',
      () => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(2n ** 62n);
        fs.writeFileSync(f, b);
      },
      /header length 4611686018427387904 exceeds/,
    ],
    [
      'header past end',
      () => {
        const b = Buffer.alloc(16);
        b.writeBigUInt64LE(1000n);
        fs.writeFileSync(f, b);
      },
      /header length 1000 runs past end of file \(size 16\)/,
    ],
    ['tiny file', () => fs.writeFileSync(f, Buffer.alloc(3)), /too small/],
  ];
  try {
    for (const [what, make, pattern] of cases) {
      make();
      assert.throws(
        () => SafetensorsFile.open(f).close(),
        (e: unknown) => {
          assert.ok(e instanceof FileFormatError, `${what}: ${String(e)}`);
          assert.match(e.message, /^bad\.safetensors: /, what);
          assert.match(e.message, pattern, what);
          assert.ok(!e.message.includes('\n'), what);
          return true;
        },
      );
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writer is atomic: a failed write leaves the previous file intact and no temp files', () => {
  const dir = tmpdir();
  try {
    const file = path.join(dir, 'keep.safetensors');
    writeSafetensors(file, [{ name: 'a', dtype: 'F32', shape: [1], data: Float32Array.from([5]) }]);
    const before = fs.readFileSync(file);
    assert.throws(
      () =>
        writeSafetensors(file, [
          { name: 'a', dtype: 'F32', shape: [3], data: Float32Array.from([1]) },
        ]),
      /1 values for shape \[3\]/,
    );
    assert.throws(
      () =>
        writeSafetensors(file, [{ name: 'a', dtype: 'U8', shape: [2], data: new Uint8Array(3) }]),
      /needs 2 bytes, got 3/,
    );
    assert.deepEqual(fs.readFileSync(file), before);
    assert.deepEqual(fs.readdirSync(dir), ['keep.safetensors']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
