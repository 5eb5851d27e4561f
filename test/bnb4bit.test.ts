import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  bnbTensors,
  isBnb4bit,
  isBnbAuxiliaryKey,
  quantStateJson,
  readBnb4bit,
  type RawTensorReader,
} from '../src/io/bnb4bit.js';
import { SafetensorsFile, writeSafetensors } from '../src/io/safetensors.js';
import { dequantize4bit, quantize4bit } from '../src/quant/quantize4bit.js';
import { randn } from './util.js';

function reader(f: SafetensorsFile): RawTensorReader {
  return {
    has: (n) => f.tensors.has(n),
    raw: (n) => f.readRaw(n),
    f32: (n) => f.readF32(n),
    dtype: (n) => f.tensor(n).dtype,
  };
}

test('quant state JSON is byte-for-byte json.dumps of bnb QuantState.as_dict(packed=True)', () => {
  const q = quantize4bit(Float32Array.from(randn(4096, 3)), {
    quantType: 'nf4',
    blocksize: 64,
    doubleQuant: true,
  });
  const json = quantStateJson(
    { ...q, nested: { ...q.nested!, offset: 0.0123 } },
    [64, 64],
    'bfloat16',
  );
  assert.equal(
    json,
    '{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [64, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.0123}',
  );
  assert.match(
    quantStateJson({ ...q, nested: { ...q.nested!, offset: 1 } }, [64, 64], 'float16'),
    /"nested_offset": 1\.0\}$/,
  );
  const plain = quantize4bit(Float32Array.from(randn(100, 4)), {
    quantType: 'fp4',
    blocksize: 32,
    doubleQuant: false,
  });
  assert.equal(
    quantStateJson(plain, [10, 10], 'float32'),
    '{"quant_type": "fp4", "blocksize": 32, "dtype": "float32", "shape": [10, 10]}',
  );
});

for (const doubleQuant of [true, false]) {
  test(`bnb 4-bit safetensors round trip (double quant ${doubleQuant}) keeps every byte`, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-bnb-'));
    try {
      const shape = [24, 37]; // odd element count: a padding nibble and a partial last block
      const values = Float32Array.from(randn(shape[0]! * shape[1]!, 11));
      const q = quantize4bit(values, { quantType: 'nf4', blocksize: 64, doubleQuant });
      const name = 'model.layers.0.self_attn.q_proj.weight';
      const file = path.join(dir, 'model.safetensors');
      writeSafetensors(file, [
        ...bnbTensors(name, q, shape, 'bfloat16'),
        { name: 'model.norm.weight', dtype: 'F32', shape: [4], data: new Float32Array(4) },
      ]);
      const f = SafetensorsFile.open(file);
      try {
        assert.deepEqual(f.tensor(name).shape, [Math.ceil((24 * 37) / 2), 1]);
        assert.equal(f.tensor(`${name}.absmax`).dtype, doubleQuant ? 'U8' : 'F32');
        assert.equal(f.tensors.has(`${name}.nested_absmax`), doubleQuant);
        const r = reader(f);
        assert.ok(isBnb4bit(r, name));
        assert.ok(!isBnb4bit(r, 'model.norm.weight'));
        assert.ok(
          [...f.tensors.keys()]
            .filter((k) => k !== name && k.startsWith(name))
            .every(isBnbAuxiliaryKey),
        );
        const back = readBnb4bit(r, name);
        assert.deepEqual(back.shape, shape);
        assert.deepEqual(back.q.packed, q.packed);
        assert.deepEqual(back.q.absmax, q.absmax);
        assert.deepEqual(dequantize4bit(back.q), dequantize4bit(q));
      } finally {
        f.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a bnb weight with inconsistent sizes is rejected with the tensor named', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-bnb-'));
  try {
    const q = quantize4bit(Float32Array.from(randn(256, 1)), { blocksize: 64 });
    const name = 'w.weight';
    const tensors = bnbTensors(name, q, [16, 16]).map((t) =>
      t.name === name ? { ...t, data: q.packed.subarray(0, 100), shape: [100, 1] } : t,
    );
    const file = path.join(dir, 'bad.safetensors');
    writeSafetensors(file, tensors);
    const f = SafetensorsFile.open(file);
    try {
      assert.throws(
        () => readBnb4bit(reader(f), name),
        /'w\.weight': 100 packed bytes for 256 elements/,
      );
    } finally {
      f.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
