import { fs, path as paths } from '../io/host.js';
import { DatasetError } from './errors.js';
import { readDelimited } from './read-csv.js';
import { readJsonArray } from './read-json-array.js';
import { readJsonLines, type RowReadOptions } from './read-jsonl.js';
import { TEXT_PIECE, readText, type TextReadOptions, type TextRowValue } from './read-text.js';
import type { RawRow } from './rows.js';

export type FileKind = 'jsonl' | 'json' | 'csv' | 'tsv' | 'text';
export type SplitName = 'train' | 'valid' | 'test';

/** One or more files that together make one split. */
export interface SplitFiles {
  readonly files: readonly { readonly path: string; readonly kind: FileKind }[];
}

export interface ResolvedSources {
  readonly train: SplitFiles;
  readonly valid?: SplitFiles;
  readonly test?: SplitFiles;
}

const KIND_BY_EXTENSION: Record<string, FileKind> = {
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.json': 'json',
  '.csv': 'csv',
  '.tsv': 'tsv',
  '.txt': 'text',
  '.text': 'text',
  '.md': 'text',
};

const SPLIT_STEMS: Record<SplitName, readonly string[]> = {
  train: ['train'],
  valid: ['valid', 'validation', 'val', 'dev'],
  test: ['test'],
};

export function fileKindOf(path: string): FileKind | null {
  return KIND_BY_EXTENSION[paths.extname(path).toLowerCase()] ?? null;
}

/**
 * Resolves a dataset path: a single file (train split only), or an MLX-style directory holding
 * train.* and optionally valid.* (also validation/val/dev) and test.*; a directory with no train.*
 * but only text files is a folder of documents, one per file.
 */
export async function resolveSources(path: string): Promise<ResolvedSources> {
  let info;
  try {
    info = await fs.promises.stat(path);
  } catch {
    throw new DatasetError(`no such file or directory`, { file: path });
  }
  if (info.isFile()) return { train: { files: [{ path, kind: requireKind(path) }] } };
  if (!info.isDirectory())
    throw new DatasetError('not a regular file or directory', { file: path });

  const names = (await fs.promises.readdir(path)).filter((n) => !n.startsWith('.')).sort();
  const find = (split: SplitName): SplitFiles | undefined => {
    const matches = names.filter((n) => {
      const stem = paths.basename(n, paths.extname(n)).toLowerCase();
      return SPLIT_STEMS[split].includes(stem) && fileKindOf(n) !== null;
    });
    if (matches.length > 1) {
      throw new DatasetError(`more than one ${split} file (${matches.join(', ')}); keep one`, {
        file: path,
      });
    }
    return matches.length === 1
      ? { files: [{ path: paths.join(path, matches[0]!), kind: fileKindOf(matches[0]!)! }] }
      : undefined;
  };
  const train = find('train');
  const valid = find('valid');
  const test = find('test');
  if (train) return { train, ...(valid ? { valid } : {}), ...(test ? { test } : {}) };

  const texts = names.filter((n) => fileKindOf(n) === 'text');
  if (texts.length > 0 && texts.length === names.filter((n) => fileKindOf(n) !== null).length) {
    return {
      train: { files: texts.map((n) => ({ path: paths.join(path, n), kind: 'text' as const })) },
    };
  }
  throw new DatasetError(
    `a dataset directory needs a train.* file (jsonl, json, csv, tsv or txt), optionally with valid.* and test.*; found: ${
      names.length > 0 ? names.join(', ') : 'nothing'
    }`,
    { file: path },
  );
}

function requireKind(path: string): FileKind {
  const kind = fileKindOf(path);
  if (!kind) {
    throw new DatasetError(
      `unsupported file type '${paths.extname(path) || '(none)'}': use .jsonl, .json, .csv, .tsv or .txt`,
      { file: path },
    );
  }
  return kind;
}

/** Reads every row of a split's files in order. */
export async function* readSplit(
  split: SplitFiles,
  text: TextReadOptions = {},
  rows: RowReadOptions = {},
): AsyncGenerator<RawRow> {
  let documentBase = 0;
  for (const { path, kind } of split.files) {
    switch (kind) {
      case 'jsonl':
        yield* readJsonLines(path, path, rows);
        break;
      case 'json':
        yield* readJsonArrayOrLines(path, rows);
        break;
      case 'csv':
        yield* readDelimited(path, ',', path, rows);
        break;
      case 'tsv':
        yield* readDelimited(path, '\t', path, rows);
        break;
      case 'text': {
        // Document numbers continue across files so each file stays its own document.
        let last = documentBase;
        for await (const row of readText(path, {
          ...(rows.maxRowBytes !== undefined ? { maxRowBytes: rows.maxRowBytes } : {}),
          ...text,
        })) {
          if (row.error) {
            yield row;
            continue;
          }
          const value = row.value as TextRowValue;
          last = documentBase + value[TEXT_PIECE].document;
          const renumbered: TextRowValue = {
            text: value.text,
            [TEXT_PIECE]: { ...value[TEXT_PIECE], document: last },
          };
          yield { value: renumbered, location: row.location };
        }
        documentBase = last + 1;
        break;
      }
    }
  }
}

/** `.json` files holding JSON Lines are common (the Hugging Face `json` loader accepts both). */
async function* readJsonArrayOrLines(path: string, rows: RowReadOptions): AsyncGenerator<RawRow> {
  const handle = await fs.promises.open(path, 'r');
  let head: string;
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    head = buf
      .subarray(0, bytesRead)
      .toString('utf8')
      .replace(/^\uFEFF/, '')
      .trimStart();
  } finally {
    await handle.close();
  }
  if (head.startsWith('[') || head === '') yield* readJsonArray(path, path, rows);
  else yield* readJsonLines(path, path, rows);
}
