import type { CrossEntropyOptions } from '../../tensor/backend.js';
import type { Tensor } from '../../tensor/tensor.js';
import { softcapOption } from '../shape-checks.js';
import { checks, expectRank, expectShape, fail, ints, sameFloatType } from './check.js';

/**
 * losses[r] = logsumexp(logits[r]) - logits[r, label] (0 for ignored rows); dlogits (optional, may
 * alias logits) = gradScale·(softmax - onehot), zero rows where ignored. With options.softcap the
 * row is first capped, y = cap·tanh(x / cap), and the gradient carries dy/dx = 1 - (y / cap)².
 */
export function crossEntropy(
  logits: Tensor,
  labels: Tensor,
  ignoreIndex: number,
  losses: Tensor,
  dlogits: Tensor | null,
  gradScale: number,
  options?: CrossEntropyOptions,
): void {
  const op = 'crossEntropy';
  const cap = softcapOption(checks, op, 'softcap', options?.softcap);
  sameFloatType(op, dlogits ? { logits, losses, dlogits } : { logits, losses });
  const Y = ints(op, 'labels', labels);
  expectRank(op, 'logits', logits, 2);
  const [n, V] = logits.shape as [number, number];
  expectShape(op, 'labels', labels, [n]);
  expectShape(op, 'losses', losses, [n]);
  if (dlogits) expectShape(op, 'dlogits', dlogits, [n, V]);
  for (let r = 0; r < n; r++) {
    const y = Y[r]!;
    if (y !== ignoreIndex && (y < 0 || y >= V))
      fail(
        op,
        `label ${y} at row ${r} is outside [0, ${V}) and not the ignore index ${ignoreIndex}`,
      );
  }
  const Lo = losses.data;
  const G = dlogits?.data;
  // The capped logits in float64 (a copy: dlogits may alias logits).
  const X =
    cap === null ? logits.data : Float64Array.from(logits.data, (x) => cap * Math.tanh(x / cap));
  for (let r = 0; r < n; r++) {
    const y = Y[r]!;
    const base = r * V;
    if (y === ignoreIndex) {
      Lo[r] = 0;
      if (G) G.fill(0, base, base + V);
      continue;
    }
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, X[base + j]!);
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(X[base + j]! - m);
    const lse = m + Math.log(sum);
    Lo[r] = lse - X[base + y]!;
    if (G) {
      // Reads logits[j] before writing dlogits[j]: safe when they alias.
      for (let j = 0; j < V; j++) {
        const capGrad = cap === null ? 1 : 1 - (X[base + j]! / cap) ** 2;
        G[base + j] = gradScale * (Math.exp(X[base + j]! - lse) - (j === y ? 1 : 0)) * capGrad;
      }
    }
  }
}
