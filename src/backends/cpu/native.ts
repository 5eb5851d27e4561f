import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The compiled addon (build/Release/qlora_native.node, built by `npm install`; QLORA_ADDON=path
 * loads another build instead, e.g. the sanitizer and instruction-set variants CI tests). Kernel files add
 * their entry points to `NativeAddon` as they register them on the C++ side (QLORA_EXPORT).
 */
export interface NativeAddon {
  alloc(bytes: number): ArrayBuffer;
  free(buffer: ArrayBuffer): void;
  memoryStats(): { allocatedBytes: number; peakBytes: number; liveBlocks: number };
  simdLevel(): string;
  getThreads(): number;
  setThreads(n: number): void;
  // Kernel entry points are typed where they are wrapped (src/backends/cpu/*.ts).
  [kernel: string]: unknown;
}

function addonPath(): string {
  // src/backends/cpu/native.ts and dist/backends/cpu/native.js are both three levels below the root.
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const override = process.env['QLORA_ADDON'];
  return override ? resolve(override) : join(root, 'build', 'Release', 'qlora_native.node');
}

function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  const override = process.env['QLORA_ADDON'];
  const path = addonPath();
  try {
    return require(path) as NativeAddon;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const hint = override ? 'check QLORA_ADDON' : 'run `npm install` or `npm run build:native`';
    throw new Error(`cannot load the native addon at ${path} (${hint}): ${reason}`);
  }
}

export const native: NativeAddon = load();

/** The loaded addon build: its path, size and modification time (a rebuild changes it). */
export const addonBuildId: string = (() => {
  const path = addonPath();
  const st = statSync(path);
  return `${path}:${st.size}:${Math.round(st.mtimeMs)}`;
})();

/** A typed kernel entry point, failing clearly if the addon was built without it. */
export function kernel<F extends (...args: never[]) => unknown>(name: string): F {
  const fn = native[name];
  if (typeof fn !== 'function')
    throw new Error(`native addon has no kernel '${name}' (rebuild with npm run build:native)`);
  return fn as F;
}

/**
 * Whether this addon build on this CPU computes the 4-bit matmuls in bf16 (an AVX-512 build on a CPU
 * with AVX512_BF16; QLORA_NO_BF16=1 hides the feature). False for an addon older than the entry point.
 */
export function bf16Available(): boolean {
  const fn = native['bf16Available'];
  return typeof fn === 'function' && (fn as () => boolean)() === true;
}
