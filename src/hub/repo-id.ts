/** `org/name[@revision]`: telling a Hub repository id from a local path that does not exist. */

export type RepoType = 'model' | 'dataset';

export interface HubRepoRef {
  readonly type: RepoType;
  /** `org/name` */
  readonly name: string;
  /** A branch, tag or commit; `main` unless given. */
  readonly revision: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
const REVISION = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$/;
/** A "name" ending like a file is a mistyped path, not a repository. */
const FILE_LIKE =
  /\.(gguf|bin|safetensors|json|jsonl|ndjson|csv|tsv|txt|md|parquet|yaml|yml|model|pt|pth)$/i;

/** The parts of `org/name[@revision]`, or null when `spec` cannot be a Hub id. */
export function parseHubId(spec: string, type: RepoType): HubRepoRef | null {
  const at = spec.indexOf('@');
  const name = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? 'main' : spec.slice(at + 1);
  if (!NAME.test(name) || name.includes('..') || FILE_LIKE.test(name)) return null;
  if (!REVISION.test(revision) || revision.includes('..') || revision.endsWith('/')) return null;
  return { type, name, revision };
}

/** The repository's page, for messages (where to accept a gated model's terms). */
export function repoUrl(endpoint: string, ref: Pick<HubRepoRef, 'type' | 'name'>): string {
  return `${endpoint}/${ref.type === 'dataset' ? 'datasets/' : ''}${ref.name}`;
}
