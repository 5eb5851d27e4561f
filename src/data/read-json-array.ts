import { fs } from '../io/host.js';
import { jsonNestingBeyond } from '../io/json-scan.js';
import { DatasetError, RowError } from './errors.js';
import { findJsonSyntaxProblem, lineColumnOf } from './json-locate.js';
import {
  DEFAULT_MAX_ROW_BYTES,
  MAX_JSON_ARRAY_FILE_BYTES,
  MAX_ROW_JSON_DEPTH,
  describeBytes,
  rowTooLongMessage,
  utf8Length,
} from './limits.js';
import type { RowReadOptions } from './read-jsonl.js';
import type { RawRow } from './rows.js';

/**
 * A JSON file holding an array of rows. Unlike JSONL this is read and parsed whole (a JSON array
 * cannot be split safely without a streaming parser); convert large datasets to JSONL.
 * A syntax error stops loading with the file's line and column.
 */
export async function* readJsonArray(
  file: string,
  displayName = file,
  options: RowReadOptions = {},
): AsyncGenerator<RawRow> {
  const limit = options.maxRowBytes ?? DEFAULT_MAX_ROW_BYTES;
  const size = (await fs.promises.stat(file)).size;
  if (size > MAX_JSON_ARRAY_FILE_BYTES) {
    throw new DatasetError(
      `a JSON array file is read whole and this one is ${size} bytes, over the ${describeBytes(MAX_JSON_ARRAY_FILE_BYTES)} limit; convert it to JSON Lines (.jsonl, one row per line)`,
      { file: displayName },
    );
  }
  let text = await fs.promises.readFile(file, 'utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  // Rows sit one level below the array: allow the array itself on top of the row depth.
  const someRowTooDeep = jsonNestingBeyond(text, MAX_ROW_JSON_DEPTH + 1) !== null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    const problem = findJsonSyntaxProblem(text) ?? { offset: 0, message: err.message };
    throw new DatasetError(`malformed JSON: ${problem.message}`, {
      file: displayName,
      ...lineColumnOf(text, problem.offset),
    });
  }
  if (!Array.isArray(parsed)) {
    const kind =
      parsed === null ? 'null' : typeof parsed === 'object' ? 'an object' : typeof parsed;
    throw new DatasetError(`expected a JSON array of rows (or JSON Lines), found ${kind}`, {
      file: displayName,
      line: 1,
    });
  }
  const { lines, starts, chars } = elementExtents(text);
  for (let i = 0; i < parsed.length; i++) {
    const location = { file: displayName, row: i + 1, line: lines[i] };
    if (someRowTooDeep) {
      const start = starts[i] ?? 0;
      const deep = jsonNestingBeyond(
        text.slice(start, start + (chars[i] ?? 0)),
        MAX_ROW_JSON_DEPTH,
      );
      if (deep !== null) {
        yield {
          error: new RowError(`JSON nested deeper than ${MAX_ROW_JSON_DEPTH} levels`, location),
          location,
        };
        continue;
      }
    }
    // Elements are measured in characters; only a long one is measured in bytes.
    if ((chars[i] ?? 0) > limit / 4) {
      const value = parsed[i];
      const bytes = utf8Length(JSON.stringify(value) ?? '');
      if (bytes > limit) {
        yield {
          error: new RowError(rowTooLongMessage(bytes, limit, 'this array element'), location),
          location,
        };
        continue;
      }
    }
    yield { value: parsed[i], location };
  }
}

/**
 * 1-based line on which each top-level array element starts, and its length in characters (up to
 * the next element; text is known-valid JSON here).
 */
function elementExtents(text: string): { lines: number[]; starts: number[]; chars: number[] } {
  const lines: number[] = [];
  const starts: number[] = [];
  let line = 1;
  let depth = 0;
  let inString = false;
  let expectingElement = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 10) line++;
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
      continue;
    }
    const isSpace = c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
    if (expectingElement && !isSpace && c !== 0x5d) {
      lines.push(line);
      starts.push(i);
      expectingElement = false;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth === 1) expectingElement = true;
    } else if (c === 0x5d || c === 0x7d) depth--;
    else if (c === 0x2c && depth === 1) expectingElement = true;
  }
  const chars = starts.map((s, k) => (starts[k + 1] ?? text.length) - s);
  return { lines, starts, chars };
}
