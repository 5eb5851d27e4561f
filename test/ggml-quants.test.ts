// GGUF's own quantized blocks (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K): the TypeScript reference dequantizer
// against values ggml's dequantize_row_* produced (fixtures/ggml-quants), bit for bit.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  dequantizeGgmlBlocks,
  GGML_QUANT_TYPES,
  ggmlQuantTypeOf,
} from '../src/quant/ggml-blocks.js';

const FIXTURE = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  'fixtures',
  'ggml-quants',
  'dequant.bin',
);

test('reference dequantizers equal ggml dequantize_row_* bit for bit (random and quantized blocks)', () => {
  const buf = fs.readFileSync(FIXTURE);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const seen: string[] = [];
  for (let at = 0; at < buf.length;) {
    const id = dv.getUint32(at, true);
    const n = dv.getUint32(at + 4, true);
    const bytes = dv.getUint32(at + 8, true);
    at += 12;
    const type = ggmlQuantTypeOf(id);
    assert.ok(type, `type ${id}`);
    const g = GGML_QUANT_TYPES[type];
    assert.equal(bytes, g.blockBytes);
    const blocks = new Uint8Array(buf.buffer, buf.byteOffset + at, n * bytes);
    at += n * bytes;
    const want = new Float32Array(
      buf.buffer.slice(buf.byteOffset + at, buf.byteOffset + at + n * g.blockElems * 4),
    );
    at += n * g.blockElems * 4;
    const got = new Float32Array(n * g.blockElems);
    dequantizeGgmlBlocks(type, blocks, 0, n, got);
    for (let i = 0; i < got.length; i++) {
      if (!Object.is(got[i], want[i]))
        assert.fail(
          `${g.name} block ${Math.floor(i / g.blockElems)} element ${i % g.blockElems}: ${got[i]} vs ggml ${want[i]}`,
        );
    }
    seen.push(g.name);
  }
  assert.deepEqual(seen, ['Q4_0', 'Q8_0', 'Q4_K', 'Q5_K', 'Q6_K']);
});
