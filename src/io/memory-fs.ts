/**
 * A file system in memory for hosts without node:fs (the web app's worker; see host.ts). Input
 * files are mounted as Blobs (a browser's File objects) and read by slices on demand — a tensor
 * read is one `blob.slice(offset, offset + n)`, so a multi-GB model is never held in JS memory
 * whole. Synchronous reads go through `readBlobSync` (FileReaderSync in a Web Worker), so every
 * positional reader in src/io keeps its synchronous code; streams read slices asynchronously.
 * Files the library writes (adapters, checkpoints, metrics) are kept as bytes.
 *
 * It implements the node:fs members host.ts lists, with Node's semantics where they matter
 * (ENOENT/EEXIST/EISDIR errors with `code`, 'wx' exclusive create, recursive mkdir/rm, rename of
 * folders); others throw.
 */
import type { HostFs } from './host.js';
import { posixPath } from './posix-path.js';

/** Reads [start, end) of a Blob synchronously. */
export type BlobSyncReader = (blob: Blob, start: number, end: number) => Uint8Array;

interface FileNode {
  kind: 'file';
  /** A mounted input file (read by slices), until it is written to. */
  blob: Blob | null;
  /** Written contents; `size` bytes of it are valid. */
  bytes: Uint8Array;
  size: number;
  mtimeMs: number;
}
interface DirNode {
  kind: 'dir';
  entries: Map<string, Node>;
  mtimeMs: number;
}
type Node = FileNode | DirNode;

interface Descriptor {
  node: FileNode;
  path: string;
  writable: boolean;
  append: boolean;
  position: number;
}

declare const FileReaderSync:
  { new (): { readAsArrayBuffer(blob: Blob): ArrayBuffer } } | undefined;

/** FileReaderSync, which only Web Workers have. */
export const fileReaderSyncReader: BlobSyncReader = (blob, start, end) => {
  if (typeof FileReaderSync === 'undefined') {
    throw new Error('synchronous file reads need FileReaderSync (run the library in a Web Worker)');
  }
  return new Uint8Array(new FileReaderSync().readAsArrayBuffer(blob.slice(start, end)));
};

function fsError(code: string, syscall: string, p: string, text: string): Error {
  const e = new Error(`${code}: ${text}, ${syscall} '${p}'`) as Error & {
    code: string;
    syscall: string;
    path: string;
  };
  e.code = code;
  e.syscall = syscall;
  e.path = p;
  return e;
}

class Stats {
  constructor(
    private readonly node: Node,
    readonly size: number,
    readonly mtimeMs: number,
  ) {}
  isFile(): boolean {
    return this.node.kind === 'file';
  }
  isDirectory(): boolean {
    return this.node.kind === 'dir';
  }
  isSymbolicLink(): boolean {
    return false;
  }
  get mtime(): Date {
    return new Date(this.mtimeMs);
  }
}

class Dirent {
  constructor(
    readonly name: string,
    private readonly node: Node,
    readonly parentPath: string,
  ) {}
  isFile(): boolean {
    return this.node.kind === 'file';
  }
  isDirectory(): boolean {
    return this.node.kind === 'dir';
  }
  isSymbolicLink(): boolean {
    return false;
  }
}

const encoder = new TextEncoder();

function toBytes(data: unknown, encoding?: string): Uint8Array {
  if (typeof data === 'string') {
    if (encoding && encoding !== 'utf8' && encoding !== 'utf-8')
      throw new Error(`memory fs: encoding '${encoding}' is not supported`);
    return encoder.encode(data);
  }
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data))
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new Error('memory fs: data must be a string or bytes');
}

function encodingOf(options: unknown): string | undefined {
  if (typeof options === 'string') return options;
  if (options && typeof options === 'object' && 'encoding' in options)
    return (options as { encoding?: string }).encoding ?? undefined;
  return undefined;
}

/** Node returns Buffers; the browser bundle injects the `buffer` package's Buffer for the same API. */
function asBuffer(bytes: Uint8Array): Uint8Array {
  const B = (globalThis as { Buffer?: { from(b: ArrayBuffer, o: number, n: number): Uint8Array } })
    .Buffer;
  return B ? B.from(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength) : bytes;
}

export class MemoryFs {
  private readonly root: DirNode = { kind: 'dir', entries: new Map(), mtimeMs: Date.now() };
  private readonly fds = new Map<number, Descriptor>();
  private nextFd = 3;

  constructor(private readonly readBlobSync: BlobSyncReader = fileReaderSyncReader) {}

  // ---- mounting and bulk access (the app's side) -------------------------------------------------

  /** Makes a Blob (a File) readable at `p`; parent folders are created. */
  mount(p: string, blob: Blob): void {
    const { parent, name } = this.parentOf(p, 'mount', true);
    parent.entries.set(name, {
      kind: 'file',
      blob,
      bytes: new Uint8Array(0),
      size: blob.size,
      mtimeMs: Date.now(),
    });
  }

  /** The whole contents of a file (for downloads and for copying outputs elsewhere). */
  async readBytes(p: string): Promise<Uint8Array> {
    const node = this.fileAt(p, 'open');
    if (node.blob) return new Uint8Array(await node.blob.slice(0, node.size).arrayBuffer());
    return node.bytes.slice(0, node.size);
  }

  /** Every file under `dir`, as paths relative to it (sorted). */
  listFiles(dir: string): string[] {
    const out: string[] = [];
    const walk = (node: DirNode, prefix: string) => {
      for (const [name, child] of [...node.entries].sort(([a], [b]) =>
        a < b ? -1 : a > b ? 1 : 0,
      )) {
        if (child.kind === 'dir') walk(child, `${prefix}${name}/`);
        else out.push(`${prefix}${name}`);
      }
    };
    const node = this.lookup(p(dir));
    if (node?.kind === 'dir') walk(node, '');
    return out;
  }

  // ---- tree helpers --------------------------------------------------------------------------------

  private lookup(abs: string): Node | null {
    let node: Node = this.root;
    for (const part of abs.split('/').filter(Boolean)) {
      if (node.kind !== 'dir') return null;
      const next = node.entries.get(part);
      if (!next) return null;
      node = next;
    }
    return node;
  }

  private parentOf(
    path: string,
    syscall: string,
    create = false,
  ): { parent: DirNode; name: string; abs: string } {
    const abs = p(path);
    const parts = abs.split('/').filter(Boolean);
    const name = parts.pop();
    if (name === undefined)
      throw fsError('EISDIR', syscall, path, 'illegal operation on a directory');
    let node: DirNode = this.root;
    for (const part of parts) {
      let next = node.entries.get(part);
      if (!next) {
        if (!create) throw fsError('ENOENT', syscall, path, 'no such file or directory');
        next = { kind: 'dir', entries: new Map(), mtimeMs: Date.now() };
        node.entries.set(part, next);
      }
      if (next.kind !== 'dir') throw fsError('ENOTDIR', syscall, path, 'not a directory');
      node = next;
    }
    return { parent: node, name, abs };
  }

  private fileAt(path: string, syscall: string): FileNode {
    const node = this.lookup(p(path));
    if (!node) throw fsError('ENOENT', syscall, path, 'no such file or directory');
    if (node.kind !== 'file')
      throw fsError('EISDIR', syscall, path, 'illegal operation on a directory');
    return node;
  }

  private descriptor(fd: number, syscall: string): Descriptor {
    const d = this.fds.get(fd);
    if (!d) throw fsError('EBADF', syscall, String(fd), 'bad file descriptor');
    return d;
  }

  /** Bytes [offset, offset+length) of a file node into target[at...]; returns the count. */
  private readNode(
    node: FileNode,
    target: Uint8Array,
    at: number,
    length: number,
    offset: number,
  ): number {
    const n = Math.max(0, Math.min(length, node.size - offset));
    if (n === 0) return 0;
    if (node.blob) target.set(this.readBlobSync(node.blob, offset, offset + n), at);
    else target.set(node.bytes.subarray(offset, offset + n), at);
    return n;
  }

  /** A written-to mounted file first becomes bytes (inputs are not written in practice). */
  private materialize(node: FileNode): void {
    if (!node.blob) return;
    const bytes = new Uint8Array(node.size);
    this.readNode(node, bytes, 0, node.size, 0);
    node.blob = null;
    node.bytes = bytes;
  }

  private writeNode(node: FileNode, data: Uint8Array, offset: number): void {
    this.materialize(node);
    const end = offset + data.byteLength;
    if (end > node.bytes.byteLength) {
      const grown = new Uint8Array(Math.max(end, node.bytes.byteLength * 2, 256));
      grown.set(node.bytes.subarray(0, node.size));
      node.bytes = grown;
    }
    node.bytes.set(data, offset);
    node.size = Math.max(node.size, end);
    node.mtimeMs = Date.now();
  }

  // ---- the node:fs members -------------------------------------------------------------------------

  existsSync(path: string): boolean {
    return this.lookup(p(path)) !== null;
  }

  statSync(path: string, options?: { throwIfNoEntry?: boolean }): Stats | undefined {
    const node = this.lookup(p(path));
    if (!node) {
      if (options?.throwIfNoEntry === false) return undefined;
      throw fsError('ENOENT', 'stat', path, 'no such file or directory');
    }
    return new Stats(node, node.kind === 'file' ? node.size : 0, node.mtimeMs);
  }

  lstatSync(path: string, options?: { throwIfNoEntry?: boolean }): Stats | undefined {
    return this.statSync(path, options);
  }

  /** open(2) flag bits as Linux numbers them (what node:fs.constants holds there). */
  readonly constants = {
    O_RDONLY: 0,
    O_WRONLY: 1,
    O_RDWR: 2,
    O_CREAT: 0o100,
    O_EXCL: 0o200,
    O_TRUNC: 0o1000,
    O_APPEND: 0o2000,
    O_NOFOLLOW: 0o400000,
    F_OK: 0,
    R_OK: 4,
    W_OK: 2,
    X_OK: 1,
  };

  private parseFlags(flags: string | number): {
    write: boolean;
    create: boolean;
    excl: boolean;
    trunc: boolean;
    append: boolean;
  } {
    if (typeof flags === 'number') {
      const c = this.constants;
      return {
        write: (flags & 3) !== c.O_RDONLY,
        create: (flags & c.O_CREAT) !== 0,
        excl: (flags & c.O_EXCL) !== 0,
        trunc: (flags & c.O_TRUNC) !== 0,
        append: (flags & c.O_APPEND) !== 0,
      };
    }
    const table: Record<
      string,
      { write: boolean; create: boolean; excl: boolean; trunc: boolean; append: boolean }
    > = {
      r: { write: false, create: false, excl: false, trunc: false, append: false },
      'r+': { write: true, create: false, excl: false, trunc: false, append: false },
      w: { write: true, create: true, excl: false, trunc: true, append: false },
      wx: { write: true, create: true, excl: true, trunc: true, append: false },
      a: { write: true, create: true, excl: false, trunc: false, append: true },
      ax: { write: true, create: true, excl: true, trunc: false, append: true },
    };
    const f = table[flags === 'rs' ? 'r' : flags];
    if (!f) throw new Error(`memory fs: open flags '${flags}' are not supported`);
    return f;
  }

  openSync(path: string, flags: string | number = 'r', _mode?: number): number {
    const abs = p(path);
    const f = this.parseFlags(flags);
    let node = this.lookup(abs);
    if (node && f.create && f.excl) throw fsError('EEXIST', 'open', path, 'file already exists');
    if (!node) {
      if (!f.create) throw fsError('ENOENT', 'open', path, 'no such file or directory');
      const { parent, name } = this.parentOf(abs, 'open');
      node = { kind: 'file', blob: null, bytes: new Uint8Array(0), size: 0, mtimeMs: Date.now() };
      parent.entries.set(name, node);
    }
    if (node.kind !== 'file')
      throw fsError('EISDIR', 'open', path, 'illegal operation on a directory');
    if (f.trunc) {
      node.blob = null;
      node.bytes = new Uint8Array(0);
      node.size = 0;
    }
    const fd = this.nextFd++;
    this.fds.set(fd, { node, path: abs, writable: f.write, append: f.append, position: 0 });
    return fd;
  }

  rmdirSync(path: string): void {
    const node = this.lookup(p(path));
    if (!node) throw fsError('ENOENT', 'rmdir', path, 'no such file or directory');
    if (node.kind !== 'dir') throw fsError('ENOTDIR', 'rmdir', path, 'not a directory');
    if (node.entries.size > 0) throw fsError('ENOTEMPTY', 'rmdir', path, 'directory not empty');
    this.rmSync(path, { recursive: true });
  }

  readSync(
    fd: number,
    buffer: ArrayBufferView,
    offset = 0,
    length?: number,
    position?: number | bigint | null,
  ): number {
    const d = this.descriptor(fd, 'read');
    const target = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const len = length ?? target.byteLength - offset;
    const at =
      position === null || position === undefined || position === -1
        ? d.position
        : Number(position);
    const n = this.readNode(d.node, target, offset, len, at);
    if (position === null || position === undefined || position === -1) d.position += n;
    return n;
  }

  writeSync(
    fd: number,
    data: ArrayBufferView | string,
    offset?: number | null,
    length?: number | string | null,
    position?: number | null,
  ): number {
    const d = this.descriptor(fd, 'write');
    if (!d.writable) throw fsError('EBADF', 'write', d.path, 'bad file descriptor');
    let bytes: Uint8Array;
    let at: number | null | undefined;
    if (typeof data === 'string') {
      bytes = encoder.encode(data);
      at = typeof offset === 'number' ? offset : null; // writeSync(fd, string, position)
    } else {
      const all = toBytes(data);
      const start = offset ?? 0;
      const len = typeof length === 'number' ? length : all.byteLength - start;
      bytes = all.subarray(start, start + len);
      at = position;
    }
    const where = d.append ? d.node.size : at === null || at === undefined ? d.position : at;
    this.writeNode(d.node, bytes, where);
    if (at === null || at === undefined || d.append) d.position = where + bytes.byteLength;
    return bytes.byteLength;
  }

  fstatSync(fd: number): Stats {
    const d = this.descriptor(fd, 'fstat');
    return new Stats(d.node, d.node.size, d.node.mtimeMs);
  }

  fsyncSync(fd: number): void {
    this.descriptor(fd, 'fsync');
  }

  closeSync(fd: number): void {
    this.descriptor(fd, 'close');
    this.fds.delete(fd);
  }

  readFileSync(path: string, options?: unknown): string | Uint8Array {
    const node = this.fileAt(path, 'open');
    const bytes = new Uint8Array(node.size);
    this.readNode(node, bytes, 0, node.size, 0);
    const enc = encodingOf(options);
    if (enc) return new TextDecoder(enc === 'utf8' ? 'utf-8' : enc).decode(bytes);
    return asBuffer(bytes);
  }

  writeFileSync(path: string, data: unknown, options?: unknown): void {
    const fd = this.openSync(path, 'w');
    try {
      this.writeSync(fd, toBytes(data, encodingOf(options)));
    } finally {
      this.closeSync(fd);
    }
  }

  appendFileSync(path: string, data: unknown, options?: unknown): void {
    const fd = this.openSync(path, 'a');
    try {
      this.writeSync(fd, toBytes(data, encodingOf(options)));
    } finally {
      this.closeSync(fd);
    }
  }

  copyFileSync(from: string, to: string): void {
    const node = this.fileAt(from, 'copyfile');
    const { parent, name } = this.parentOf(to, 'copyfile');
    parent.entries.set(name, {
      ...node,
      bytes: node.bytes.slice(0, node.size),
      mtimeMs: Date.now(),
    });
  }

  mkdirSync(path: string, options?: { recursive?: boolean } | number): string | undefined {
    const recursive = typeof options === 'object' && options?.recursive === true;
    const abs = p(path);
    const existing = this.lookup(abs);
    if (existing) {
      if (recursive && existing.kind === 'dir') return undefined;
      throw fsError('EEXIST', 'mkdir', path, 'file already exists');
    }
    const { parent, name } = this.parentOf(abs, 'mkdir', recursive);
    parent.entries.set(name, { kind: 'dir', entries: new Map(), mtimeMs: Date.now() });
    return recursive ? abs : undefined;
  }

  readdirSync(path: string, options?: { withFileTypes?: boolean } | string): (string | Dirent)[] {
    const abs = p(path);
    const node = this.lookup(abs);
    if (!node) throw fsError('ENOENT', 'scandir', path, 'no such file or directory');
    if (node.kind !== 'dir') throw fsError('ENOTDIR', 'scandir', path, 'not a directory');
    const entries = [...node.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (typeof options === 'object' && options?.withFileTypes)
      return entries.map(([n, entry]) => new Dirent(n, entry, abs));
    return entries.map(([n]) => n);
  }

  renameSync(from: string, to: string): void {
    const src = this.parentOf(from, 'rename');
    const node = src.parent.entries.get(src.name);
    if (!node) throw fsError('ENOENT', 'rename', from, 'no such file or directory');
    const dst = this.parentOf(to, 'rename');
    const existing = dst.parent.entries.get(dst.name);
    if (existing?.kind === 'dir' && (node.kind !== 'dir' || existing.entries.size > 0)) {
      throw fsError('ENOTEMPTY', 'rename', to, 'directory not empty');
    }
    src.parent.entries.delete(src.name);
    dst.parent.entries.set(dst.name, node);
  }

  rmSync(path: string, options?: { recursive?: boolean; force?: boolean }): void {
    const abs = p(path);
    const node = this.lookup(abs);
    if (!node) {
      if (options?.force) return;
      throw fsError('ENOENT', 'rm', path, 'no such file or directory');
    }
    if (node.kind === 'dir' && !options?.recursive)
      throw fsError('ERR_FS_EISDIR', 'rm', path, 'is a directory');
    const { parent, name } = this.parentOf(abs, 'rm');
    parent.entries.delete(name);
  }

  unlinkSync(path: string): void {
    this.fileAt(path, 'unlink');
    this.rmSync(path);
  }

  /**
   * Node's ReadStream as far as the library uses it: an async iterable of chunks (Buffers, or
   * strings with an encoding, decoded across chunk boundaries). Slices are read asynchronously.
   */
  createReadStream(
    path: string,
    options?: { encoding?: string; highWaterMark?: number; start?: number; end?: number } | string,
  ): AsyncIterable<Uint8Array | string> {
    const node = this.fileAt(path, 'open');
    const o = typeof options === 'string' ? { encoding: options } : (options ?? {});
    const chunk = o.highWaterMark ?? 1 << 16;
    const start = o.start ?? 0;
    const end = Math.min(node.size, o.end !== undefined ? o.end + 1 : node.size);
    const decoder = o.encoding
      ? new TextDecoder(o.encoding === 'utf8' ? 'utf-8' : o.encoding)
      : null;
    return {
      async *[Symbol.asyncIterator]() {
        for (let at = start; at < end; at += chunk) {
          const stop = Math.min(end, at + chunk);
          const bytes = node.blob
            ? new Uint8Array(await node.blob.slice(at, stop).arrayBuffer())
            : node.bytes.slice(at, stop);
          if (decoder) {
            const s = decoder.decode(bytes, { stream: true });
            if (s.length > 0) yield s;
          } else {
            yield asBuffer(bytes);
          }
        }
        if (decoder) {
          const tail = decoder.decode();
          if (tail.length > 0) yield tail;
        }
      },
    };
  }

  /** The promise API members the data readers use. */
  readonly promises = {
    stat: async (path: string) => this.statSync(path)!,
    lstat: async (path: string) => this.statSync(path)!,
    readdir: async (path: string, options?: { withFileTypes?: boolean }) =>
      this.readdirSync(path, options),
    readFile: async (path: string, options?: unknown) => {
      const bytes = await this.readBytes(path);
      const enc = encodingOf(options);
      return enc ? new TextDecoder(enc === 'utf8' ? 'utf-8' : enc).decode(bytes) : asBuffer(bytes);
    },
    open: async (path: string, flags = 'r') => {
      const fd = this.openSync(path, flags);
      const node = this.descriptor(fd, 'open').node;
      return {
        fd,
        read: async (buffer: Uint8Array, offset: number, length: number, position: number) => {
          const n = Math.max(0, Math.min(length, node.size - position));
          if (n > 0) {
            const bytes = node.blob
              ? new Uint8Array(await node.blob.slice(position, position + n).arrayBuffer())
              : node.bytes.subarray(position, position + n);
            buffer.set(bytes, offset);
          }
          return { bytesRead: n, buffer };
        },
        stat: async () => this.fstatSync(fd),
        close: async () => this.closeSync(fd),
      };
    },
  };

  /** This file system as node:fs for installHost (members it lacks throw when used). */
  asHostFs(): HostFs {
    return new Proxy(this, {
      get(target, key) {
        const v = (target as unknown as Record<string | symbol, unknown>)[key];
        if (typeof v === 'function') return v.bind(target);
        if (v !== undefined || typeof key === 'symbol') return v;
        return () => {
          throw new Error(`fs.${String(key)} is not available in the browser's memory file system`);
        };
      },
    }) as unknown as HostFs;
  }
}

/** Resolves against '/' (the memory file system has no other working directory). */
function p(path: string): string {
  if (typeof path !== 'string')
    throw new TypeError(`memory fs: path must be a string, got ${typeof path}`);
  return posixPath.resolve('/', path);
}
