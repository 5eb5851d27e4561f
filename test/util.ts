// Shared test helpers: seeded random data and closeness checks. No test may use Math.random.
import assert from 'node:assert/strict';

/** Deterministic PRNG (mulberry32) for test data. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller). */
export function randn(n: number, seed: number, scale = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

/** Uniform samples in [lo, hi). */
export function randu(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/** Largest |a - b| / (atol + rtol·|b|) must be ≤ 1: reports the worst index on failure. */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  {
    atol = 1e-5,
    rtol = 1e-4,
    what = 'values',
  }: { atol?: number; rtol?: number; what?: string } = {},
): void {
  assert.equal(
    actual.length,
    expected.length,
    `${what}: length ${actual.length} != ${expected.length}`,
  );
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(a) !== Number.isNaN(e)) assert.fail(`${what}[${i}]: ${a} vs ${e}`);
    if (Number.isNaN(a)) continue;
    const ratio = Math.abs(a - e) / (atol + rtol * Math.abs(e));
    if (!(ratio <= worstRatio)) {
      worstRatio = ratio;
      worst = i;
    }
  }
  if (worstRatio > 1) {
    assert.fail(
      `${what}[${worst}]: ${actual[worst]} vs expected ${expected[worst]} ` +
        `(|diff| ${Math.abs(actual[worst]! - expected[worst]!)}, atol ${atol}, rtol ${rtol})`,
    );
  }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** The float32 next to x (one ulp up or down); ±0 steps to the smallest subnormal. */
export function nextFloat32(x: number, direction: 1 | -1): number {
  const buf = new Float32Array([x]);
  const bits = new Uint32Array(buf.buffer);
  if (x === 0) return direction * 1.4e-45;
  bits[0] = x > 0 === direction > 0 ? bits[0]! + 1 : bits[0]! - 1;
  return buf[0]!;
}
