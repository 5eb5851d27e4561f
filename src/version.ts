import { nodeBuiltin } from './io/host.js';

/**
 * The package version. Node reads package.json (src/version.ts and dist/version.js both sit one
 * level below the package root); the browser bundle has it compiled in by scripts/build-web.ts
 * (esbuild `define`), since a page has no package.json to read.
 */
function readVersion(): string {
  const fs = nodeBuiltin<typeof import('node:fs')>('node:fs');
  if (fs)
    return (
      JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
        version: string;
      }
    ).version;
  return (globalThis as { QLORA_VERSION?: string }).QLORA_VERSION ?? 'unknown';
}

export const VERSION: string = readVersion();
