import { parquetMetadataAsync, parquetReadObjects, type AsyncBuffer } from 'hyparquet';
import { fs } from '../io/host.js';
import { DatasetError, RowError } from './errors.js';
import { DEFAULT_MAX_ROW_BYTES, rowTooLongMessage } from './limits.js';
import type { RowReadOptions } from './read-jsonl.js';
import type { RawRow } from './rows.js';

/**
 * The most one row group may take once decoded. A parquet file declares its row groups' sizes in
 * the footer; a hostile or mistaken one must be refused before hyparquet allocates for it. Hub
 * datasets (push_to_hub, the parquet converter) write row groups of a few hundred MB at most.
 */
export const MAX_PARQUET_ROW_GROUP_BYTES = 1 << 30;

/** Positional reads of an open file, as hyparquet asks for them (footer first, then column chunks). */
function fileBuffer(fd: number, byteLength: number): AsyncBuffer {
  return {
    byteLength,
    slice(start: number, end = byteLength): ArrayBuffer {
      const length = Math.max(0, Math.min(end, byteLength) - start);
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = fs.readSync(fd, out, done, length - done, start + done);
        if (n === 0) break;
        done += n;
      }
      return out.buffer;
    },
  };
}

/** Parquet values as JSON-able row values: BigInt counts become numbers, bytes become text. */
function plain(value: unknown): unknown {
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) o[k] = plain(v);
    return o;
  }
  return value;
}

/**
 * Rows of a parquet file (the Hugging Face Hub's format for datasets), one row group at a time, as
 * objects of column → value (nested lists and structs, e.g. chat `messages`, as arrays and
 * objects). A row longer than the row limit, measured as JSON, is a row error like an over-long
 * JSONL line (docs/formats.md §9.3).
 */
export async function* readParquet(
  file: string,
  displayName = file,
  options: RowReadOptions = {},
): AsyncGenerator<RawRow> {
  const limit = options.maxRowBytes ?? DEFAULT_MAX_ROW_BYTES;
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const buffer = fileBuffer(fd, size);
    let metadata;
    try {
      metadata = await parquetMetadataAsync(buffer);
    } catch (e) {
      throw new DatasetError(`not a readable parquet file: ${(e as Error).message}`, {
        file: displayName,
      });
    }
    let row = 0;
    let first = 0;
    for (const [g, group] of metadata.row_groups.entries()) {
      const rows = Number(group.num_rows);
      const bytes = Number(group.total_byte_size);
      if (!Number.isSafeInteger(rows) || rows < 0 || !(bytes <= MAX_PARQUET_ROW_GROUP_BYTES)) {
        throw new DatasetError(
          `row group ${g} declares ${rows} rows in ${bytes} bytes, beyond the ${MAX_PARQUET_ROW_GROUP_BYTES} bytes one row group may take`,
          { file: displayName },
        );
      }
      let objects: Record<string, unknown>[];
      try {
        objects = await parquetReadObjects({
          file: buffer,
          metadata,
          rowStart: first,
          rowEnd: first + rows,
        });
      } catch (e) {
        throw new DatasetError(`row group ${g}: ${(e as Error).message}`, { file: displayName });
      }
      first += rows;
      for (const object of objects) {
        row++;
        const location = { file: displayName, row };
        const value = plain(object);
        const length = Buffer.byteLength(JSON.stringify(value));
        if (length > limit) {
          yield {
            error: new RowError(rowTooLongMessage(length, limit, 'this row'), location),
            location,
          };
        } else {
          yield { value, location };
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}
