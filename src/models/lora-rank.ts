import { PROJECTIONS, type ProjectionName, type ShapeDims } from './family.js';
import { projectionShapesOf } from './registry.js';

/** The dimensions rank checks need (a BuildConfig or a checkpoint header's config). */
export interface ProjectionDims extends ShapeDims {
  /** The family (llama when absent), whose table gives the shapes. */
  readonly architecture?: string;
}

/** [out, in] of each projection's weight (from the family's table). */
export function projectionShapes(
  c: ProjectionDims,
): Partial<Record<ProjectionName, [number, number]>> {
  return projectionShapesOf(c);
}

/**
 * Checks a LoRA rank against the projections it adapts, before anything is allocated.
 *
 * B·A has rank at most min(in, out), so a rank above that adds parameters (and memory, optimizer
 * state, time) but no expressiveness: a warning names those projections. A rank above both
 * dimensions of every targeted projection is refused: each of its A and B would then be larger
 * than the weight it adapts, and such ranks are typos (`--rank 100000` on a 64-wide model asked
 * for gigabytes of adapters). Returns the warnings; throws for an invalid rank.
 */
export function checkLoraRank(
  c: ProjectionDims,
  r: number,
  targets: ReadonlySet<ProjectionName>,
): string[] {
  if (!Number.isInteger(r) || r < 1)
    throw new Error(`LoRA rank must be a positive integer, got ${r}`);
  const shapes = projectionShapes(c);
  // Only the family's projections (a target set may name roles of other families).
  const targeted = PROJECTIONS.filter((name) => targets.has(name) && shapes[name]);
  const shapeOf = (name: ProjectionName): [number, number] => shapes[name]!;
  if (targeted.length === 0) return [];
  const largest = Math.max(...targeted.map((name) => Math.max(...shapeOf(name))));
  const usable = Math.max(...targeted.map((name) => Math.min(...shapeOf(name))));
  if (r > largest) {
    throw new Error(
      `LoRA rank ${r} is larger than every dimension of the projections it adapts (the largest is ${largest}): ` +
        `each adapter would be bigger than its weight and add nothing; use a rank ≤ ${usable} (min(in, out) of the widest target)`,
    );
  }
  const over = targeted.filter((name) => r > Math.min(...shapeOf(name)));
  if (over.length === 0) return [];
  const list = over.map((name) => `${name} [${shapeOf(name)[0]}×${shapeOf(name)[1]}]`).join(', ');
  return [
    `LoRA rank ${r} exceeds min(in, out) of ${list}: an update of those projections has rank at most min(in, out), ` +
      `so the extra rank only costs memory and time`,
  ];
}
