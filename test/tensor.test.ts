import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';

for (const name of ['ref', 'cpu'] as const) {
  test(`${name}: owned tensors round-trip values and free their memory`, async () => {
    const be = await getBackend(name);
    const before = be.memoryStats().allocatedBytes;
    const t = be.fromArray([1, 2, 3, 4, 5, 6], [2, 3]);
    assert.deepEqual(await t.toArray(), [1, 2, 3, 4, 5, 6]);
    assert.ok(be.memoryStats().allocatedBytes > before);
    const r = t.rows(1, 2);
    assert.deepEqual(r.shape, [1, 3]);
    assert.deepEqual(await r.toArray(), [4, 5, 6]);
    assert.deepEqual(t.view([3, 2]).shape, [3, 2]);
    assert.throws(() => t.view([4, 2]), /cannot view/);
    t.dispose();
    assert.equal(be.memoryStats().allocatedBytes, before);
    assert.throws(() => t.data, /after dispose/);
    assert.throws(() => r.data, /after dispose/);
  });

  test(`${name}: arena tensors are invalid after reset and the arena settles into one chunk`, async () => {
    const be = await getBackend(name);
    const arena = be.createArena(1024, 'test');
    const a = arena.zeros([10, 10]);
    assert.equal(a.data.length, 100);
    const big = arena.alloc([1000, 1000]); // forces a second chunk
    big.data.fill(1);
    assert.ok(arena.bytesInUse >= 4_000_000);
    arena.reset();
    assert.throws(() => a.data, /arena was reset/);
    assert.throws(() => big.data, /arena was reset/);
    const capacity = arena.capacity;
    for (let step = 0; step < 5; step++) {
      arena.alloc([10, 10]);
      arena.alloc([1000, 1000]);
      arena.reset();
    }
    assert.equal(arena.capacity, capacity, 'steady state allocates nothing new');
    arena.dispose();
  });
}

test('cpu: tensor memory is 64-byte aligned native memory', async () => {
  const be = await getBackend('cpu');
  const t = be.zeros([3, 5]);
  assert.equal(t.data.byteOffset % 64, 0);
  const arena = be.createArena(4096);
  for (let i = 0; i < 5; i++) {
    const x = arena.alloc([7]);
    assert.equal(x.data.byteOffset % 64, 0);
  }
  arena.dispose();
  t.dispose();
});
