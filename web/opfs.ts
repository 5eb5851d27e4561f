/**
 * Copies between the worker's memory file system and the Origin Private File System (the
 * browser's per-site storage that survives reloads), where the last checkpoint of a run is kept.
 */
import type { MemoryFs } from '../src/io/memory-fs.js';

export type OpfsDir = FileSystemDirectoryHandle;

export async function opfsRoot(): Promise<OpfsDir> {
  const storage = (
    globalThis as { navigator?: { storage?: { getDirectory?: () => Promise<OpfsDir> } } }
  ).navigator?.storage;
  if (!storage?.getDirectory) throw new Error('this browser has no Origin Private File System');
  return storage.getDirectory();
}

async function dirOf(root: OpfsDir, parts: string[], create: boolean): Promise<OpfsDir | null> {
  let d = root;
  for (const p of parts) {
    try {
      d = await d.getDirectoryHandle(p, { create });
    } catch {
      return null;
    }
  }
  return d;
}

function split(p: string): string[] {
  return p.split('/').filter(Boolean);
}

async function writeFile(root: OpfsDir, p: string, bytes: Uint8Array): Promise<void> {
  const parts = split(p);
  const name = parts.pop()!;
  const dir = (await dirOf(root, parts, true))!;
  const handle = await dir.getFileHandle(name, { create: true });
  const h = handle as FileSystemFileHandle & {
    createWritable?: () => Promise<FileSystemWritableFileStream>;
  };
  if (h.createWritable) {
    const w = await h.createWritable();
    await w.write(bytes as unknown as BufferSource);
    await w.close();
    return;
  }
  // Safari has only the synchronous access handle (in workers).
  const sync = await (
    handle as unknown as {
      createSyncAccessHandle(): Promise<{
        truncate(n: number): void;
        write(b: Uint8Array, o: { at: number }): number;
        flush(): void;
        close(): void;
      }>;
    }
  ).createSyncAccessHandle();
  try {
    sync.truncate(0);
    sync.write(bytes, { at: 0 });
    sync.flush();
  } finally {
    sync.close();
  }
}

export async function writeOpfsText(root: OpfsDir, p: string, text: string): Promise<void> {
  await writeFile(root, p, new TextEncoder().encode(text));
}

export async function readOpfsText(root: OpfsDir, p: string): Promise<string | null> {
  const parts = split(p);
  const name = parts.pop()!;
  const dir = await dirOf(root, parts, false);
  if (!dir) return null;
  try {
    return await (await (await dir.getFileHandle(name)).getFile()).text();
  } catch {
    return null;
  }
}

export async function removeOpfs(root: OpfsDir, p: string): Promise<void> {
  const parts = split(p);
  const name = parts.pop()!;
  const dir = await dirOf(root, parts, false);
  if (!dir) return;
  try {
    await dir.removeEntry(name, { recursive: true });
  } catch {
    // absent already
  }
}

/** Copies a memory-fs file or folder (recursively) to `to` in OPFS. */
export async function copyIntoOpfs(
  fs: MemoryFs,
  from: string,
  root: OpfsDir,
  to: string,
): Promise<void> {
  if (fs.statSync(from)!.isFile()) {
    await writeFile(root, to, await fs.readBytes(from));
    return;
  }
  for (const rel of fs.listFiles(from))
    await writeFile(root, `${to}/${rel}`, await fs.readBytes(`${from}/${rel}`));
}

/** Copies an OPFS folder (recursively) into the memory file system at `to`. */
export async function copyFromOpfs(
  root: OpfsDir,
  from: string,
  fs: MemoryFs,
  to: string,
): Promise<void> {
  const dir = await dirOf(root, split(from), false);
  if (!dir) return;
  const walk = async (d: OpfsDir, prefix: string): Promise<void> => {
    for await (const [name, handle] of (
      d as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }
    ).entries()) {
      if (handle.kind === 'directory') await walk(handle as OpfsDir, `${prefix}/${name}`);
      else {
        const file = await (handle as FileSystemFileHandle).getFile();
        fs.mkdirSync(prefix, { recursive: true });
        fs.writeFileSync(`${prefix}/${name}`, new Uint8Array(await file.arrayBuffer()));
      }
    }
  };
  await walk(dir, to);
}
