// Hand-packed GGUF blocks for Q8_0 / Q4_0 / Q4_K / Q6_K (plus F16, BF16) dequantize to the values
// the block formulas give (docs/formats.md §5.2–5.3, ggml-common.h layouts). Each expectation is
// computed element by element from the format definition; scales are powers of two so every
// product is exact in f32.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { GgmlType } from '../src/io/ggml-types.js';
import { GgufReader } from '../src/io/gguf.js';
import { writeGguf } from '../src/io/gguf-writer.js';
import { rng } from './util.js';

/** f16 bit patterns of the powers of two we use as block scales. */
const F16 = {
  '0.5': 0x3800,
  '-0.03125': 0xa800,
  '1.5': 0x3e00,
  '0.25': 0x3400,
  '0.125': 0x3000,
  '0.0625': 0x2c00,
} as const;

function randInt(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

function setF16(b: Uint8Array, at: number, bits: number): void {
  b[at] = bits & 0xff;
  b[at + 1] = bits >> 8;
}

function q8_0(
  blocks: { d: number; dBits: number }[],
  r: () => number,
): { bytes: Uint8Array; expected: number[] } {
  const bytes = new Uint8Array(34 * blocks.length);
  const expected: number[] = [];
  blocks.forEach(({ d, dBits }, b) => {
    setF16(bytes, 34 * b, dBits);
    for (let j = 0; j < 32; j++) {
      const q = randInt(r, -128, 127);
      bytes[34 * b + 2 + j] = q & 0xff;
      expected.push(q * d);
    }
  });
  return { bytes, expected };
}

function q4_0(
  blocks: { d: number; dBits: number }[],
  r: () => number,
): { bytes: Uint8Array; expected: number[] } {
  const bytes = new Uint8Array(18 * blocks.length);
  const expected: number[] = [];
  blocks.forEach(({ d, dBits }, b) => {
    setF16(bytes, 18 * b, dBits);
    for (let e = 0; e < 32; e++) {
      const n = randInt(r, 0, 15);
      // element e < 16: low nibble of qs[e]; e ≥ 16: high nibble of qs[e - 16].
      bytes[18 * b + 2 + (e % 16)]! |= e < 16 ? n : n << 4;
      expected.push((n - 8) * d);
    }
  });
  return { bytes, expected };
}

/** One Q4_K super-block: 8 sub-blocks of 32 with 6-bit (scale, min) packed into 12 bytes. */
function q4_K(
  r: () => number,
  d: number,
  dBits: number,
  dmin: number,
  dminBits: number,
): { bytes: Uint8Array; expected: number[] } {
  const bytes = new Uint8Array(144);
  setF16(bytes, 0, dBits);
  setF16(bytes, 2, dminBits);
  const sc = Array.from({ length: 8 }, () => randInt(r, 0, 63));
  const mn = Array.from({ length: 8 }, () => randInt(r, 0, 63));
  const s = bytes.subarray(4, 16);
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      s[j]! |= sc[j]!;
      s[j + 4]! |= mn[j]!;
    } else {
      s[j + 4]! |= (sc[j]! & 0x0f) | ((mn[j]! & 0x0f) << 4);
      s[j - 4]! |= (sc[j]! >> 4) << 6;
      s[j]! |= (mn[j]! >> 4) << 6;
    }
  }
  const qs = bytes.subarray(16);
  const expected: number[] = [];
  for (let e = 0; e < 256; e++) {
    const sub = e >> 5;
    const n = randInt(r, 0, 15);
    const at = (e >> 6) * 32 + (e % 32);
    qs[at]! |= sub % 2 === 0 ? n : n << 4;
    expected.push(d * sc[sub]! * n - dmin * mn[sub]!);
  }
  return { bytes, expected };
}

/** One Q6_K super-block: 6-bit quants split into ql (low 4) / qh (high 2), 16 int8 scales. */
function q6_K(
  r: () => number,
  d: number,
  dBits: number,
): { bytes: Uint8Array; expected: number[] } {
  const bytes = new Uint8Array(210);
  const scales = Array.from({ length: 16 }, () => randInt(r, -128, 127));
  scales.forEach((v, i) => (bytes[192 + i] = v & 0xff));
  setF16(bytes, 208, dBits);
  const expected: number[] = [];
  for (let e = 0; e < 256; e++) {
    const half = e >> 7;
    const k = (e & 127) >> 5; // which of the four 32-value groups in this half
    const l = e & 31;
    const q = randInt(r, 0, 63);
    const ql = 64 * half + l + 32 * (k & 1);
    bytes[ql]! |= k < 2 ? q & 0x0f : (q & 0x0f) << 4;
    bytes[128 + 32 * half + l]! |= (q >> 4) << (2 * k);
    expected.push(d * scales[8 * half + (l >> 4) + 2 * k]! * (q - 32));
  }
  return { bytes, expected };
}

function roundTrip(
  tensors: { name: string; shape: number[]; type: number; data: Uint8Array }[],
  check: (r: GgufReader) => void,
): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-q-'));
  try {
    const f = path.join(dir, 'q.gguf');
    writeGguf(f, [], tensors);
    const r = GgufReader.open(f);
    try {
      check(r);
    } finally {
      r.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('Q8_0, Q4_0, Q4_K, Q6_K, F16 and BF16 tensors dequantize to the block formulas', () => {
  const r = rng(42);
  const a = q8_0(
    [
      { d: 0.5, dBits: F16['0.5'] },
      { d: -0.03125, dBits: F16['-0.03125'] },
      { d: 0.5, dBits: F16['0.5'] },
      { d: 0.5, dBits: F16['0.5'] },
    ],
    r,
  );
  const b = q4_0(
    [
      { d: 1.5, dBits: F16['1.5'] },
      { d: 0.25, dBits: F16['0.25'] },
    ],
    r,
  );
  const k1 = q4_K(r, 0.25, F16['0.25'], 0.125, F16['0.125']);
  const k2 = q4_K(r, 0.0625, F16['0.0625'], 0.5, F16['0.5']);
  const s1 = q6_K(r, 0.0625, F16['0.0625']);
  const s2 = q6_K(r, 0.25, F16['0.25']);
  // F16: 1, -2, 0.5, 65504, smallest subnormal 2^-24; BF16: 1, -3.5, 2^100, 0.
  const f16 = new Uint8Array(
    new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0, 0, 0]).buffer,
  );
  const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0xc060, 0x7180, 0x0000]).buffer);
  roundTrip(
    [
      { name: 'q8', shape: [2, 64], type: GgmlType.Q8_0, data: a.bytes },
      { name: 'q4', shape: [1, 64], type: GgmlType.Q4_0, data: b.bytes },
      {
        name: 'q4k',
        shape: [2, 256],
        type: GgmlType.Q4_K,
        data: new Uint8Array([...k1.bytes, ...k2.bytes]),
      },
      {
        name: 'q6k',
        shape: [512],
        type: GgmlType.Q6_K,
        data: new Uint8Array([...s1.bytes, ...s2.bytes]),
      },
      { name: 'h', shape: [2, 4], type: GgmlType.F16, data: f16 },
      { name: 'b', shape: [4], type: GgmlType.BF16, data: bf16 },
    ],
    (g) => {
      assert.deepEqual(g.tensor('q4k').shape, [2, 256]);
      assert.equal(g.tensor('q6k').byteSize, 420);
      assert.deepEqual(Array.from(g.readF32('q8')), a.expected);
      assert.deepEqual(Array.from(g.readF32('q4')), b.expected);
      assert.deepEqual(Array.from(g.readF32('q4k')), [...k1.expected, ...k2.expected]);
      assert.deepEqual(Array.from(g.readF32('q6k')), [...s1.expected, ...s2.expected]);
      assert.deepEqual(Array.from(g.readF32('h')), [1, -2, 0.5, 65504, 2 ** -24, 0, 0, 0]);
      assert.deepEqual(Array.from(g.readF32('b')), [1, -3.5, 2 ** 100, 0]);
    },
  );
});

test('sized but unsupported types and unknown type ids give clear errors', () => {
  roundTrip(
    [{ name: 'q3k', shape: [256], type: GgmlType.Q3_K, data: new Uint8Array(110) }],
    (g) => {
      assert.throws(
        () => g.readF32('q3k'),
        /q\.gguf: tensor 'q3k' has type Q3_K, which cannot be loaded \(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K\)/,
      );
      assert.equal(g.readRaw('q3k').length, 110);
    },
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-q-'));
  try {
    const f = path.join(dir, 'bad.gguf');
    writeGguf(f, [], [{ name: 'x', shape: [32], type: GgmlType.Q8_0, data: new Uint8Array(34) }]);
    const bytes = fs.readFileSync(f);
    // Tensor info: name "x" (u64 len + 1 byte) at 24, n_dims at 33, dim0 at 37, type at 45.
    assert.equal(bytes.readUInt32LE(45), GgmlType.Q8_0);
    const patched = Buffer.from(bytes);
    patched.writeUInt32LE(99, 45);
    fs.writeFileSync(f, patched);
    assert.throws(() => GgufReader.open(f), /bad\.gguf: tensor 'x': unsupported ggml type 99/);
    const odd = Buffer.from(bytes);
    odd.writeBigUInt64LE(16n, 37);
    fs.writeFileSync(f, odd);
    assert.throws(
      () => GgufReader.open(f),
      /bad\.gguf: tensor 'x': innermost dimension 16 is not a multiple of Q8_0 block size 32/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
