import { DatasetError } from './errors.js';

/**
 * A user's prompt template: literal text with {column} placeholders, e.g.
 * "Target: {ref}\nMeaning representation:". `{{` and `}}` are literal braces.
 * Parsed once, so a malformed template fails before any row is read.
 */
export class PromptTemplate {
  private readonly parts: readonly ({ literal: string } | { column: string })[];
  readonly columns: readonly string[];

  constructor(readonly source: string) {
    const parts: ({ literal: string } | { column: string })[] = [];
    let literal = '';
    for (let i = 0; i < source.length; i++) {
      const c = source[i]!;
      if ((c === '{' || c === '}') && source[i + 1] === c) {
        literal += c;
        i++;
      } else if (c === '{') {
        const close = source.indexOf('}', i);
        const name = close < 0 ? '' : source.slice(i + 1, close).trim();
        if (close < 0 || name === '' || name.includes('{')) {
          throw new DatasetError(
            `template error at character ${i + 1}: '{' must be followed by a column name and '}' (write '{{' for a literal brace)`,
          );
        }
        if (literal) parts.push({ literal });
        literal = '';
        parts.push({ column: name });
        i = close;
      } else if (c === '}') {
        throw new DatasetError(
          `template error at character ${i + 1}: unmatched '}' (write '}}' for a literal brace)`,
        );
      } else literal += c;
    }
    if (literal) parts.push({ literal });
    this.parts = parts;
    this.columns = [...new Set(parts.flatMap((p) => ('column' in p ? [p.column] : [])))];
  }

  /** Fills the placeholders; on an unknown column returns its name so the caller can name the row. */
  render(
    row: Readonly<Record<string, unknown>>,
  ): { text: string } | { unknownColumn: string } | { badValue: string } {
    let text = '';
    for (const part of this.parts) {
      if ('literal' in part) {
        text += part.literal;
        continue;
      }
      if (!Object.prototype.hasOwnProperty.call(row, part.column))
        return { unknownColumn: part.column };
      const value = row[part.column];
      if (typeof value === 'string') text += value;
      else if (typeof value === 'number' || typeof value === 'boolean') text += String(value);
      else return { badValue: part.column };
    }
    return { text };
  }
}

/** Turns the escapes a shell leaves literal (\n, \t, \\) into characters, for templates given on a command line. */
export function unescapeCommandLine(text: string): string {
  return text.replace(/\\([nt\\])/g, (_, c: string) =>
    c === 'n' ? '\n' : c === 't' ? '\t' : '\\',
  );
}
