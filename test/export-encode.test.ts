// ggml encoders for GGUF export, checked against the reference quantizers' definitions
// (docs/formats.md §5.3, ggml-quants.c): hand-picked blocks whose scale is exactly 1 so every
// expected byte follows from the formula by hand, then random data through writeGguf and the
// project's independent GGUF reader/dequantizer with the error bounds the formats guarantee.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  encodeBF16,
  encodeF16,
  encodeGgml,
  quantizeQ4_0,
  quantizeQ4_K,
  quantizeQ8_0,
} from '../src/export/ggml-encode.js';
import { dequantize, GgmlType } from '../src/io/ggml-types.js';
import { GgufReader } from '../src/io/gguf.js';
import { writeGgufStreaming } from '../src/io/gguf-writer.js';
import { f16ToF32 } from '../src/io/half.js';
import { randn } from './util.js';

test('Q8_0: d = amax/127 stored as f16, q = round half away from zero of x/d', () => {
  const x = new Float32Array(32);
  x[0] = 127; // amax → d = 1 exactly
  x[1] = 2.5;
  x[2] = -2.5;
  x[3] = 0.49;
  x[4] = -126.5;
  x[31] = -3;
  const b = quantizeQ8_0(x);
  assert.equal(b.length, 34);
  assert.equal(b[0]! | (b[1]! << 8), 0x3c00, 'd = 1.0 as f16');
  const q = new Int8Array(b.buffer, 2, 32);
  assert.deepEqual([q[0], q[1], q[2], q[3], q[4], q[5], q[31]], [127, 3, -3, 0, -127, 0, -3]);
  // An all-zero block has d = 0 and q = 0.
  assert.deepEqual([...quantizeQ8_0(new Float32Array(32))], new Array(34).fill(0));
});

test('Q4_0: d = (value of largest magnitude)/−8, q = min(15, trunc(x/d + 8.5)), j low nibble / j+16 high nibble', () => {
  const x = new Float32Array(32);
  x[0] = -8; // largest magnitude, negative → d = 1
  x[1] = 7; // 15.5 → 15
  x[2] = 7.4; // 15.9 → 15
  x[3] = 0.5; // 9.0 → 9
  x[4] = -0.5; // 8.0 → 8
  x[16] = 3; // 11.5 → 11, high nibble of byte 0
  x[17] = -7.9; // 0.6 → 0, high nibble of byte 1
  const b = quantizeQ4_0(x);
  assert.equal(b.length, 18);
  assert.equal(b[0]! | (b[1]! << 8), 0x3c00, 'd = 1.0 as f16');
  const qs = b.subarray(2);
  assert.equal(qs[0], 0 | (11 << 4));
  assert.equal(qs[1], 15 | (0 << 4));
  assert.equal(qs[2], 15 | (8 << 4));
  assert.equal(qs[3], 9 | (8 << 4));
  assert.equal(qs[4], 8 | (8 << 4));
  // A largest value that is positive gives a negative d: max = 8 → d = −1, so x = 8 → trunc(0.5) = 0.
  const y = new Float32Array(32);
  y[0] = 8;
  const c = quantizeQ4_0(y);
  assert.equal(f16ToF32(c[0]! | (c[1]! << 8)), -1);
  assert.equal(c[2]! & 0x0f, 0);
  assert.throws(() => quantizeQ4_0(new Float32Array(33)), /not a multiple of the block size 32/);
});

test('Q4_K: sub-blocks on an exact 16-level grid keep their levels; 6-bit scales round(63·s/s_max); zero mins; gaussian data beats Q4_0', () => {
  // Every 32-value sub-block holds levels 0..15 twice, times 0.25·(j+1) for sub-block j: min 0,
  // and scale 0.25·(j+1) represents it exactly, so the least-squares search must find it.
  const x = new Float32Array(256);
  for (let j = 0; j < 8; j++)
    for (let l = 0; l < 32; l++) x[32 * j + l] = 0.25 * (j + 1) * (l % 16);
  const b = quantizeQ4_K(x);
  assert.equal(b.length, 144);
  // d = largest scale / 63 = 2/63 (as f16), dmin = 0.
  assert.ok(Math.abs(f16ToF32(b[0]! | (b[1]! << 8)) - 2 / 63) <= (2 / 63) * 2 ** -11);
  assert.equal(b[2]! | (b[3]! << 8), 0, 'dmin = 0');
  // 6-bit scales: sub-block j gets round(63·(j+1)/8) (31.5 rounds to even: 32); packed as in get_scale_min_k4.
  const sc = b.subarray(4, 16);
  const unpack = (j: number): number =>
    j < 4 ? sc[j]! & 63 : (sc[j + 4]! & 0xf) | ((sc[j - 4]! >> 6) << 4);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(unpack), [8, 16, 24, 32, 39, 47, 55, 63]);
  // Levels: in each 64-value chunk, values 0..31 in low nibbles and 32..63 in high nibbles.
  for (let i = 0; i < 256; i++) {
    const chunk = Math.floor(i / 64);
    const within = i % 64;
    const byte = b[16 + 32 * chunk + (within % 32)]!;
    assert.equal(within < 32 ? byte & 0xf : byte >> 4, i % 16, `level of value ${i}`);
  }
  // Values come back up to the 6-bit rounding of each sub-block's scale (≤ 0.5/8 relative).
  const back = new Float32Array(256);
  dequantize(GgmlType.Q4_K, b, 256, back);
  for (let i = 0; i < 256; i++)
    assert.ok(Math.abs(back[i]! - x[i]!) <= x[i]! / 16 + 1e-6, `value ${i}: ${back[i]} vs ${x[i]}`);

  const n = 256 * 32;
  const g = Float32Array.from(randn(n, 23, 1));
  const rmse = (type: number, bytes: Uint8Array): number => {
    const out = new Float32Array(n);
    dequantize(type, bytes, n, out);
    let se = 0;
    for (let i = 0; i < n; i++) se += (out[i]! - g[i]!) ** 2;
    return Math.sqrt(se / n);
  };
  const k = rmse(GgmlType.Q4_K, quantizeQ4_K(g));
  const q0 = rmse(GgmlType.Q4_0, quantizeQ4_0(g));
  assert.ok(k < q0 && k < 0.08, `Q4_K rmse ${k} vs Q4_0 ${q0} on unit gaussians`);
  assert.throws(() => quantizeQ4_K(new Float32Array(288)), /not a multiple of the block size 256/);
});

test('F16/BF16: exact values stay exact; rounding is to nearest even', () => {
  const v = Float32Array.of(1, -2, 0.5, 65504, 1 + 2 ** -11, 1 + 3 * 2 ** -11);
  const h = new Uint16Array(encodeF16(v).buffer);
  assert.deepEqual([...h].map(f16ToF32), [1, -2, 0.5, 65504, 1, 1 + 2 ** -9]);
  const bf = new Uint16Array(
    encodeBF16(Float32Array.of(1, -3, 1 + 2 ** -8, 1 + 3 * 2 ** -8)).buffer,
  );
  assert.deepEqual([...bf], [0x3f80, 0xc040, 0x3f80, 0x3f82]);
});

test('every encodable type round-trips through the streaming writer and the GGUF reader within its bound', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-encode-'));
  try {
    const rows = 6;
    const cols = 64;
    const values = Float32Array.from(randn(rows * cols, 17, 0.3));
    const types = [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0];
    const file = path.join(dir, 't.gguf');
    const produced: string[] = [];
    writeGgufStreaming(
      file,
      [],
      types.map((type) => ({
        name: `t${type}`,
        shape: [rows, cols],
        type,
        data: () => {
          produced.push(`t${type}`);
          return encodeGgml(type, values);
        },
      })),
    );
    assert.deepEqual(
      produced,
      types.map((t) => `t${t}`),
      'each tensor produced once, in order',
    );
    const r = GgufReader.open(file);
    try {
      for (const type of types) {
        const info = r.tensor(`t${type}`);
        assert.deepEqual(info.ne, [cols, rows]);
        assert.equal(info.offset % 32, 0);
        const back = r.readF32(`t${type}`);
        for (let blk = 0; blk < values.length; blk += 32) {
          let amax = 0;
          for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(values[blk + j]!));
          // Per-element bounds: half a quantization step (plus the f16 rounding of d), or the float format's rounding.
          const bound = {
            [GgmlType.F32]: 0,
            [GgmlType.F16]: amax * 2 ** -11,
            [GgmlType.BF16]: amax * 2 ** -8,
            [GgmlType.Q8_0]: (amax / 127) * (0.5 + 127 * 2 ** -11),
            [GgmlType.Q4_0]: (amax / 8) * (0.5 + 8 * 2 ** -11),
          }[type]!;
          for (let j = 0; j < 32; j++) {
            const x = values[blk + j]!;
            const err = Math.abs(back[blk + j]! - x);
            // Q4_0 levels run from −8d to 7d: values opposite the largest one clamp to level 7.
            const clampErr = type === GgmlType.Q4_0 ? Math.abs(x) - (7 * amax) / 8 : 0;
            const allowed = Math.max(bound, clampErr + bound);
            assert.ok(
              err <= allowed + 1e-12,
              `type ${type} element ${blk + j}: error ${err} > ${allowed}`,
            );
          }
        }
      }
    } finally {
      r.close();
    }
    assert.throws(
      () =>
        writeGgufStreaming(
          path.join(dir, 'bad.gguf'),
          [],
          [{ name: 'x', shape: [32], type: GgmlType.Q8_0, data: () => new Uint8Array(33) }],
        ),
      /needs 34 bytes, got 33/,
    );
    assert.equal(fs.existsSync(path.join(dir, 'bad.gguf')), false, 'a failed write leaves no file');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
