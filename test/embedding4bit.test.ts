// A 4-bit embedding table: looking up rows equals dequantizing the table and gathering rows, on
// both backends, for NF4/FP4 with and without double quantization (row boundaries mid-block too).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';
import { disposePacked4bit, uploadPacked4bit } from '../src/quant/upload.js';
import { randn } from './util.js';

for (const name of ['ref', 'cpu'] as const) {
  for (const [quantType, doubleQuant, rows, cols, blocksize] of [
    ['nf4', true, 300, 64, 64],
    ['nf4', false, 17, 37, 32],
    ['fp4', true, 9, 100, 128],
    ['nf4', true, 1025, 48, 64],
  ] as const) {
    test(`${name}: embedding4bit gathers dequantized rows (${quantType}, dq ${doubleQuant}, [${rows}, ${cols}], block ${blocksize})`, async () => {
      const be = await getBackend(name);
      const q = quantize4bit(Float32Array.from(randn(rows * cols, rows + cols)), {
        quantType,
        doubleQuant,
        blocksize,
      });
      const w = uploadPacked4bit(be, q, rows, cols);
      const full = be.zeros([rows, cols]);
      be.dequantize4bit(w, full);
      const ids = Int32Array.from([0, rows - 1, 3 % rows, Math.floor(rows / 2), 0]);
      const idT = be.fromArray(ids, [ids.length], 'i32');
      const out = be.zeros([ids.length, cols]);
      be.embedding4bit(idT, w, out);
      const F = full.data;
      const O = out.data;
      ids.forEach((id, i) =>
        assert.deepEqual(
          O.subarray(i * cols, (i + 1) * cols),
          F.subarray(id * cols, (id + 1) * cols),
        ),
      );
      idT.write([0, rows, 0, 0, 0]);
      assert.throws(
        () => be.embedding4bit(idT, w, out),
        new RegExp(`id ${rows} at position 1 is outside \\[0, ${rows}\\)`),
      );
      for (const t of [full, idT, out]) t.dispose();
      disposePacked4bit(w);
    });
  }
}
