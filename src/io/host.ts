/**
 * The one door between the library and the machine it runs on: files, paths, and the few process
 * facts the trainer and planner need. In Node this is node:fs / node:path / node:os, reached through
 * `process.getBuiltinModule` — not a static import, so a browser bundle of the library contains no
 * Node built-in. In a browser (a Web Worker of the web app) nothing is installed by default: the app
 * calls `installHost()` with an in-memory file system whose input files are the user's File objects,
 * read slice by slice (src/io/memory-fs.ts), and every reader above keeps its synchronous,
 * positional code.
 *
 * What a host must provide is the part of node:fs the library uses (docs/web.md lists it):
 * open/read/write/close/fstat/fsync on descriptors, stat/exists/readdir/readFile/writeFile/
 * appendFile/mkdir/rename/rm/copyFile, `createReadStream` consumed only with `for await`, and
 * `promises.stat/readdir/readFile/open`. A missing member throws a clear error when called.
 */
import type NodeFs from 'node:fs';
import type NodePath from 'node:path';

export type HostFs = typeof NodeFs;
export type HostPath = typeof NodePath;

export interface HostProcess {
  /** Distinguishes temporary files of concurrent writers. */
  readonly pid: number;
  readonly cpuCount: () => number;
  /** Memory the planner may count on (Node: physical RAM). */
  readonly totalMemoryBytes: () => number;
  /** Peak resident memory so far, or 0 where unknown. */
  readonly peakRssBytes: () => number;
  /** Calls `handler` on an interrupt request (Ctrl-C, SIGTERM); returns the unsubscribe function. */
  readonly onInterrupt: (handler: () => void) => () => void;
  /** Lets pending events (an interrupt, a message from the page) run between training steps. */
  readonly yieldToEvents: () => Promise<void>;
}

export interface Host {
  readonly fs: HostFs;
  readonly path: HostPath;
  readonly process: HostProcess;
}

interface NodeProcessLike {
  pid: number;
  getBuiltinModule?: (id: string) => unknown;
  on(ev: string, fn: () => void): unknown;
  off(ev: string, fn: () => void): unknown;
  resourceUsage(): { maxRSS: number };
}

function nodeHost(): Host | null {
  const proc = (globalThis as { process?: NodeProcessLike }).process;
  const load = proc?.getBuiltinModule;
  if (!proc || typeof load !== 'function') return null;
  const os = load('node:os') as typeof import('node:os');
  return {
    fs: load('node:fs') as HostFs,
    path: load('node:path') as HostPath,
    process: {
      pid: proc.pid,
      cpuCount: () => Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
      totalMemoryBytes: () => os.totalmem(),
      peakRssBytes: () => proc.resourceUsage().maxRSS * 1024,
      onInterrupt: (handler) => {
        proc.on('SIGINT', handler);
        proc.on('SIGTERM', handler);
        return () => {
          proc.off('SIGINT', handler);
          proc.off('SIGTERM', handler);
        };
      },
      yieldToEvents: () => new Promise<void>((resolve) => setImmediate(resolve)),
    },
  };
}

/** A stand-in until a host is installed: every use says what is missing instead of `undefined is not a function`. */
function missing<T extends object>(what: string): T {
  return new Proxy({} as T, {
    get(_t, key) {
      if (key === Symbol.toPrimitive || key === 'then') return undefined;
      throw new Error(
        `no ${what} on this platform: call installHost() first (tried to use ${what}.${String(key)})`,
      );
    },
  });
}

const initial = nodeHost();

/** The file system (node:fs in Node; the installed one elsewhere). Live binding: follows installHost. */
export let fs: HostFs = initial?.fs ?? missing<HostFs>('file system');
/** Path functions (node:path in Node; posix paths elsewhere). */
export let path: HostPath = initial?.path ?? missing<HostPath>('path module');
/** Process facts and events. */
export let hostProcess: HostProcess = initial?.process ?? missing<HostProcess>('process');

/** Replaces the host (the web worker installs its memory file system); returns the previous one. */
export function installHost(host: Host): Host {
  const previous: Host = { fs, path, process: hostProcess };
  fs = host.fs;
  path = host.path;
  hostProcess = host.process;
  return previous;
}

/** A Node built-in module when running in Node (without a static import), else null. */
export function nodeBuiltin<T>(id: `node:${string}`): T | null {
  const load = (globalThis as { process?: NodeProcessLike }).process?.getBuiltinModule;
  return typeof load === 'function' ? (load(id) as T) : null;
}
