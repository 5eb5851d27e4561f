import { uniformAt } from '../tensor/rng.js';

/** Fisher–Yates permutation of 0..n-1 driven by the counter-based generator (same on every machine and run). */
export function seededPermutation(n: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(uniformAt(seed >>> 0, i) * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}
