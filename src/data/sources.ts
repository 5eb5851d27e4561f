import { fs, path as paths } from '../io/host.js';
import { DatasetError } from './errors.js';
import { readDelimited } from './read-csv.js';
import { readJsonArray } from './read-json-array.js';
import { readJsonLines, type RowReadOptions } from './read-jsonl.js';
import { readParquet } from './read-parquet.js';
import { hfDataFiles, isDataFile, VALIDATION_SPLITS } from './hf-data-files.js';
import { TEXT_PIECE, readText, type TextReadOptions, type TextRowValue } from './read-text.js';
import type { RawRow } from './rows.js';

export type FileKind = 'jsonl' | 'json' | 'csv' | 'tsv' | 'text' | 'parquet';
export type SplitName = 'train' | 'valid' | 'test';

/**
 * Rows given in memory instead of a file (the library's `train({ data: rows })`): one list, held out
 * for validation as a single file is, or a list per split. A string row is a plain text document.
 */
export type DatasetRows =
  | readonly unknown[]
  | {
      readonly train: readonly unknown[];
      readonly valid?: readonly unknown[];
      readonly test?: readonly unknown[];
    };

/** One or more files (or in-memory row lists, named by `path` in messages) that together make one split. */
export interface SplitFiles {
  readonly files: readonly (
    | { readonly path: string; readonly kind: FileKind }
    | { readonly path: string; readonly kind: 'rows'; readonly rows: readonly unknown[] }
  )[];
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
  '.parquet': 'parquet',
};

const SPLIT_STEMS: Record<SplitName, readonly string[]> = {
  train: ['train'],
  valid: ['valid', 'validation', 'val', 'dev'],
  test: ['test'],
};

export function fileKindOf(path: string): FileKind | null {
  return KIND_BY_EXTENSION[paths.extname(path).toLowerCase()] ?? null;
}

export interface SourceOptions {
  /**
   * The split to train on, by the name a Hugging Face dataset folder gives it (e.g. `train_sft`);
   * default `train`. Only for folders.
   */
  readonly split?: string;
}

/**
 * Resolves a dataset path: a single file (train split only), or an MLX-style directory holding
 * train.* and optionally valid.* (also validation/val/dev) and test.*, or a Hugging Face dataset
 * folder (a Hub snapshot or clone: splits from its README's `configs:` or file names, each split
 * one or more files, parquet included; `hf-data-files.ts`); a directory with no train.* but only
 * text files is a folder of documents, one per file.
 */
export async function resolveSources(
  path: string | DatasetRows,
  options: SourceOptions = {},
): Promise<ResolvedSources> {
  if (typeof path !== 'string') return rowSources(path);
  let info;
  try {
    info = await fs.promises.stat(path);
  } catch {
    throw new DatasetError(`no such file or directory`, { file: path });
  }
  if (info.isFile()) {
    if (options.split !== undefined)
      throw new DatasetError(
        `--split ${options.split} needs a dataset folder or a Hub dataset, not a file`,
        {
          file: path,
        },
      );
    return { train: { files: [{ path, kind: requireKind(path) }] } };
  }
  if (!info.isDirectory())
    throw new DatasetError('not a regular file or directory', { file: path });
  if (options.split !== undefined) return await hfSources(path, options.split);

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
  const hf = await hfSources(path, 'train', true);
  if (hf) return hf;

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

/** Data files under a folder (relative, `/`-separated), at most this deep and this many. */
const MAX_WALK_DEPTH = 6;
const MAX_WALK_FILES = 100_000;

async function walk(root: string): Promise<string[]> {
  const out: string[] = [];
  const visit = async (rel: string, depth: number): Promise<void> => {
    const dir = rel === '' ? root : paths.join(root, rel);
    for (const entry of (await fs.promises.readdir(dir, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    )) {
      if (entry.name.startsWith('.')) continue;
      const child = rel === '' ? entry.name : `${rel}/${entry.name}`;
      // Hub snapshots hold symlinks to blobs: follow them to what they are.
      const st = entry.isSymbolicLink()
        ? await fs.promises.stat(paths.join(root, child)).catch(() => null)
        : entry;
      if (!st) continue;
      if (st.isDirectory()) {
        if (depth < MAX_WALK_DEPTH) await visit(child, depth + 1);
      } else if (st.isFile() && (isDataFile(child) || child === 'README.md')) {
        out.push(child);
        if (out.length > MAX_WALK_FILES)
          throw new DatasetError(
            `more than ${MAX_WALK_FILES} files; name one split's folder or file`,
            {
              file: root,
            },
          );
      }
    }
  };
  await visit('', 0);
  return out;
}

/** A Hugging Face dataset folder's splits (`hf-data-files.ts`): `trainSplit` → train, validation → valid, test → test. */
async function hfSources(
  root: string,
  trainSplit: string,
  optional: true,
): Promise<ResolvedSources | null>;
async function hfSources(root: string, trainSplit: string): Promise<ResolvedSources>;
async function hfSources(
  root: string,
  trainSplit: string,
  optional = false,
): Promise<ResolvedSources | null> {
  const files = await walk(root);
  const readme = files.includes('README.md')
    ? await fs.promises.readFile(paths.join(root, 'README.md'), 'utf8')
    : null;
  // Unnamed files are all train only in what is clearly a dataset repository: one with a dataset
  // card, or a snapshot in the Hugging Face cache (datasets--org--name/snapshots/<commit>).
  const repository =
    readme !== null || /datasets--[^/\\]+[/\\]snapshots[/\\][0-9a-f]{40}[/\\]?$/.test(root);
  const splits = hfDataFiles(
    files.filter((f) => f !== 'README.md'),
    readme,
    repository,
  );
  const of = (name: string | undefined): SplitFiles | undefined => {
    const rel = name === undefined ? undefined : splits.get(name);
    return rel
      ? {
          files: rel.map((r) => ({
            path: paths.join(root, ...r.split('/')),
            kind: requireKind(r),
          })),
        }
      : undefined;
  };
  const train = of(trainSplit);
  if (!train) {
    if (optional) return null;
    throw new DatasetError(
      `no '${trainSplit}' split (it has: ${splits.size > 0 ? [...splits.keys()].join(', ') : 'no data files'})`,
      { file: root },
    );
  }
  const validName = VALIDATION_SPLITS.find((n) => n !== trainSplit && splits.has(n));
  const valid = of(validName);
  const test = trainSplit === 'test' ? undefined : of('test');
  return { train, ...(valid ? { valid } : {}), ...(test ? { test } : {}) };
}

function requireKind(path: string): FileKind {
  const kind = fileKindOf(path);
  if (!kind) {
    throw new DatasetError(
      `unsupported file type '${paths.extname(path) || '(none)'}': use .jsonl, .json, .csv, .tsv, .txt or .parquet`,
      { file: path },
    );
  }
  return kind;
}

function rowSources(data: DatasetRows): ResolvedSources {
  const split = (name: string, rows: readonly unknown[] | undefined): SplitFiles | undefined => {
    if (rows === undefined) return undefined;
    if (!Array.isArray(rows)) throw new DatasetError(`${name} must be an array of rows`);
    return { files: [{ path: name, kind: 'rows', rows }] };
  };
  if (Array.isArray(data)) return { train: split('rows', data)! };
  const d = data as Exclude<DatasetRows, readonly unknown[]>;
  const unknown = Object.keys(d).filter((k) => k !== 'train' && k !== 'valid' && k !== 'test');
  if (unknown.length > 0 || d.train === undefined)
    throw new DatasetError(
      `in-memory data is an array of rows or { train, valid?, test? }${unknown.length > 0 ? ` (got '${unknown.join("', '")}')` : ''}`,
    );
  const valid = split('rows.valid', d.valid);
  const test = split('rows.test', d.test);
  return {
    train: split('rows.train', d.train)!,
    ...(valid ? { valid } : {}),
    ...(test ? { test } : {}),
  };
}

/** Reads every row of a split's files in order. */
export async function* readSplit(
  split: SplitFiles,
  text: TextReadOptions = {},
  rows: RowReadOptions = {},
): AsyncGenerator<RawRow> {
  let documentBase = 0;
  for (const entry of split.files) {
    const { path, kind } = entry;
    switch (kind) {
      case 'rows':
        for (let i = 0; i < entry.rows.length; i++) {
          const value = entry.rows[i];
          yield {
            value: typeof value === 'string' ? { text: value } : value,
            location: { file: path, row: i + 1 },
          };
        }
        break;
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
      case 'parquet':
        yield* readParquet(path, path, rows);
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
