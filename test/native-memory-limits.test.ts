// Blocks past what the runtime can wrap in an ArrayBuffer (Node 20: buffer.constants.MAX_LENGTH,
// 4 GiB). Training at batch × seq ≥ 65,536 tokens without gradient checkpointing grew the step arena
// past its planned size and merged it into one block over 4 GiB: Node refused the external buffer,
// ran the addon's finalizer anyway, and the block was freed twice ("free(): double free detected in
// tcache 2"). The addon must turn a refusal into a clear error, and arenas must never ask for a
// block over the limit (they keep several chunks instead).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { constants as bufferConstants } from 'node:buffer';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import { chunkSizes, type HostChunk, HostArena, MAX_CHUNK_BYTES } from '../src/tensor/arena.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const TSX = import.meta.resolve('tsx');

test('cpu: alloc() past the ArrayBuffer limit is a clear error, frees the block once and leaves the heap usable', () => {
  // A child process: before the fix this aborted the whole process (double free).
  const nativeUrl = pathToFileURL(path.join(root, 'src', 'backends', 'cpu', 'native.ts')).href;
  const script = `
    const { native } = await import(${JSON.stringify(nativeUrl)});
    const before = native.memoryStats();
    let message = null;
    try { native.alloc(${bufferConstants.MAX_LENGTH} + 64); } catch (e) { message = e.message; }
    const after = native.memoryStats();
    // The allocator still works: a normal block round-trips.
    const ok = new Float32Array(native.alloc(4096));
    ok[1023] = 7;
    const sum = ok.reduce((s, v) => s + v, 0);
    native.free(ok.buffer);
    console.log(JSON.stringify({ message, before, after, sum, end: native.memoryStats() }));
  `;
  const r = spawnSync(process.execPath, ['--import', TSX, '--input-type=module', '-e', script], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.signal, null, `child died of ${r.signal}: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    message: string | null;
    before: { allocatedBytes: number; liveBlocks: number };
    after: { allocatedBytes: number; liveBlocks: number };
    sum: number;
    end: { allocatedBytes: number; liveBlocks: number };
  };
  assert.match(out.message ?? '', /alloc: the runtime refused an ArrayBuffer of 4294967360 bytes/);
  assert.equal(
    out.after.allocatedBytes,
    out.before.allocatedBytes,
    'the refused block is released',
  );
  assert.equal(out.after.liveBlocks, out.before.liveBlocks);
  assert.equal(out.sum, 7);
  assert.equal(out.end.allocatedBytes, out.before.allocatedBytes);
});

test('arena chunks never exceed the block limit: the initial size, growth and the merge on reset split instead', async () => {
  const be = await getBackend('ref');
  const max = 4096;
  const sizes: number[] = [];
  let live = 0;
  const allocChunk = (bytes: number): HostChunk => {
    sizes.push(bytes);
    live++;
    return { buffer: new ArrayBuffer(bytes), release: () => void live-- };
  };
  const arena = new HostArena(be, allocChunk, 10_000, 'limited', max);
  assert.deepEqual(sizes, [4096, 4096, 1856], 'the planned size arrives as several chunks');
  const step = () => {
    const ts = [
      arena.alloc([700]),
      arena.alloc([1000]),
      arena.alloc([300]),
      arena.alloc([1024]),
      arena.alloc([900]),
    ];
    ts.forEach((t, i) => t.data.fill(i + 1));
    // Tensors of one step never overlap.
    ts.forEach((t, i) =>
      assert.ok(
        t.data.every((v) => v === i + 1),
        `tensor ${i} intact`,
      ),
    );
  };
  for (let s = 0; s < 4; s++) {
    step();
    arena.reset();
  }
  assert.ok(Math.max(...sizes) <= max, `a chunk of ${Math.max(...sizes)} bytes exceeds ${max}`);
  const capacity = arena.capacity;
  const allocations = sizes.length;
  step();
  arena.reset();
  assert.equal(arena.capacity, capacity, 'steady state');
  assert.equal(sizes.length, allocations, 'steady state allocates nothing');
  assert.throws(
    () => arena.alloc([1025]),
    /arena 'limited': a f32 tensor of shape \[1025\] needs 4160 bytes, more than the largest block/,
  );
  arena.dispose();
  assert.equal(live, 0);
});

test('chunkSizes covers the total in as few chunks as the limit allows; the default limit is what Node can wrap', () => {
  assert.deepEqual(chunkSizes(0, 4096), []);
  assert.deepEqual(chunkSizes(100, 4096), [128]);
  assert.deepEqual(chunkSizes(8192, 4096), [4096, 4096]);
  assert.deepEqual(chunkSizes(8193, 4096), [4096, 4096, 64]);
  assert.ok(MAX_CHUNK_BYTES <= bufferConstants.MAX_LENGTH && MAX_CHUNK_BYTES % 64 === 0);
  // The 4.48 GB merge of the reported crash becomes two blocks Node accepts.
  assert.deepEqual(
    chunkSizes(2 * 2237923328, MAX_CHUNK_BYTES).map((s) => s <= bufferConstants.MAX_LENGTH),
    [true, true],
  );
});
