import { fs } from '../io/host.js';
import { RowError } from './errors.js';
import { DEFAULT_MAX_ROW_BYTES, rowTooLongMessage, utf8Length } from './limits.js';
import type { RawRow } from './rows.js';

/** How a plain-text file becomes documents. */
export interface TextReadOptions {
  /** Split the file into documents at each occurrence of this string (e.g. "\n\n"); absent: the file is one document. */
  readonly separator?: string;
  /**
   * A whole-file document is handed on in pieces of about this many characters (default 4096),
   * cut after a line break, so a large file is never held as one string (and tokenizers, some of
   * which slow down on very long inputs, see short ones). Pieces of one document share a `document`
   * number and only the last has `last: true`; the text format joins their tokens back together.
   */
  readonly pieceChars?: number;
  /**
   * With a separator: longest document in UTF-8 bytes (default 1 MiB); a longer one is a row error
   * and is not held in memory. (Without one the file is a single document read in pieces.)
   */
  readonly maxRowBytes?: number;
}

/**
 * Marks a row as a piece of a text document: {document, last}. A symbol, so it cannot collide
 * with a user's own field names.
 */
export const TEXT_PIECE = Symbol('textPiece');

/** A row from a text file. */
export interface TextRowValue {
  readonly text: string;
  readonly [TEXT_PIECE]: { readonly document: number; readonly last: boolean };
}

/** Streams a plain-text file as {text} rows, one per document (or piece of a document). */
export async function* readText(
  file: string,
  options: TextReadOptions = {},
  displayName = file,
): AsyncGenerator<RawRow> {
  const separator = options.separator && options.separator.length > 0 ? options.separator : null;
  const pieceChars = options.pieceChars ?? 4096;
  const maxRowBytes = options.maxRowBytes ?? DEFAULT_MAX_ROW_BYTES;
  let buffer = '';
  /** With a separator: bytes of an over-long document dropped so far (its text is not kept), else 0. */
  let droppedBytes = 0;
  let droppedLine = 1;
  let bufferLine = 1; // line on which `buffer` starts
  let document = 0;
  let row = 0;
  let first = true;
  const make = (text: string, last: boolean): RawRow => {
    row++;
    const value: TextRowValue = { text, [TEXT_PIECE]: { document, last } };
    return { value, location: { file: displayName, line: bufferLine, row } };
  };
  const tooLong = (bytes: number): RawRow => {
    row++;
    const location = { file: displayName, line: droppedLine, row };
    return {
      error: new RowError(rowTooLongMessage(bytes, maxRowBytes, 'this document'), location),
      location,
    };
  };
  const advance = (consumed: string) => {
    for (let i = 0; i < consumed.length; i++) if (consumed.charCodeAt(i) === 10) bufferLine++;
  };

  for await (let chunk of fs.createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 16 })) {
    if (first && (chunk as string).charCodeAt(0) === 0xfeff) chunk = (chunk as string).slice(1);
    first = false;
    buffer += chunk as string;
    if (separator) {
      let at: number;
      while ((at = buffer.indexOf(separator)) >= 0) {
        const text = buffer.slice(0, at);
        if (droppedBytes === 0 && text.length > maxRowBytes / 4 && utf8Length(text) > maxRowBytes)
          droppedLine = bufferLine;
        if (droppedBytes > 0 || (text.length > maxRowBytes / 4 && utf8Length(text) > maxRowBytes)) {
          yield tooLong(droppedBytes + utf8Length(text));
          droppedBytes = 0;
        } else if (text.trim() !== '') {
          yield make(text, true);
          document++;
        }
        advance(buffer.slice(0, at + separator.length));
        buffer = buffer.slice(at + separator.length);
      }
      // A document with no separator in sight: past the row limit, stop keeping its text (keep a
      // separator's length of tail, which may hold the start of the separator).
      if (
        buffer.length > maxRowBytes / 4 &&
        (droppedBytes > 0 || utf8Length(buffer) > maxRowBytes)
      ) {
        if (droppedBytes === 0) droppedLine = bufferLine;
        const keep = separator.length - 1;
        const drop = buffer.slice(0, buffer.length - keep);
        droppedBytes += utf8Length(drop);
        advance(drop);
        buffer = buffer.slice(buffer.length - keep);
      }
    } else {
      while (buffer.length >= pieceChars) {
        // Cut after the last line break within the first pieceChars characters (or, failing that,
        // the first after; with none in sight, after the last space, else anywhere but inside a
        // surrogate pair), so a file without line breaks still streams in pieces.
        let cut = buffer.lastIndexOf('\n', pieceChars - 1);
        if (cut < 0) cut = buffer.indexOf('\n', pieceChars);
        if (cut < 0 && buffer.length < 4 * pieceChars) break; // the break may be in the next chunk
        if (cut < 0 || cut >= 4 * pieceChars) {
          cut = buffer.lastIndexOf(' ', pieceChars - 1);
          if (cut < pieceChars / 2) {
            cut = pieceChars - 1;
            const c = buffer.charCodeAt(cut);
            if (c >= 0xd800 && c <= 0xdbff) cut--;
          }
        }
        const text = buffer.slice(0, cut + 1);
        yield make(text, false);
        advance(text);
        buffer = buffer.slice(cut + 1);
      }
    }
  }
  if (separator) {
    if (droppedBytes > 0) yield tooLong(droppedBytes + utf8Length(buffer));
    else if (buffer.trim() !== '') yield make(buffer, true);
  } else if (buffer.length > 0 || row > 0) {
    yield make(buffer, true);
  }
}
