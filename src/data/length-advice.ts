/**
 * What the length limit did to a dataset, in words a user can act on: how many examples it cut and
 * how much of the loss went with them, the --seq-len that would cover 95% of examples, and the
 * truncation that keeps completions. Training refuses (unless forced) when more than half of the
 * examples lose every loss token: such a run trains on almost nothing while looking normal.
 */
import type { SplitStats } from './dataset.js';
import type { RowFormat } from './formats.js';
import type { TruncationPolicy } from './truncate.js';

export interface LengthAdvice {
  /** One line each, to print as warnings. */
  readonly warnings: string[];
  /** Set when the run should not go on without --force: says why and what to do. */
  readonly refusal: string | null;
}

export interface LengthContext {
  readonly seqLen: number;
  readonly policy: TruncationPolicy;
  readonly format: RowFormat;
  /** The model's trained context (max_position_embeddings), when known. */
  readonly contextLength: number | null;
}

/** The q-quantile of a list of lengths (nearest rank, as data inspect reports them). */
export function lengthQuantile(lengths: readonly number[], q: number): number {
  if (lengths.length === 0) return 0;
  const sorted = [...lengths].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function pct(part: number, whole: number): string {
  const p = (100 * part) / Math.max(whole, 1);
  return p >= 10 || p === 0 ? `${Math.round(p)}%` : `${p.toFixed(1)}%`;
}

export function lengthAdvice(stats: SplitStats, c: LengthContext): LengthAdvice {
  const warnings: string[] = [];
  if (c.contextLength !== null && c.seqLen > c.contextLength) {
    warnings.push(
      `--seq-len ${c.seqLen} exceeds the model's context of ${c.contextLength} tokens: positions past ${c.contextLength} were never trained ` +
        `and the loss there is poor; use --seq-len ${c.contextLength} or less`,
    );
  }
  const total = stats.lengths.length;
  const lossBefore = stats.lossTokens + stats.lossTokensCut;
  // Splitting text keeps every token as a target: over-long documents lose nothing.
  const lost = stats.lossTokensCut > 0 || stats.lostAllLoss > 0 || stats.droppedTooLong > 0;
  if (stats.overLength === 0 || !lost) return { warnings, refusal: null };

  const p95 = lengthQuantile(stats.lengths, 0.95);
  const max = lengthQuantile(stats.lengths, 1);
  const remedies: string[] = [];
  if (c.contextLength === null || p95 <= c.contextLength)
    remedies.push(`--seq-len ${p95} covers 95% of examples (the longest has ${max} tokens)`);
  else
    remedies.push(
      `95% of examples fit in ${p95} tokens, more than the model's context of ${c.contextLength}: shorten the prompts (a shorter --template)`,
    );
  if (c.policy !== 'truncate-left' && c.format !== 'text')
    remedies.push(
      '--truncation truncate-left keeps the end of each example (the completion) and cuts the prompt instead',
    );
  const what =
    c.policy === 'drop' ? 'dropped' : c.policy === 'split' ? 'split' : `shortened (${c.policy})`;
  warnings.push(
    `${stats.overLength} of ${total} examples (${pct(stats.overLength, total)}) are longer than --seq-len ${c.seqLen} tokens and were ${what}: ` +
      `${stats.lostAllLoss} lost every loss token, and ${pct(stats.lossTokensCut, lossBefore)} of the loss tokens were cut ` +
      `(${pct(stats.lossTokens, stats.tokens)} of the remaining tokens carry loss). ${remedies.join('; or ')}`,
  );
  const refusal =
    stats.lostAllLoss * 2 > total
      ? `${stats.lostAllLoss} of ${total} examples (${pct(stats.lostAllLoss, total)}) lose all their loss tokens at --seq-len ${c.seqLen}: ` +
        `training would learn from almost nothing. ${remedies.join('; or ')}. Pass --force to train anyway.`
      : null;
  return { warnings, refusal };
}
