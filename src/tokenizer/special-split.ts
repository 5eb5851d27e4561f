/**
 * Splits text at occurrences of special-token texts (e.g. "<s>", "<|im_start|>") so that they
 * encode to their special ids instead of being tokenized as ordinary characters, as llama.cpp's
 * tokenizer_st_partition and HF added-token matching do. The longest special text wins at each
 * position.
 */

export type Fragment = { kind: 'text'; text: string } | { kind: 'special'; id: number };

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export class SpecialTokenSplitter {
  private readonly pattern: RegExp | null;

  constructor(private readonly specials: ReadonlyMap<string, number>) {
    const texts = [...specials.keys()]
      .filter((t) => t.length > 0)
      .sort((a, b) => b.length - a.length);
    this.pattern = texts.length > 0 ? new RegExp(texts.map(escapeRegExp).join('|'), 'g') : null;
  }

  split(text: string): Fragment[] {
    if (this.pattern === null) return text.length > 0 ? [{ kind: 'text', text }] : [];
    const out: Fragment[] = [];
    let last = 0;
    for (const m of text.matchAll(this.pattern)) {
      if (m.index > last) out.push({ kind: 'text', text: text.slice(last, m.index) });
      out.push({ kind: 'special', id: this.specials.get(m[0])! });
      last = m.index + m[0].length;
    }
    if (last < text.length) out.push({ kind: 'text', text: text.slice(last) });
    return out;
  }
}
