// Comparing the per-step loss curves of two runs of the same training (another backend, another
// compute precision): every step's relative difference within a tolerance, the worst one printed.
import assert from 'node:assert/strict';

export interface CurveOptions {
  /** Largest allowed |got − want| / |want| at any step. */
  readonly tolerance: number;
  /**
   * The curves must differ somewhere (a lower-precision path that really ran); when false, equal
   * curves pass.
   */
  readonly mustDiffer?: boolean;
}

/** Asserts `got` follows `want` step by step; returns the worst relative difference. */
export function compareLossCurves(
  what: string,
  want: readonly number[],
  got: readonly number[],
  o: CurveOptions,
): number {
  assert.equal(got.length, want.length, `${what}: ${got.length} steps vs ${want.length}`);
  assert.ok(want.length > 0, `${what}: no steps`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    assert.ok(Number.isFinite(got[i]!) && Number.isFinite(want[i]!), `${what} step ${i + 1}`);
    const rel = Math.abs(got[i]! - want[i]!) / Math.abs(want[i]!);
    assert.ok(rel <= o.tolerance, `${what} step ${i + 1}: ${got[i]} vs ${want[i]}`);
    worst = Math.max(worst, rel);
  }
  console.log(
    `# ${what}: max per-step relative loss difference ${worst.toExponential(2)} over ${want.length} steps`,
  );
  if (o.mustDiffer)
    assert.ok(worst > 0, `${what}: the curves are equal bit for bit: the other path did not run`);
  return worst;
}
