/**
 * Which files of a Hugging Face dataset repository make which split, decided as the `datasets`
 * library decides it, so a repository reads here as it loads there:
 *
 * 1. the README's YAML `configs:` (the default config: `default: true`, else the one named
 *    `default`, else the first) with `data_files` as a path/glob, a list of them, or a list of
 *    `{split, path}`; this is what `push_to_hub` writes (`data/train-*`);
 * 2. else `data/<split>-00000-of-00001.<ext>` names, whatever the split is called;
 * 3. else split keywords in file or folder names (train/training, validation/valid/val/dev,
 *    test/testing/eval/evaluation) between separators (`-._ ` and digits);
 * 4. else every data file is the train split (unless `allTrain` is false: a local folder of
 *    unnamed files is more likely a mistake than a dataset repository).
 *
 * Pure: paths are repository-relative with `/`, the README is its text (docs/formats.md §9.2).
 */
import YAML from 'yaml';

/** File kinds the readers take (by extension, lower case). */
export const DATA_FILE_EXTENSIONS = [
  '.parquet',
  '.jsonl',
  '.ndjson',
  '.json',
  '.csv',
  '.tsv',
  '.txt',
] as const;

export function isDataFile(relPath: string): boolean {
  const lower = relPath.toLowerCase();
  return DATA_FILE_EXTENSIONS.some((e) => lower.endsWith(e));
}

const SPLIT_KEYWORDS: readonly (readonly [string, readonly string[]])[] = [
  ['train', ['train', 'training']],
  ['validation', ['validation', 'valid', 'dev', 'val']],
  ['test', ['test', 'testing', 'eval', 'evaluation']],
];

const SEP = '-._ 0-9';

/** A `datasets`-style glob (`*` within a folder, `**` across folders, `?`, `[...]`) as a RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        // `**/` matches zero or more folders; a trailing `**` anything.
        i++;
        if (glob[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${glob.slice(i + 1, end).replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The README's YAML front matter, or null. */
function frontMatter(readme: string): unknown {
  const m = /^---\r?\n([\s\S]*?)\r?\n---\s*(?:\r?\n|$)/.exec(readme.replace(/^\uFEFF/, ''));
  if (!m) return null;
  try {
    return YAML.parse(m[1]!);
  } catch {
    return null; // a README the Hub itself would flag; fall back to names
  }
}

type DataFilesSpec = string | string[] | { split?: string; path?: string | string[] }[];

function fromConfigs(files: readonly string[], readme: string): Map<string, string[]> | null {
  const meta = frontMatter(readme) as { configs?: unknown } | null;
  const configs = meta?.configs;
  if (!Array.isArray(configs) || configs.length === 0) return null;
  const list = configs as { config_name?: unknown; default?: unknown; data_files?: unknown }[];
  const chosen =
    list.find((c) => c.default === true) ??
    list.find((c) => c.config_name === 'default') ??
    list[0]!;
  const spec = chosen.data_files as DataFilesSpec | undefined;
  if (spec === undefined) return null;
  const entries: { split: string; patterns: string[] }[] =
    typeof spec === 'string'
      ? [{ split: 'train', patterns: [spec] }]
      : Array.isArray(spec) && spec.every((s) => typeof s === 'string')
        ? [{ split: 'train', patterns: spec as string[] }]
        : (spec as { split?: string; path?: string | string[] }[]).map((s) => ({
            split: typeof s?.split === 'string' ? s.split : 'train',
            patterns: typeof s?.path === 'string' ? [s.path] : Array.isArray(s?.path) ? s.path : [],
          }));
  const out = new Map<string, string[]>();
  for (const { split, patterns } of entries) {
    const res = patterns.map((p) => globToRegExp(p.replace(/^\.?\//, '')));
    const matched = files.filter((f) => res.some((r) => r.test(f)));
    if (matched.length > 0) out.set(split, [...(out.get(split) ?? []), ...matched]);
  }
  return out.size > 0 ? out : null;
}

/**
 * Split name → the repository-relative data files of that split, sorted, in the order the rules
 * above give; empty when there are no data files.
 */
export function hfDataFiles(
  paths: readonly string[],
  readme: string | null,
  allTrain = true,
): Map<string, string[]> {
  const files = paths
    .filter((p) => isDataFile(p) && !p.split('/').some((part) => part.startsWith('.')))
    .sort();
  const sorted = (m: Map<string, string[]>) => {
    for (const [k, v] of m) m.set(k, [...new Set(v)].sort());
    return m;
  };
  if (readme !== null) {
    const configured = fromConfigs(files, readme);
    if (configured) return sorted(configured);
  }
  const out = new Map<string, string[]>();
  for (const f of files) {
    const m = /^data\/(\w+?)-\d{5}-of-\d{5}[^/]*\.[^/]+$/.exec(f);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), f]);
  }
  if (out.size > 0) return sorted(out);
  for (const f of files) {
    const lower = f.toLowerCase();
    for (const [split, keywords] of SPLIT_KEYWORDS) {
      const hit = keywords.some((k) =>
        new RegExp(`(?:^|[${SEP}/])${k}(?:[${SEP}][^/]*$|/)`).test(lower),
      );
      if (hit) {
        out.set(split, [...(out.get(split) ?? []), f]);
        break;
      }
    }
  }
  if (out.size > 0) return sorted(out);
  return files.length > 0 && allTrain ? new Map([['train', files]]) : out;
}

/** The Hub's split names for our validation split, in the order they are looked for. */
export const VALIDATION_SPLITS = ['validation', 'valid', 'val', 'dev'] as const;
