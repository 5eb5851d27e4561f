import { uniformAt } from '../tensor/rng.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  readonly temperature: number;
  /** Keep the k most likely tokens (0 = off). */
  readonly topK: number;
  /** Keep the smallest set whose probability reaches p (1 = off). */
  readonly topP: number;
  /** Drop tokens less likely than minP × the most likely one (0 = off). */
  readonly minP: number;
  /** HF/CTRL-style penalty on tokens already in the context (1 = off). */
  readonly repetitionPenalty: number;
  readonly seed: number;
}

export const DEFAULT_SAMPLING: SamplingOptions = {
  temperature: 0,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  seed: 0,
};

export function validateSampling(o: SamplingOptions): void {
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature))
    throw new Error(`temperature must be ≥ 0, got ${o.temperature}`);
  if (!Number.isInteger(o.topK) || o.topK < 0)
    throw new Error(`top-k must be a non-negative integer, got ${o.topK}`);
  if (!(o.topP > 0 && o.topP <= 1)) throw new Error(`top-p must be in (0, 1], got ${o.topP}`);
  if (!(o.minP >= 0 && o.minP < 1)) throw new Error(`min-p must be in [0, 1), got ${o.minP}`);
  if (!(o.repetitionPenalty > 0))
    throw new Error(`repetition penalty must be > 0, got ${o.repetitionPenalty}`);
}

/**
 * Picks the next token from one row of logits. The order follows Hugging Face's generate():
 * repetition penalty, temperature, top-k, top-p, min-p, then a draw. Randomness is counter-based
 * (seed, step), so a given seed reproduces the same text on every backend.
 */
export function sampleToken(
  logits: ArrayLike<number>,
  context: readonly number[],
  step: number,
  o: SamplingOptions,
): number {
  const V = logits.length;
  const z = new Float64Array(V);
  for (let i = 0; i < V; i++) z[i] = logits[i]!;
  if (o.repetitionPenalty !== 1) {
    const seen = new Set(context);
    for (const id of seen) {
      if (id < 0 || id >= V) continue;
      z[id] = z[id]! > 0 ? z[id]! / o.repetitionPenalty : z[id]! * o.repetitionPenalty;
    }
  }
  if (o.temperature === 0) return argmax(z);
  for (let i = 0; i < V; i++) z[i] = z[i]! / o.temperature;

  // Candidates sorted by logit, descending (ties by id for determinism). With top-k only the k best
  // are selected and sorted; without any filter the full vocabulary is sampled in id order.
  const byLogit = (a: number, b: number) => z[b]! - z[a]! || a - b;
  let order: number[];
  if (o.topK > 0 && o.topK < V) order = topKIndices(z, o.topK, byLogit);
  else if (o.topP < 1 || o.minP > 0) order = Array.from({ length: V }, (_, i) => i).sort(byLogit);
  else order = Array.from({ length: V }, (_, i) => i);
  let maxZ = -Infinity;
  for (const i of order) maxZ = Math.max(maxZ, z[i]!);
  let probs = order.map((i) => Math.exp(z[i]! - maxZ));
  let total = probs.reduce((s, p) => s + p, 0);
  if (o.topP < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < probs.length) {
      cum += probs[keep]! / total;
      keep++;
      if (cum >= o.topP) break;
    }
    order = order.slice(0, keep);
    probs = probs.slice(0, keep);
    total = probs.reduce((s, p) => s + p, 0);
  }
  if (o.minP > 0) {
    // order is sorted here (min-p implies a sort above), so probs[0] is the most likely token.
    const threshold = o.minP * (probs[0]! / total);
    let keep = probs.findIndex((p) => p / total < threshold);
    if (keep === -1) keep = probs.length;
    keep = Math.max(1, keep);
    order = order.slice(0, keep);
    probs = probs.slice(0, keep);
    total = probs.reduce((s, p) => s + p, 0);
  }
  const u = uniformAt(o.seed, step) * total;
  let acc = 0;
  for (let i = 0; i < probs.length; i++) {
    acc += probs[i]!;
    if (u < acc) return order[i]!;
  }
  return order[order.length - 1]!;
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** Indices of the k largest values under `compare`, sorted; one pass with a small sorted buffer. */
function topKIndices(
  z: Float64Array,
  k: number,
  compare: (a: number, b: number) => number,
): number[] {
  const best: number[] = [];
  for (let i = 0; i < z.length; i++) {
    if (best.length === k && compare(i, best[k - 1]!) >= 0) continue;
    let lo = 0;
    let hi = best.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compare(best[mid]!, i) <= 0) lo = mid + 1;
      else hi = mid;
    }
    best.splice(lo, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}
