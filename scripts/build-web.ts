// Builds the browser app (web/) into dist/web/ with esbuild: the page script, the training worker
// (the library itself, bundled for browsers), the HTML and CSS. `platform: 'browser'` makes any
// Node built-in that reaches the bundle a build error. Usage: node --import tsx scripts/build-web.ts [outdir]
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The library reaches the native cpu backend only through dynamic imports taken when the backend
 * is 'cpu' (getBackend, the native quantizer and allocator trim). The browser never takes them:
 * they stay lazy imports of a module that is not shipped instead of pulling node:module into the
 * bundle. A static import of it would still fail the build.
 */
const lazyNativeBackend: esbuild.Plugin = {
  name: 'lazy-native-backend',
  setup(build) {
    build.onResolve({ filter: /backends\/cpu\/|\/cpu\/index\.js$|^\.\/cpu\// }, (args) => {
      if (args.kind !== 'dynamic-import') return undefined;
      const target = resolve(args.resolveDir, args.path);
      if (!target.includes(`${join('src', 'backends', 'cpu')}`)) return undefined;
      return { path: `./not-in-browser/${args.path.split('/').pop()}`, external: true };
    });
  },
};

/** esbuild options for the app; tests build with the same options (write: false). */
export function webBuildOptions(
  outdir = join(root, 'dist', 'web'),
): esbuild.BuildOptions & { outdir: string } {
  return {
    absWorkingDir: root,
    entryPoints: { app: join(root, 'web', 'app.ts'), worker: join(root, 'web', 'worker.ts') },
    outdir,
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    sourcemap: true,
    minify: false,
    // Node's Buffer (used by the tokenizers) from the `buffer` package, only where it is used.
    inject: [join(root, 'web', 'buffer-shim.ts')],
    plugins: [lazyNativeBackend],
    // src/version.ts reads package.json in Node; the page gets the version compiled in.
    define: { 'globalThis.QLORA_VERSION': JSON.stringify(packageVersion()) },
    logLevel: 'warning',
    logOverride: { 'unsupported-dynamic-import': 'silent' },
  };
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string })
    .version;
}

export async function buildWeb(outdir = join(root, 'dist', 'web')): Promise<esbuild.BuildResult> {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  const result = await esbuild.build(webBuildOptions(outdir));
  for (const f of ['index.html', 'style.css']) copyFileSync(join(root, 'web', f), join(outdir, f));
  return result;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const outdir = process.argv[2] ? resolve(process.argv[2]) : undefined;
  void buildWeb(outdir).then(
    () => console.log(`web app built into ${outdir ?? join(root, 'dist', 'web')}`),
    (e) => {
      console.error(e instanceof Error ? e.message : String(e));
      process.exit(1);
    },
  );
}
