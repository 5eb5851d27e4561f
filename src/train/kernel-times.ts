/**
 * Kernel timings kept between runs, one file per machine and kernel build: timing a 7B step's
 * distinct kernels takes about a second, so `qlora train` and `qlora plan` measure each kernel
 * shape once and read it back afterwards.
 *
 * The file is `kernel-times-<key>.json` in $QLORA_CACHE_DIR, else $XDG_CACHE_HOME/qlora-ts, else
 * ~/.cache/qlora-ts; the key hashes the CPU model, the backend's description (instruction set,
 * threads, compute dtype) and its build. A timing taken while the machine was busier than it is
 * now is taken again (the load average is stored with each). A missing, unreadable or malformed
 * file is an empty cache, never an error: the timings are measured again.
 */
import { writeFileAtomic, writeAll } from '../io/atomic-write.js';
import { fs, nodeBuiltin, path } from '../io/host.js';

interface Entry {
  readonly seconds: number;
  /** One-minute load average when measured (null where the platform has none). */
  readonly load: number | null;
}

const VERSION = 1;
/** Bounds on what is read back (bad input loses nothing: past them the file is ignored). */
const MAX_FILE_BYTES = 16 * 2 ** 20;
const MAX_ENTRIES = 50_000;

export class KernelTimes {
  private readonly entries = new Map<string, Entry>();
  private dirty = false;

  private constructor(
    /** Where the timings are kept, or null (no file system, or caching turned off). */
    readonly file: string | null,
    private readonly machine: Readonly<Record<string, string | number>>,
    private readonly loadNow: number | null,
  ) {}

  /** The timings of this machine and build (`facts` names them), read from the cache folder. */
  static open(facts: Readonly<Record<string, string | number>>, dir = cacheDir()): KernelTimes {
    const file =
      dir === null ? null : path.join(dir, `kernel-times-${hash(JSON.stringify(facts))}.json`);
    const times = new KernelTimes(file, facts, loadAverage());
    if (file !== null) times.read(file);
    return times;
  }

  /** Timings held in memory only. */
  static inMemory(): KernelTimes {
    return new KernelTimes(null, {}, loadAverage());
  }

  private read(file: string): void {
    try {
      if (!fs.existsSync(file) || fs.statSync(file).size > MAX_FILE_BYTES) return;
      const json = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
      if (!json || typeof json !== 'object') return;
      const { version, entries } = json as { version?: unknown; entries?: unknown };
      if (version !== VERSION || !entries || typeof entries !== 'object') return;
      let n = 0;
      for (const [sig, e] of Object.entries(entries as Record<string, unknown>)) {
        if (++n > MAX_ENTRIES) break;
        const { seconds, load } = (e ?? {}) as { seconds?: unknown; load?: unknown };
        if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) continue;
        this.entries.set(sig, { seconds, load: typeof load === 'number' ? load : null });
      }
    } catch {
      // Unreadable or not JSON: measured again and rewritten.
      this.entries.clear();
    }
  }

  /** Seconds of `signature` if timed before on a machine no busier than now. */
  get(signature: string): number | undefined {
    const e = this.entries.get(signature);
    if (!e) return undefined;
    if (e.load !== null && this.loadNow !== null && e.load > this.loadNow + 1) return undefined;
    return e.seconds;
  }

  set(signature: string, seconds: number): void {
    this.entries.set(signature, { seconds, load: this.loadNow });
    this.dirty = true;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Writes the timings back (atomically) when any were added; a failure to write only loses them. */
  save(): void {
    if (!this.dirty || this.file === null) return;
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true });
      const body = JSON.stringify({
        version: VERSION,
        machine: this.machine,
        entries: Object.fromEntries([...this.entries].slice(-MAX_ENTRIES)),
      });
      const bytes = new TextEncoder().encode(body);
      writeFileAtomic(this.file, (fd) => writeAll(fd, bytes));
      this.dirty = false;
    } catch {
      // A read-only home or a full disk: the timings are measured again next time.
    }
  }
}

/** $QLORA_CACHE_DIR (empty: no cache), else $XDG_CACHE_HOME/qlora-ts, else ~/.cache/qlora-ts. */
export function cacheDir(): string | null {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  const os = nodeBuiltin<typeof import('node:os')>('node:os');
  if (!env || !os) return null;
  const own = env['QLORA_CACHE_DIR'];
  if (own !== undefined) return own === '' ? null : own;
  const xdg = env['XDG_CACHE_HOME'];
  return path.join(xdg ? xdg : path.join(os.homedir(), '.cache'), 'qlora-ts');
}

/** One-minute load average, or null where the platform has none (Windows reports 0: none). */
export function loadAverage(): number | null {
  const os = nodeBuiltin<typeof import('node:os')>('node:os');
  const l = os?.loadavg()[0];
  return l === undefined || (l === 0 && os?.platform() === 'win32') ? null : l;
}

/** The CPU model name (what the timings are per), or 'unknown'. */
export function cpuModel(): string {
  return nodeBuiltin<typeof import('node:os')>('node:os')?.cpus()[0]?.model.trim() ?? 'unknown';
}

/** FNV-1a, 64 bits, as 16 hex digits: a file name for a set of facts (not security). */
function hash(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < s.length; i++) {
    h ^= BigInt(s.charCodeAt(i));
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, '0');
}
