/**
 * Errors raised while turning user data into training examples. Every message names where the
 * problem is (file, line, column, row) so a user can fix the input without guessing.
 */

/** Where a row (or a byte of one) came from. Lines and columns are 1-based; row is 1-based too. */
export interface SourceLocation {
  readonly file: string;
  /** 1-based data row number (CSV rows exclude the header; JSON array elements count from 1). */
  readonly row?: number;
  readonly line?: number;
  readonly column?: number;
}

export function describeLocation(loc: SourceLocation): string {
  let where = loc.file;
  if (loc.line !== undefined) where += `, line ${loc.line}`;
  if (loc.column !== undefined) where += `, column ${loc.column}`;
  return loc.row !== undefined ? `${where} (row ${loc.row})` : where;
}

/** A problem with the dataset as a whole (unreadable file, malformed JSON array, empty dataset): always stops. */
export class DatasetError extends Error {
  constructor(
    message: string,
    readonly location?: SourceLocation,
  ) {
    super(location ? `${describeLocation(location)}: ${message}` : message);
    this.name = 'DatasetError';
  }
}

/**
 * A problem confined to one row (bad JSON line, missing fields, unknown role, template error,
 * nothing to learn from). Stops loading unless skipBadRows is set, in which case it is counted.
 */
export class RowError extends DatasetError {
  constructor(
    readonly reason: string,
    location: SourceLocation,
  ) {
    super(reason, location);
    this.name = 'RowError';
  }
}

/** Short, single-line preview of a value for error messages. */
export function preview(value: unknown, max = 80): string {
  let text: string;
  try {
    text =
      typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * A row whose fields fit no known format, while the format is still being detected. A row error
 * (so --skip-bad-rows can pass over a stray first row), but usually the whole file needs --columns
 * or --format, which the message says.
 */
export class UnknownFormatError extends RowError {
  constructor(reason: string, location: SourceLocation) {
    super(reason, location);
    this.name = 'UnknownFormatError';
  }
}
