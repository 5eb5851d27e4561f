/**
 * One file from the Hub into the cache's blobs/, through @huggingface/hub: the resolve URL is
 * probed (fileDownloadInfo: a 1-byte range request, following the Hub's redirect to its CDN), then
 * streamed (downloadFile's WebBlob) into blobs/<etag>.incomplete. A download that stops part-way
 * leaves that file behind, and the next run asks only for the missing bytes (a range request from
 * its length). The finished file is checked against the Hub's listing (size, and the sha256 of LFS
 * files or the git blob hash of others) before it is renamed into place, so a blob is never wrong.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { blobPath } from './cache.js';
import type { HubEnv } from './env.js';
import { hubError } from './errors.js';
import type { HubRepoRef } from './repo-id.js';

/** One file of a listing: its path, size, and the ETag the Hub names its contents by. */
export interface HubFile {
  readonly path: string;
  readonly size: number;
  /** sha256 of the contents for LFS files, the git blob sha1 otherwise. */
  readonly etag: string;
  readonly lfs: boolean;
}

export type OnBytes = (bytes: number) => void;

function alive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One downloader per blob: two runs fetching the same model would otherwise append to the same
 * .incomplete file. The lock is a file created exclusively, holding the owner's pid; a lock whose
 * owner is gone (killed mid-download) is taken over. It sits beside Python's own locks
 * (`<cache>/.locks/<repo>/`) under a name of its own, so neither tool mistakes the other's.
 */
async function withBlobLock<T>(folder: string, etag: string, body: () => Promise<T>): Promise<T> {
  const dir = path.join(path.dirname(folder), '.locks', path.basename(folder));
  fs.mkdirSync(dir, { recursive: true });
  const lock = path.join(dir, `${etag}.qlora-lock`);
  for (;;) {
    try {
      const fd = fs.openSync(lock, 'wx');
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = NaN;
      try {
        owner = Number(fs.readFileSync(lock, 'utf8'));
      } catch {
        continue; // released meanwhile
      }
      if (!alive(owner)) fs.rmSync(lock, { force: true });
      else await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    return await body();
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

async function hashOf(file: string, lfs: boolean, size: number): Promise<string> {
  const h = createHash(lfs ? 'sha256' : 'sha1');
  // A git blob hash covers a "blob <size>\0" header before the contents.
  if (!lfs) h.update(`blob ${size}\0`);
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk);
  return h.digest('hex');
}

/** Whether an ETag is a content hash we can check the bytes against. */
function checkable(f: HubFile): boolean {
  return f.lfs ? /^[0-9a-f]{64}$/.test(f.etag) : /^[0-9a-f]{40}$/.test(f.etag);
}

/**
 * Makes blobs/<etag> hold `file` of the repository at `commit`, downloading what is missing.
 * Returns the blob's path. `onBytes` hears of every byte that lands (and of the bytes already
 * there, at the start).
 */
export async function fetchBlob(
  env: HubEnv,
  ref: HubRepoRef,
  commit: string,
  folder: string,
  file: HubFile,
  onBytes: OnBytes,
): Promise<string> {
  const blob = blobPath(folder, file.etag);
  if (fs.existsSync(blob) && fs.statSync(blob).size === file.size) {
    onBytes(file.size);
    return blob;
  }
  return await withBlobLock(folder, file.etag, () =>
    fetchBlobLocked(env, ref, commit, file, onBytes, blob),
  );
}

async function fetchBlobLocked(
  env: HubEnv,
  ref: HubRepoRef,
  commit: string,
  file: HubFile,
  onBytes: OnBytes,
  blob: string,
): Promise<string> {
  // Another process may have finished it while this one waited for the lock.
  if (fs.existsSync(blob) && fs.statSync(blob).size === file.size) {
    onBytes(file.size);
    return blob;
  }
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  const incomplete = `${blob}.incomplete`;
  let have = 0;
  try {
    have = fs.statSync(incomplete).size;
  } catch {
    have = 0;
  }
  if (have > file.size) {
    fs.rmSync(incomplete, { force: true });
    have = 0;
  }
  onBytes(have);
  if (have < file.size) {
    const hub = await import('@huggingface/hub');
    const repo = { type: ref.type, name: ref.name } as const;
    const common = {
      repo,
      path: file.path,
      revision: commit,
      hubUrl: env.endpoint,
      ...(env.token !== undefined ? { accessToken: env.token } : {}),
    };
    let info;
    try {
      info = await hub.fileDownloadInfo(common);
    } catch (e) {
      throw hubError(e, env, ref, file.path);
    }
    if (!info) throw hubError({ statusCode: 404 }, env, ref, file.path);
    // Plain HTTP ranges (xet: false): the resume below needs them, and they work with any mirror.
    const web = await hub.downloadFile({ ...common, downloadInfo: info, xet: false });
    if (!web) throw hubError({ statusCode: 404 }, env, ref, file.path);
    const body = (have > 0 ? web.slice(have) : web).stream();
    const fd = fs.openSync(incomplete, 'a');
    try {
      const reader = body.getReader();
      for (;;) {
        let r: { done: boolean; value?: Uint8Array };
        try {
          r = await reader.read();
        } catch (e) {
          throw new Error(
            `download of ${ref.name}/${file.path} stopped at ${fs.fstatSync(fd).size} of ${file.size} bytes (${
              e instanceof Error ? e.message : String(e)
            }); run the command again to resume it`,
          );
        }
        if (r.done || !r.value) break;
        const chunk = r.value;
        let off = 0;
        while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off);
        onBytes(chunk.length);
        if (fs.fstatSync(fd).size > file.size) break;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  const got = fs.statSync(incomplete).size;
  if (
    got !== file.size ||
    (checkable(file) && (await hashOf(incomplete, file.lfs, got)) !== file.etag)
  ) {
    fs.rmSync(incomplete, { force: true });
    throw new Error(
      `download of ${ref.name}/${file.path} does not match the Hub's listing (${got} of ${file.size} bytes${
        got === file.size ? ', different contents' : ''
      }); the partial file was removed, run the command again`,
    );
  }
  fs.renameSync(incomplete, blob);
  return blob;
}
