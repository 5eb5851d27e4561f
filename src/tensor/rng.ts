/**
 * Counter-based randomness shared by every backend: the value for element i depends only on
 * (seed, i), so masks are identical across backends, thread counts and runs, and a backward pass
 * regenerates its forward mask instead of storing it. The C++ kernels implement the same functions.
 */

/** A 32-bit integer finalizer (a "lowbias32"-style hash). */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
}

/** Uniform in [0, 1) with 24 bits, for element `index` (< 2^32) under `seed` (u32). */
export function uniformAt(seed: number, index: number): number {
  const h = mix32((mix32(seed >>> 0) + (index >>> 0)) >>> 0);
  return (h >>> 8) / 16777216;
}
