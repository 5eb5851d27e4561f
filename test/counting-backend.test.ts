import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import { CountingBackend } from '../src/backends/counting.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';
import { allocPacked4bit, uploadPacked4bit } from '../src/quant/upload.js';
import type { Packed4bitWeight } from '../src/tensor/backend.js';
import { rng } from './util.js';

const parts = (w: Packed4bitWeight) =>
  [w.packed, w.code, w.absmax, ...(w.nested ? [w.nested.absmax, w.nested.code] : [])].map((t) => [
    t.shape,
    t.dtype,
  ]);

test('a 4-bit weight allocated by shape has the tensors quantizing it gives (odd sizes, every layout)', async () => {
  const ref = await getBackend('ref');
  const counting = new CountingBackend();
  const r = rng(5);
  for (const [rows, cols] of [
    [3, 5],
    [7, 33],
    [64, 129],
    [300, 257],
  ] as const) {
    const values = Float32Array.from({ length: rows * cols }, () => r() - 0.5);
    for (const blocksize of [32, 64, 256]) {
      for (const doubleQuant of [false, true]) {
        const q = { quantType: 'nf4' as const, blocksize, doubleQuant };
        const real = uploadPacked4bit(ref, quantize4bit(values, q), rows, cols);
        const planned = allocPacked4bit(counting, rows, cols, q);
        assert.deepEqual(parts(planned), parts(real), `${rows}×${cols} ${JSON.stringify(q)}`);
        assert.equal(planned.blocksize, real.blocksize);
        assert.equal(planned.nested?.blocksize, real.nested?.blocksize);
      }
    }
  }
});

test('the counting backend holds what the cpu addon allocates, byte for byte, and stores nothing', async () => {
  const cpu = await getBackend('cpu');
  const counting = new CountingBackend();
  for (const [shape, dtype] of [
    [[1], 'f32'],
    [[3], 'u8'],
    [[17, 5], 'i32'],
    [[1000], 'u8'],
    [[65, 33], 'f32'],
  ] as const) {
    const before = cpu.memoryStats().allocatedBytes;
    const c0 = counting.memoryStats().allocatedBytes;
    const a = cpu.zeros(shape, dtype);
    const b = counting.zeros(shape, dtype);
    assert.equal(
      counting.memoryStats().allocatedBytes - c0,
      cpu.memoryStats().allocatedBytes - before,
      `[${shape.join(', ')}] ${dtype}`,
    );
    assert.equal(counting.bytesOf(b), counting.memoryStats().allocatedBytes - c0);
    a.dispose();
    b.dispose();
    assert.equal(counting.memoryStats().allocatedBytes, c0, 'dispose gives the bytes back');
  }
  // No storage: host access throws, reads are zeros (placeholders for a planned loss).
  const t = counting.fromArray([1, 2, 3], [3]);
  assert.throws(() => t.data, /not host-resident/);
  assert.deepEqual(await t.toArray(), [0, 0, 0]);
  assert.throws(() => t.write([1]), /1 values for a tensor of 3/);
  // The real arena: tensors of a reset arena are dead, chunks grow by its policy.
  const arena = counting.createArena(1 << 20, 'step');
  const x = arena.alloc([300_000]);
  // 1.2 MB does not fit the first chunk: a second one of max(request, last chunk) is added.
  assert.equal(arena.capacity, (1 << 20) + 1_200_000);
  assert.equal(arena.peakBytes, 1_200_000);
  arena.reset();
  assert.equal(arena.capacity, (1 << 20) + 1_200_000, 'merged into one chunk on reset');
  assert.throws(() => x.read(), /its arena was reset/);
  // Shapes are still checked: a wrong product fails as on a real backend.
  assert.throws(
    () => counting.matmul(counting.zeros([2, 3]), counting.zeros([4, 5]), counting.zeros([2, 5])),
    /counting\.matmul: inner dimensions differ/,
  );
  arena.dispose();
});
