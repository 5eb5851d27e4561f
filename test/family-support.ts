// Shared by the family tests that compare our forward with transformers' reference logits
// (fixtures/families/*-tiny.reference.json, scripts/family-reference.py).
import { getBackend } from '../src/backends/index.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { buildLlama } from '../src/models/build.js';
import { KvCache } from '../src/models/llama.js';

/** Logits at every position of `ids` (cpu backend, f32) for a checkpoint path. */
export async function logitsOf(modelPath: string, ids: number[]): Promise<Float32Array> {
  const ck = openCheckpoint(modelPath);
  const be = await getBackend('cpu');
  const model = await buildLlama(ck.config, ck, { backend: be });
  ck.close();
  const arena = be.createArena(1 << 20);
  const cache = new KvCache(model, ids.length);
  try {
    return Float32Array.from(
      await model.forwardCached(Int32Array.from(ids), cache, arena, ids.length).read(),
    );
  } finally {
    cache.dispose();
    arena.dispose();
    model.dispose();
  }
}

/** Largest |ours − reference| over [positions][vocab] rows, and the largest |reference|. */
export function maxDiff(ours: Float32Array, rows: number[][]): { max: number; scale: number } {
  const V = rows[0]!.length;
  let max = 0;
  let scale = 0;
  rows.forEach((row, t) =>
    row.forEach((x, v) => {
      max = Math.max(max, Math.abs(ours[t * V + v]! - x));
      scale = Math.max(scale, Math.abs(x));
    }),
  );
  return { max, scale };
}
