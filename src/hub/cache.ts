/**
 * The Hugging Face cache layout, as Python's huggingface_hub writes it (and reads it back):
 *
 *   <cache>/models--org--name/refs/<revision>        the commit a branch or tag pointed at (text)
 *   <cache>/models--org--name/blobs/<etag>           file contents, named by the Hub's ETag
 *                                                    (sha256 for LFS files, the git blob sha1 else)
 *   <cache>/models--org--name/blobs/<etag>.incomplete  a download under way (resumed by range)
 *   <cache>/models--org--name/snapshots/<commit>/<path>  relative symlink → ../../blobs/<etag>
 *
 * Datasets live in `datasets--org--name`. Sharing the layout means a model downloaded with Python
 * is used here as it is, and the other way round (docs/formats.md §9.1).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { HubRepoRef } from './repo-id.js';

const COMMIT = /^[0-9a-f]{40}$/;

export function isCommitHash(s: string): boolean {
  return COMMIT.test(s);
}

/** `<cache>/models--org--name` */
export function repoFolder(cacheDir: string, ref: Pick<HubRepoRef, 'type' | 'name'>): string {
  return path.join(cacheDir, `${ref.type}s--${ref.name.split('/').join('--')}`);
}

/** The commit a revision stands for in the cache: itself when it is a commit, else refs/<revision>. */
export function cachedCommit(folder: string, revision: string): string | null {
  if (isCommitHash(revision)) return revision;
  try {
    const text = fs.readFileSync(path.join(folder, 'refs', ...revision.split('/')), 'utf8').trim();
    return isCommitHash(text) ? text : null;
  } catch {
    return null;
  }
}

/** The snapshot folder of a revision in the cache, when there is one. */
export function cachedSnapshot(
  folder: string,
  revision: string,
): { commit: string; dir: string } | null {
  const commit = cachedCommit(folder, revision);
  if (!commit) return null;
  const dir = path.join(folder, 'snapshots', commit);
  return fs.existsSync(dir) ? { commit, dir } : null;
}

/** Records which commit a branch or tag points at (refs/<revision>), written whole or not at all. */
export function writeRef(folder: string, revision: string, commit: string): void {
  if (isCommitHash(revision)) return;
  const file = path.join(folder, 'refs', ...revision.split('/'));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, commit);
  fs.renameSync(tmp, file);
}

/** blobs/<etag>, refusing an ETag that is not a plain file name (it comes from the server). */
export function blobPath(folder: string, etag: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(etag))
    throw new Error(`the Hub gave an unusable ETag '${etag.slice(0, 80)}'`);
  return path.join(folder, 'blobs', etag);
}

/** A repository path as a path inside a snapshot, refusing anything that would leave it. */
export function snapshotFile(snapshot: string, relPath: string): string {
  const parts = relPath.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\\')))
    throw new Error(`the Hub listed an unusable file path '${relPath.slice(0, 200)}'`);
  return path.join(snapshot, ...parts);
}

/**
 * snapshots/<commit>/<relPath> → the blob, as a relative symlink (as huggingface_hub makes it);
 * where symlinks cannot be made (Windows without developer mode) a copy, as huggingface_hub does.
 */
export function linkIntoSnapshot(
  folder: string,
  commit: string,
  relPath: string,
  blob: string,
): string {
  const pointer = snapshotFile(path.join(folder, 'snapshots', commit), relPath);
  fs.mkdirSync(path.dirname(pointer), { recursive: true });
  fs.rmSync(pointer, { force: true });
  try {
    fs.symlinkSync(path.relative(path.dirname(pointer), blob), pointer);
  } catch {
    fs.copyFileSync(blob, pointer);
  }
  return pointer;
}

/** Files (repository-relative, `/`) present in a snapshot folder, symlinks followed, hidden ones skipped. */
export function snapshotFiles(dir: string, maxDepth = 6): string[] {
  const out: string[] = [];
  const visit = (rel: string, depth: number) => {
    for (const name of fs.readdirSync(rel === '' ? dir : path.join(dir, rel)).sort()) {
      if (name.startsWith('.')) continue;
      const child = rel === '' ? name : `${rel}/${name}`;
      let st: fs.Stats;
      try {
        st = fs.statSync(path.join(dir, child));
      } catch {
        continue; // a dangling link: its blob was deleted
      }
      if (st.isDirectory()) {
        if (depth < maxDepth) visit(child, depth + 1);
      } else if (st.isFile()) out.push(child);
    }
  };
  visit('', 0);
  return out;
}
