import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { RowError } from './errors.js';
import { findJsonSyntaxProblem } from './json-locate.js';
import type { RawRow } from './rows.js';

/**
 * JSON Lines, streamed line by line: one JSON value per line, blank lines ignored. A line that
 * does not parse becomes a row error naming its line and column.
 */
export async function* readJsonLines(file: string, displayName = file): AsyncGenerator<RawRow> {
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let lineNo = 0;
  let row = 0;
  for await (let line of lines) {
    lineNo++;
    if (lineNo === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
    if (line.trim() === '') continue;
    row++;
    try {
      yield { value: JSON.parse(line), location: { file: displayName, line: lineNo, row } };
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      const problem = findJsonSyntaxProblem(line) ?? { offset: 0, message: err.message };
      const location = { file: displayName, line: lineNo, column: problem.offset + 1, row };
      yield { error: new RowError(`malformed JSON: ${problem.message}`, location), location };
    }
  }
}
