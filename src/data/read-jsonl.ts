import { fs } from '../io/host.js';
import { jsonNestingBeyond } from '../io/json-scan.js';
import { RowError } from './errors.js';
import { findJsonSyntaxProblem } from './json-locate.js';
import { DEFAULT_MAX_ROW_BYTES, MAX_ROW_JSON_DEPTH, rowTooLongMessage } from './limits.js';
import type { RawRow } from './rows.js';

export interface RowReadOptions {
  /** Longest line in UTF-8 bytes (default 1 MiB); a longer one is a row error and is not held in memory. */
  readonly maxRowBytes?: number;
}

const utf8 = new TextDecoder('utf-8');

/**
 * JSON Lines, streamed line by line: one JSON value per line, blank lines ignored. A line that
 * does not parse, nests deeper than MAX_ROW_JSON_DEPTH or is longer than the row limit becomes a
 * row error naming its line (and column). Lines are split on bytes, so an over-long line is
 * skipped without ever being held whole.
 */
export async function* readJsonLines(
  file: string,
  displayName = file,
  options: RowReadOptions = {},
): AsyncGenerator<RawRow> {
  const limit = options.maxRowBytes ?? DEFAULT_MAX_ROW_BYTES;
  let lineNo = 0;
  let row = 0;
  let parts: Buffer[] = [];
  let partBytes = 0;
  let overLong = false;

  /** Rows of one \n-terminated segment: a lone \r is a line break too (as readline reads it). */
  const finishLine = (): RawRow[] => {
    if (overLong) {
      lineNo++;
      const bytes = partBytes;
      parts = [];
      partBytes = 0;
      overLong = false;
      row++;
      const location = { file: displayName, line: lineNo, row };
      return [
        { error: new RowError(rowTooLongMessage(bytes, limit, 'this line'), location), location },
      ];
    }
    let text = utf8.decode(parts.length === 1 ? parts[0]! : Buffer.concat(parts, partBytes));
    parts = [];
    partBytes = 0;
    if (text.endsWith('\r')) text = text.slice(0, -1);
    const out: RawRow[] = [];
    for (let line of text.includes('\r') ? text.split('\r') : [text]) {
      lineNo++;
      if (lineNo === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
      if (line.trim() === '') continue;
      row++;
      out.push(parseLine(line, { file: displayName, line: lineNo, row }));
    }
    return out;
  };

  const take = (bytes: Buffer): void => {
    if (overLong) {
      partBytes += bytes.length;
      return;
    }
    partBytes += bytes.length;
    if (partBytes > limit) {
      // Too long: keep counting, stop keeping.
      overLong = true;
      parts = [];
      return;
    }
    parts.push(bytes);
  };

  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 16 })) {
    const buf = chunk as Buffer;
    let start = 0;
    let nl: number;
    while ((nl = buf.indexOf(10, start)) >= 0) {
      take(buf.subarray(start, nl));
      start = nl + 1;
      yield* finishLine();
    }
    // The chunk buffer is not reused by the stream, so a view is safe to keep.
    if (start < buf.length) take(buf.subarray(start));
  }
  if (partBytes > 0 || overLong) yield* finishLine();
}

/** One line's JSON value, or a row error saying where and why it is not one. */
function parseLine(line: string, location: { file: string; line: number; row: number }): RawRow {
  const deep = jsonNestingBeyond(line, MAX_ROW_JSON_DEPTH);
  if (deep !== null) {
    const at = { ...location, column: deep + 1 };
    return {
      error: new RowError(`JSON nested deeper than ${MAX_ROW_JSON_DEPTH} levels`, at),
      location: at,
    };
  }
  try {
    return { value: JSON.parse(line), location };
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    const problem = findJsonSyntaxProblem(line) ?? { offset: 0, message: err.message };
    const at = { ...location, column: problem.offset + 1 };
    return { error: new RowError(`malformed JSON: ${problem.message}`, at), location: at };
  }
}
