import type { RowError, SourceLocation } from './errors.js';

/**
 * One row as a reader produced it, before any format is applied: a parsed JSON value, a CSV record
 * as {column: string}, or {text} for plain text. A row the reader could not parse carries the error
 * instead, so the loader decides whether to stop or count it (--skip-bad-rows).
 */
export type RawRow =
  | { readonly value: unknown; readonly location: SourceLocation; readonly error?: undefined }
  | { readonly error: RowError; readonly location: SourceLocation; readonly value?: undefined };

export type RowSource = AsyncIterable<RawRow>;
