// ggml encoders for GGUF export, checked against the reference quantizers' definitions
// (formats.md §4.3, ggml-quants.c): hand-picked blocks whose scale is exactly 1 so every expected
// byte follows from the formula by hand, then random data through writeGguf and the project's
// independent GGUF reader/dequantizer with the error bounds the formats guarantee.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { encodeBF16, encodeF16, encodeGgml, quantizeQ4_0, quantizeQ8_0 } from '../src/export/ggml-encode.js';
import { GgmlType } from '../src/io/ggml-types.js';
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

test('F16/BF16: exact values stay exact; rounding is to nearest even', () => {
  const v = Float32Array.of(1, -2, 0.5, 65504, 1 + 2 ** -11, 1 + 3 * 2 ** -11);
  const h = new Uint16Array(encodeF16(v).buffer);
  assert.deepEqual([...h].map(f16ToF32), [1, -2, 0.5, 65504, 1, 1 + 2 ** -9]);
  const bf = new Uint16Array(encodeBF16(Float32Array.of(1, -3, 1 + 2 ** -8, 1 + 3 * 2 ** -8)).buffer);
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
    assert.deepEqual(produced, types.map((t) => `t${t}`), 'each tensor produced once, in order');
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
            assert.ok(err <= allowed + 1e-12, `type ${type} element ${blk + j}: error ${err} > ${allowed}`);
          }
        }
      }
    } finally {
      r.close();
    }
    assert.throws(() => writeGgufStreaming(path.join(dir, 'bad.gguf'), [], [{ name: 'x', shape: [32], type: GgmlType.Q8_0, data: () => new Uint8Array(33) }]), /needs 34 bytes, got 33/);
    assert.equal(fs.existsSync(path.join(dir, 'bad.gguf')), false, 'a failed write leaves no file');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
