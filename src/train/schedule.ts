export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface ScheduleOptions {
  readonly kind: ScheduleKind;
  /** Peak learning rate. */
  readonly lr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
}

/**
 * Learning rate for optimizer step `step` (0-based), with Hugging Face's schedule semantics
 * (get_{constant,linear,cosine}_schedule_with_warmup): linear warm-up from 0 over warmupSteps,
 * then constant, linear decay to 0, or half-cosine decay to 0 at totalSteps.
 */
export function learningRate(step: number, o: ScheduleOptions): number {
  if (step < o.warmupSteps) return (o.lr * step) / Math.max(1, o.warmupSteps);
  if (o.kind === 'constant') return o.lr;
  const progress = (step - o.warmupSteps) / Math.max(1, o.totalSteps - o.warmupSteps);
  if (o.kind === 'linear') return o.lr * Math.max(0, 1 - progress);
  return o.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}

/** Warm-up steps from either a count or a ratio of the total (HF warmup_ratio rounds up). */
export function warmupSteps(
  totalSteps: number,
  steps: number | undefined,
  ratio: number | undefined,
): number {
  if (steps !== undefined && steps > 0) return Math.floor(steps);
  if (ratio !== undefined && ratio > 0) return Math.ceil(totalSteps * ratio);
  return 0;
}
