/**
 * A cheap linear pre-scan of JSON text, run before JSON.parse on untrusted input: JSON.parse
 * itself copes with deep nesting, but what consumes the result (walkers, JSON.stringify, error
 * previews, structured clone) recurses and overflows the stack on `[[[[…]]]]`. Strings are skipped
 * correctly (escapes included); malformed text is left for JSON.parse to report.
 */

/** Offset of the first bracket that opens level `maxDepth + 1`, or null when the text stays within `maxDepth`. */
export function jsonNestingBeyond(text: string, maxDepth: number): number | null {
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string: to the next unescaped quote.
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) return i;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return null;
}

/** Object members (name: value pairs) in the text, counted without parsing. */
export function jsonMemberCount(text: string): number {
  let members = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x3a) {
      members++;
    }
  }
  return members;
}
