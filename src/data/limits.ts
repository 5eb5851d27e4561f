/**
 * Bounds on what one row of user data may cost. A dataset file is untrusted input: one 100 MB
 * line, or `[[[[…]]]]` nested a million deep, must be a clear error about that row (which
 * --skip-bad-rows can skip), not minutes of work, gigabytes of heap or a stack overflow.
 */

/** Longest row (JSONL line, CSV record, JSON array element, text document) in UTF-8 bytes, unless configured. */
export const DEFAULT_MAX_ROW_BYTES = 1 << 20;

/**
 * Deepest JSON nesting accepted in a row. Chat rows nest 3–5 deep (row → messages → message →
 * content parts); tool schemas a few more.
 */
export const MAX_ROW_JSON_DEPTH = 64;

/**
 * JSON array files are parsed whole (a JSON array cannot be streamed without a streaming parser);
 * past this size the file must be JSON Lines instead.
 */
export const MAX_JSON_ARRAY_FILE_BYTES = 256 << 20;

export function describeBytes(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1 << 10 && n % (1 << 10) === 0) return `${n / (1 << 10)} KiB`;
  return `${n} bytes`;
}

/** The row-length error message (one wording for every reader). */
export function rowTooLongMessage(bytes: number, limit: number, what: string): string {
  return `${what} is longer than the ${describeBytes(limit)} row limit (${bytes} bytes); raise it with --max-row-bytes`;
}

/** UTF-8 length of a string without encoding it. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    n +=
      c < 0x80
        ? 1
        : c < 0x800
          ? 2
          : c >= 0xd800 && c <= 0xdbff
            ? 4
            : c >= 0xdc00 && c <= 0xdfff
              ? 0
              : 3;
  }
  return n;
}
