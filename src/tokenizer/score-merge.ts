/**
 * SentencePiece-style BPE by piece scores: repeatedly merge the adjacent pair whose concatenation
 * is a vocabulary piece with the highest score, the leftmost pair winning ties. This is what
 * llama2.c run.c's encode() loop does (O(n²) there) and what llama.cpp's llm_tokenizer_spm does
 * with a priority queue; we use the priority queue (same result, O(n log n)).
 */

interface Bigram {
  score: number;
  /** Index of the left symbol in the original sequence; orders ties (leftmost first). */
  left: number;
  right: number;
  /** Length of the concatenated text when queued, to detect pairs invalidated by other merges. */
  size: number;
}

/** True when a should pop before b: higher score, then leftmost. */
function before(a: Bigram, b: Bigram): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

class BigramHeap {
  private readonly items: Bigram[] = [];

  get size(): number {
    return this.items.length;
  }

  push(b: Bigram): void {
    const h = this.items;
    h.push(b);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  pop(): Bigram {
    const h = this.items;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < h.length && before(h[l]!, h[best]!)) best = l;
        if (r < h.length && before(h[r]!, h[best]!)) best = r;
        if (best === i) break;
        [h[i], h[best]] = [h[best]!, h[i]!];
        i = best;
      }
    }
    return top;
  }
}

/**
 * Merges `symbols` (initial pieces, in order) by score. `scoreOf(text)` is the score of the
 * vocabulary piece spelled `text`, or undefined when no piece has that spelling.
 * Returns the final pieces in order.
 */
export function mergeByScore(
  symbols: readonly string[],
  scoreOf: (text: string) => number | undefined,
): string[] {
  const n = symbols.length;
  const text = symbols.slice();
  const prev = Array.from({ length: n }, (_, i) => i - 1);
  const next = Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
  const alive = new Array<boolean>(n).fill(true);
  const queue = new BigramHeap();

  const tryAdd = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const joined = text[left]! + text[right]!;
    const score = scoreOf(joined);
    if (score !== undefined) queue.push({ score, left, right, size: joined.length });
  };

  for (let i = 1; i < n; i++) tryAdd(i - 1, i);
  while (queue.size > 0) {
    const b = queue.pop();
    // Skip pairs that an earlier merge consumed or grew (llama.cpp's size check).
    if (!alive[b.left] || !alive[b.right] || next[b.left] !== b.right) continue;
    if (text[b.left]!.length + text[b.right]!.length !== b.size) continue;
    text[b.left] = text[b.left]! + text[b.right]!;
    alive[b.right] = false;
    next[b.left] = next[b.right]!;
    if (next[b.right]! >= 0) prev[next[b.right]!] = b.left;
    tryAdd(prev[b.left]!, b.left);
    tryAdd(b.left, next[b.left]!);
  }

  const out: string[] = [];
  for (let i = n > 0 ? 0 : -1; i !== -1; i = next[i]!) out.push(text[i]!);
  return out;
}
