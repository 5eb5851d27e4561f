import { mix32, uniformAt } from '../tensor/rng.js';

/** Seed for a named stream (e.g. one per parameter), so initialisation never depends on creation order. */
export function seedFor(seed: number, name: string): number {
  let h = mix32(seed >>> 0);
  for (let i = 0; i < name.length; i++) h = mix32((h ^ name.charCodeAt(i)) >>> 0);
  return h;
}

/** U(-bound, bound) values from the counter-based generator. */
export function uniformInit(n: number, seed: number, bound: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * uniformAt(seed, i) - 1) * bound;
  return out;
}

/** N(0, std²) values (Box–Muller over pairs of counter-based uniforms). */
export function normalInit(n: number, seed: number, std: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u1 = Math.max(uniformAt(seed, 2 * i), 1 / 16777216);
    const u2 = uniformAt(seed, 2 * i + 1);
    out[i] = std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
  return out;
}
