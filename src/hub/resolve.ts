/**
 * `org/name[@revision]` → a local path: the snapshot folder (or one GGUF file in it) of the
 * Hugging Face cache. The cache comes first: a snapshot that already holds what the command needs
 * is used without a request (so Python's downloads count, and HF_HUB_OFFLINE=1 works). Otherwise
 * the Hub is asked for the revision's commit and file listing, and only the files needed are
 * fetched (download.ts); the snapshot's links are made once every file is in, so a snapshot never
 * looks complete when it is not.
 */
import fs from 'node:fs';
import path from 'node:path';
import { globToRegExp, hfDataFiles, VALIDATION_SPLITS } from '../data/hf-data-files.js';
import {
  cachedSnapshot,
  linkIntoSnapshot,
  repoFolder,
  snapshotFile,
  snapshotFiles,
  writeRef,
} from './cache.js';
import { fetchBlob, type HubFile } from './download.js';
import { hubEnv, type HubEnv } from './env.js';
import { hubError } from './errors.js';
import type { HubRepoRef } from './repo-id.js';

/** Files beside the weights that loading, tokenizing and generating read (those the repository has). */
export const MODEL_SIDE_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'chat_template.jinja',
] as const;

const INDEX = 'model.safetensors.index.json';
const MAX_LISTING = 100_000;

export interface HubProgress {
  readonly repo: string;
  readonly file: string;
  readonly done: number;
  readonly total: number;
}

export interface ResolveOptions {
  readonly env?: HubEnv;
  /**
   * What of an HF model folder is needed: everything (default), only config.json (what `qlora plan`
   * reads), or the config and tokenizer files (what `qlora data inspect` reads).
   */
  readonly parts?: 'all' | 'config' | 'tokenizer';
  /** Pick one GGUF file of the repository by a glob (`*Q4_K_M.gguf`) or a part of its name (`Q4_K_M`). */
  readonly ggufFile?: string;
  /** The split to train on (datasets): its files are fetched with the validation and test splits. */
  readonly split?: string;
  readonly onProgress?: (p: HubProgress) => void;
}

export interface ResolvedRepo {
  /** The snapshot folder, or the GGUF file in it. */
  readonly path: string;
  readonly commit: string;
  /** True when nothing was asked of the Hub. */
  readonly fromCache: boolean;
}

function ggufMatcher(pattern: string): (file: string) => boolean {
  if (/[*?[]/.test(pattern)) {
    const re = new RegExp(globToRegExp(pattern).source, 'i');
    return (f) => re.test(f) || re.test(f.split('/').pop()!);
  }
  const needle = pattern.toLowerCase();
  return (f) => f.split('/').pop()!.toLowerCase().includes(needle);
}

function pickGguf(files: readonly string[], pattern: string, where: string): string {
  const ggufs = files.filter((f) => f.toLowerCase().endsWith('.gguf'));
  const matches = ggufs.filter(ggufMatcher(pattern));
  if (matches.length === 1) return matches[0]!;
  const list = (xs: readonly string[]) =>
    xs.length > 12 ? `${xs.slice(0, 12).join(', ')}, … (${xs.length})` : xs.join(', ');
  if (matches.length === 0)
    throw new Error(
      `--gguf-file ${pattern}: no GGUF file of ${where} matches${ggufs.length ? `; it has: ${list(ggufs)}` : ' (it has no GGUF files)'}`,
    );
  throw new Error(
    `--gguf-file ${pattern} matches ${matches.length} files of ${where} (${list(matches)}); make it match one`,
  );
}

/** Shard names an index lists (top-level *.safetensors only: the names become paths). */
function shardsOf(indexText: string, where: string): string[] {
  let map: unknown;
  try {
    map = (JSON.parse(indexText) as { weight_map?: unknown }).weight_map;
  } catch (e) {
    throw new Error(`${where}: ${INDEX} is not JSON (${(e as Error).message})`);
  }
  if (map === null || typeof map !== 'object')
    throw new Error(`${where}: ${INDEX} has no weight_map`);
  const shards = [...new Set(Object.values(map as Record<string, unknown>))];
  for (const s of shards) {
    if (typeof s !== 'string' || !/^[\w.-]+\.safetensors$/.test(s))
      throw new Error(
        `${where}: ${INDEX} names an unusable shard ${JSON.stringify(s).slice(0, 100)}`,
      );
  }
  return (shards as string[]).sort();
}

/** What of a model the snapshot already holds: the path to use, or null when something is missing. */
function modelInSnapshot(dir: string, o: ResolveOptions): string | null {
  if (o.ggufFile !== undefined) {
    try {
      return snapshotFile(dir, pickGguf(snapshotFiles(dir), o.ggufFile, dir));
    } catch {
      return null;
    }
  }
  if (!fs.existsSync(path.join(dir, 'config.json'))) return null;
  if (o.parts === 'config') return dir;
  if (o.parts === 'tokenizer') return fs.existsSync(path.join(dir, 'tokenizer.json')) ? dir : null;
  if (fs.existsSync(path.join(dir, INDEX))) {
    try {
      const shards = shardsOf(fs.readFileSync(path.join(dir, INDEX), 'utf8'), dir);
      return shards.every((s) => fs.existsSync(path.join(dir, s))) ? dir : null;
    } catch {
      return null;
    }
  }
  return fs.existsSync(path.join(dir, 'model.safetensors')) ? dir : null;
}

/** The revision's commit and its files, from the Hub. */
async function listRepo(
  env: HubEnv,
  ref: HubRepoRef,
): Promise<{ commit: string; files: Map<string, HubFile> }> {
  const hub = await import('@huggingface/hub');
  const auth = env.token !== undefined ? { accessToken: env.token } : {};
  let commit: string | undefined;
  const files = new Map<string, HubFile>();
  try {
    const args = { name: ref.name, revision: ref.revision, hubUrl: env.endpoint, ...auth };
    const info =
      ref.type === 'model'
        ? await hub.modelInfo({ ...args, additionalFields: ['sha'] })
        : await hub.datasetInfo({ ...args, additionalFields: ['sha'] });
    commit = (info as { sha?: string }).sha;
    if (typeof commit !== 'string' || !/^[0-9a-f]{40}$/.test(commit))
      throw new Error(`the Hub gave no commit for revision ${ref.revision}`);
    for await (const e of hub.listFiles({
      repo: { type: ref.type, name: ref.name },
      recursive: true,
      revision: commit,
      hubUrl: env.endpoint,
      ...auth,
    })) {
      if (e.type !== 'file') continue;
      const etag = e.lfs?.oid ?? e.oid;
      if (etag === undefined) throw new Error(`the listing gives no hash for ${e.path}`);
      files.set(e.path, {
        path: e.path,
        size: e.lfs?.size ?? e.size,
        etag,
        lfs: e.lfs !== undefined,
      });
      if (files.size > MAX_LISTING)
        throw new Error(`more than ${MAX_LISTING} files; not a repository qlora can read`);
    }
  } catch (e) {
    // The Hub's refusals (statusCode) and network failures (fetch's TypeError) get the Hub's wording.
    if (e instanceof TypeError || (e instanceof Error && 'statusCode' in e))
      throw hubError(e, env, ref);
    throw new Error(`${ref.type} ${ref.name}: ${(e as Error).message}`);
  }
  return { commit, files };
}

/** Fetches `names` into blobs/, then links them all into the snapshot and records the ref. */
async function fetchAll(
  env: HubEnv,
  ref: HubRepoRef,
  folder: string,
  commit: string,
  files: readonly HubFile[],
  onProgress: ResolveOptions['onProgress'],
): Promise<string> {
  const total = files.reduce((a, f) => a + f.size, 0);
  let done = 0;
  const blobs: string[] = [];
  for (const f of files) {
    blobs.push(
      await fetchBlob(env, ref, commit, folder, f, (n) => {
        done += n;
        onProgress?.({ repo: ref.name, file: f.path, done, total });
      }),
    );
  }
  files.forEach((f, i) => linkIntoSnapshot(folder, commit, f.path, blobs[i]!));
  writeRef(folder, ref.revision, commit);
  return path.join(folder, 'snapshots', commit);
}

function offlineError(ref: HubRepoRef, folder: string, what: string): Error {
  return new Error(
    `${ref.name}${ref.revision !== 'main' ? `@${ref.revision}` : ''}: ${what} is not in the Hugging Face cache (${folder}) and HF_HUB_OFFLINE is set; download it once without HF_HUB_OFFLINE`,
  );
}

export async function resolveHubModel(
  ref: HubRepoRef,
  o: ResolveOptions = {},
): Promise<ResolvedRepo> {
  const env = o.env ?? hubEnv();
  const folder = repoFolder(env.cacheDir, ref);
  const snap = cachedSnapshot(folder, ref.revision);
  const cached = snap ? modelInSnapshot(snap.dir, o) : null;
  if (snap && cached) return { path: cached, commit: snap.commit, fromCache: true };
  if (env.offline)
    throw offlineError(
      ref,
      folder,
      o.ggufFile !== undefined ? `a GGUF file matching ${o.ggufFile}` : 'the model',
    );

  const { commit, files } = await listRepo(env, ref);
  const where = `${ref.name}@${commit.slice(0, 10)}`;
  const names = [...files.keys()];
  let wanted: string[];
  if (o.ggufFile !== undefined) {
    wanted = [pickGguf(names, o.ggufFile, ref.name)];
  } else if (!files.has('config.json')) {
    const ggufs = names.filter((n) => n.toLowerCase().endsWith('.gguf'));
    throw new Error(
      ggufs.length > 0
        ? `${ref.name} holds GGUF files, not an HF model folder: pick one with --gguf-file PATTERN (e.g. Q4_K_M); it has ${ggufs.slice(0, 12).join(', ')}`
        : `${ref.name} has no config.json: not a model qlora can load (it has ${names.slice(0, 12).join(', ') || 'no files'})`,
    );
  } else if (o.parts === 'config') {
    wanted = ['config.json'];
  } else {
    wanted = MODEL_SIDE_FILES.filter((n) => files.has(n));
    if (o.parts === 'tokenizer') {
      // the side files are all
    } else if (files.has(INDEX)) {
      // The index names the shards: fetch it first (small), then only those.
      const blob = await fetchBlob(env, ref, commit, folder, files.get(INDEX)!, () => {});
      const shards = shardsOf(fs.readFileSync(blob, 'utf8'), `${where}`);
      const missing = shards.filter((s) => !files.has(s));
      if (missing.length > 0)
        throw new Error(
          `${where}: ${INDEX} names shards the repository lacks: ${missing.join(', ')}`,
        );
      wanted.push(INDEX, ...shards);
    } else if (files.has('model.safetensors')) {
      wanted.push('model.safetensors');
    } else {
      throw new Error(
        `${ref.name} has no safetensors weights (model.safetensors or ${INDEX}); qlora reads safetensors, or one GGUF file with --gguf-file`,
      );
    }
  }
  const dir = await fetchAll(
    env,
    ref,
    folder,
    commit,
    wanted.map((n) => files.get(n)!),
    o.onProgress,
  );
  return {
    path: o.ggufFile !== undefined ? snapshotFile(dir, wanted[0]!) : dir,
    commit,
    fromCache: false,
  };
}

/** Splits a dataset snapshot holds, by the rules of hf-data-files.ts. */
function splitsIn(dir: string): Map<string, string[]> {
  const files = snapshotFiles(dir);
  const readme = files.includes('README.md')
    ? fs.readFileSync(path.join(dir, 'README.md'), 'utf8')
    : null;
  return hfDataFiles(
    files.filter((f) => f !== 'README.md'),
    readme,
  );
}

export async function resolveHubDataset(
  ref: HubRepoRef,
  o: ResolveOptions = {},
): Promise<ResolvedRepo> {
  const env = o.env ?? hubEnv();
  const split = o.split ?? 'train';
  const folder = repoFolder(env.cacheDir, ref);
  const snap = cachedSnapshot(folder, ref.revision);
  if (snap && splitsIn(snap.dir).has(split))
    return { path: snap.dir, commit: snap.commit, fromCache: true };
  if (env.offline) throw offlineError(ref, folder, `the dataset's '${split}' split`);

  const { commit, files } = await listRepo(env, ref);
  const readmeFile = files.get('README.md');
  let readme: string | null = null;
  if (readmeFile) {
    const blob = await fetchBlob(env, ref, commit, folder, readmeFile, () => {});
    readme = fs.readFileSync(blob, 'utf8');
  }
  const splits = hfDataFiles([...files.keys()], readme);
  if (!splits.has(split)) {
    throw new Error(
      splits.size > 0
        ? `dataset ${ref.name} has no '${split}' split (it has: ${[...splits.keys()].join(', ')}); choose one with --split`
        : `dataset ${ref.name} has no data files qlora reads (parquet, jsonl, json, csv, tsv, txt); it has ${[...files.keys()].slice(0, 12).join(', ') || 'no files'}`,
    );
  }
  const validation = VALIDATION_SPLITS.find((n) => n !== split && splits.has(n));
  const wanted = new Set<string>(readmeFile ? ['README.md'] : []);
  for (const s of [split, validation, split === 'test' ? undefined : 'test'])
    for (const f of (s !== undefined ? splits.get(s) : undefined) ?? []) wanted.add(f);
  const dir = await fetchAll(
    env,
    ref,
    folder,
    commit,
    [...wanted].map((n) => files.get(n)!),
    o.onProgress,
  );
  return { path: dir, commit, fromCache: false };
}

/** --gguf-file over a local folder: the one GGUF file in it that matches. */
export function pickLocalGguf(dir: string, pattern: string): string {
  return snapshotFile(dir, pickGguf(snapshotFiles(dir), pattern, dir));
}
