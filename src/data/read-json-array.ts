import { readFile } from 'node:fs/promises';
import { DatasetError } from './errors.js';
import { findJsonSyntaxProblem, lineColumnOf } from './json-locate.js';
import type { RawRow } from './rows.js';

/**
 * A JSON file holding an array of rows. Unlike JSONL this is read and parsed whole (a JSON array
 * cannot be split safely without a streaming parser); convert large datasets to JSONL.
 * A syntax error stops loading with the file's line and column.
 */
export async function* readJsonArray(file: string, displayName = file): AsyncGenerator<RawRow> {
  let text = await readFile(file, 'utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    const problem = findJsonSyntaxProblem(text) ?? { offset: 0, message: err.message };
    throw new DatasetError(`malformed JSON: ${problem.message}`, { file: displayName, ...lineColumnOf(text, problem.offset) });
  }
  if (!Array.isArray(parsed)) {
    const kind = parsed === null ? 'null' : typeof parsed === 'object' ? 'an object' : typeof parsed;
    throw new DatasetError(`expected a JSON array of rows (or JSON Lines), found ${kind}`, { file: displayName, line: 1 });
  }
  const lines = elementStartLines(text);
  for (let i = 0; i < parsed.length; i++) {
    yield { value: parsed[i], location: { file: displayName, row: i + 1, line: lines[i] } };
  }
}

/** 1-based line on which each top-level array element starts (text is known-valid JSON here). */
function elementStartLines(text: string): number[] {
  const lines: number[] = [];
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
      expectingElement = false;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth === 1) expectingElement = true;
    } else if (c === 0x5d || c === 0x7d) depth--;
    else if (c === 0x2c && depth === 1) expectingElement = true;
  }
  return lines;
}
