import type { TokenizedExample } from './tokenize.js';

/**
 * What to do with an example longer than max_seq_len:
 * - drop: leave it out;
 * - truncate-right: keep its first max_seq_len tokens (TRL's default, "keep_start");
 * - truncate-left: keep its last tokens (and its BOS), for data whose end matters most;
 * - split: cut it into consecutive windows that overlap by one token, so every token is still a
 *   target exactly once (for plain-text language modelling, where documents are long).
 */
export type TruncationPolicy = 'drop' | 'truncate-left' | 'truncate-right' | 'split';
export const TRUNCATION_POLICIES: readonly TruncationPolicy[] = [
  'drop',
  'truncate-left',
  'truncate-right',
  'split',
];

export interface FitResult {
  readonly examples: TokenizedExample[];
  /** The example was longer than the limit (and shortened, split or dropped). */
  readonly overLength: boolean;
  /** It was dropped for being too long (policy drop). */
  readonly dropped: boolean;
}

export function fitToLength(
  example: TokenizedExample,
  maxSeqLen: number,
  policy: TruncationPolicy,
  bosId: number | null,
): FitResult {
  const n = example.ids.length;
  if (n <= maxSeqLen) return { examples: [example], overLength: false, dropped: false };
  const slice = (from: number, to: number): TokenizedExample => ({
    ids: example.ids.slice(from, to),
    targets: example.targets.slice(from, to),
    location: example.location,
  });
  switch (policy) {
    case 'drop':
      return { examples: [], overLength: true, dropped: true };
    case 'truncate-right':
      return { examples: [slice(0, maxSeqLen)], overLength: true, dropped: false };
    case 'truncate-left': {
      const keepBos = bosId !== null && example.ids[0] === bosId && maxSeqLen > 1;
      if (!keepBos)
        return { examples: [slice(n - maxSeqLen, n)], overLength: true, dropped: false };
      const tail = slice(n - (maxSeqLen - 1), n);
      const ids = new Int32Array(maxSeqLen);
      const targets = new Uint8Array(maxSeqLen);
      ids[0] = bosId;
      ids.set(tail.ids, 1);
      targets.set(tail.targets, 1);
      return {
        examples: [{ ids, targets, location: example.location }],
        overLength: true,
        dropped: false,
      };
    }
    case 'split': {
      if (maxSeqLen < 2)
        return { examples: [slice(0, maxSeqLen)], overLength: true, dropped: false };
      const pieces: TokenizedExample[] = [];
      // Each window starts on the previous window's last token, which is only context there.
      for (let start = 0; start < n - 1; start += maxSeqLen - 1)
        pieces.push(slice(start, Math.min(n, start + maxSeqLen)));
      return { examples: pieces, overLength: true, dropped: false };
    }
  }
}
