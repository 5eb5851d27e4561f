import { fs } from '../io/host.js';
import { DatasetError, RowError, type SourceLocation } from './errors.js';
import { DEFAULT_MAX_ROW_BYTES, rowTooLongMessage } from './limits.js';
import type { RowReadOptions } from './read-jsonl.js';
import type { RawRow } from './rows.js';

/**
 * CSV / TSV after RFC 4180, streamed: a header row names the columns; fields may be quoted, with
 * doubled quotes for a literal quote and embedded delimiters and newlines (\n, \r\n or \r, all read as \n) inside
 * quotes. Each record becomes {column: string}. Blank lines are skipped. A record with the wrong
 * number of fields, or text after a closing quote, is a row error; an unterminated quote at the end
 * of the file stops loading, naming the line where the quoted field began.
 */
export async function* readDelimited(
  file: string,
  delimiter: ',' | '\t',
  displayName = file,
  options: RowReadOptions = {},
): AsyncGenerator<RawRow> {
  const parser = new DelimitedParser(
    delimiter.charCodeAt(0),
    options.maxRowBytes ?? DEFAULT_MAX_ROW_BYTES,
  );
  let header: string[] | null = null;
  let row = 0;
  const emit = function* (record: ParsedRecord): Generator<RawRow> {
    const location: SourceLocation = {
      file: displayName,
      line: record.line,
      ...(header ? { row: ++row } : {}),
    };
    if (header === null) {
      if (record.problem)
        throw new DatasetError(`the header row: ${record.problem.message}`, location);
      header = record.fields.map((f, i) => (i === 0 ? f.replace(/^\uFEFF/, '') : f).trim());
      const seen = new Set<string>();
      for (const name of header) {
        if (name === '')
          throw new DatasetError('the header row has an empty column name', location);
        if (seen.has(name))
          throw new DatasetError(`the header row names column '${name}' twice`, location);
        seen.add(name);
      }
      return;
    }
    if (record.problem) {
      yield {
        error: new RowError(record.problem.message, {
          ...location,
          line: record.problem.line,
          column: record.problem.column,
        }),
        location,
      };
      return;
    }
    if (record.fields.length !== header.length) {
      const message = `has ${record.fields.length} field(s) but the header has ${header.length} (${header.join(', ')})`;
      yield { error: new RowError(message, location), location };
      return;
    }
    const value: Record<string, string> = {};
    header.forEach((name, i) => (value[name] = record.fields[i]!));
    yield { value, location };
  };

  for await (const chunk of fs.createReadStream(file, {
    encoding: 'utf8',
    highWaterMark: 1 << 16,
  })) {
    for (const record of parser.push(chunk as string)) yield* emit(record);
  }
  for (const record of parser.end()) yield* emit(record);
  if (header === null)
    throw new DatasetError('the file is empty (no header row)', { file: displayName });
  const unterminated = parser.unterminatedQuoteLine;
  if (unterminated !== null) {
    throw new DatasetError("a quoted field is never closed (missing '\"')", {
      file: displayName,
      line: unterminated,
    });
  }
}

interface ParsedRecord {
  fields: string[];
  /** Line on which the record starts. */
  line: number;
  problem?: { message: string; line: number; column: number };
}

const QUOTE = 0x22;
const CR = 0x0d;
const LF = 0x0a;

/** Incremental RFC 4180 record parser: push chunks, get back completed records. */
class DelimitedParser {
  private fields: string[] = [];
  private field = '';
  private state: 'fieldStart' | 'unquoted' | 'quoted' | 'quoteInQuoted' = 'fieldStart';
  private line = 1;
  private column = 0;
  private recordLine = 1;
  private quoteLine = 1;
  private lastWasCR = false;
  private problem: ParsedRecord['problem'] | undefined;
  /** UTF-8 bytes of the record so far; past the limit its text is dropped and it becomes a row error. */
  private recordBytes = 0;
  private overLong = false;
  unterminatedQuoteLine: number | null = null;

  constructor(
    private readonly delimiter: number,
    private readonly maxRecordBytes: number,
  ) {}

  /** Counts a character into the record; false once the record is over the limit (its text is no longer kept). */
  private keep(c: number): boolean {
    this.recordBytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xdc00 && c <= 0xdfff ? 1 : 3;
    if (this.overLong) return false;
    if (this.recordBytes > this.maxRecordBytes) {
      this.overLong = true;
      this.fields = [];
      this.field = '';
      return false;
    }
    return true;
  }

  *push(chunk: string): Generator<ParsedRecord> {
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      // A \n right after a \r is the second half of one line break.
      if (c === LF && this.lastWasCR) {
        this.lastWasCR = false;
        continue;
      }
      this.lastWasCR = c === CR;
      const isBreak = c === LF || c === CR;
      this.column++;
      switch (this.state) {
        case 'quoted':
          if (c === QUOTE) this.state = 'quoteInQuoted';
          else if (this.keep(c)) this.field += isBreak ? '\n' : chunk[i];
          break;
        case 'quoteInQuoted':
          if (c === QUOTE) {
            if (this.keep(c)) this.field += '"';
            this.state = 'quoted';
          } else if (c === this.delimiter) this.endField();
          else if (isBreak) {
            const record = this.endRecord();
            if (record) yield record;
          } else {
            this.problem ??= {
              message: `unexpected text after a closing quote`,
              line: this.line,
              column: this.column,
            };
            if (this.keep(c)) this.field += chunk[i];
            this.state = 'unquoted';
          }
          break;
        case 'fieldStart':
        case 'unquoted':
          if (c === this.delimiter) this.endField();
          else if (isBreak) {
            const record = this.endRecord();
            if (record) yield record;
          } else if (c === QUOTE && this.state === 'fieldStart') {
            this.state = 'quoted';
            this.quoteLine = this.line;
          } else {
            if (this.keep(c)) this.field += chunk[i];
            this.state = 'unquoted';
          }
          break;
      }
      if (isBreak) {
        this.line++;
        this.column = 0;
      }
    }
  }

  *end(): Generator<ParsedRecord> {
    if (this.state === 'quoted') {
      this.unterminatedQuoteLine = this.quoteLine;
      return;
    }
    const record = this.endRecord();
    if (record) yield record;
  }

  private endField(): void {
    this.keep(0x2c);
    if (this.overLong) {
      this.field = '';
      this.state = 'fieldStart';
      return;
    }
    this.fields.push(this.field);
    this.field = '';
    this.state = 'fieldStart';
  }

  private endRecord(): ParsedRecord | null {
    const blank =
      this.fields.length === 0 &&
      this.field === '' &&
      this.state === 'fieldStart' &&
      !this.overLong;
    this.endField();
    if (this.overLong) {
      this.problem = {
        message: rowTooLongMessage(this.recordBytes, this.maxRecordBytes, 'this record'),
        line: this.recordLine,
        column: 1,
      };
      this.fields = [];
    }
    this.overLong = false;
    this.recordBytes = 0;
    const record: ParsedRecord = {
      fields: this.fields,
      line: this.recordLine,
      ...(this.problem ? { problem: this.problem } : {}),
    };
    this.fields = [];
    this.problem = undefined;
    this.recordLine = this.line + 1;
    return blank ? null : record;
  }
}
