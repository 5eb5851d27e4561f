/**
 * `qlora web`: serves the browser app (built into dist/web by `npm run build:web`) on 127.0.0.1.
 * A plain static file server — the app does everything in the page and its worker, so the server
 * never sees the user's model or data.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { intOption } from './options.js';

/** Where `npm run build:web` puts the app (the same place from src/ under tsx and from dist/). */
export const WEB_ROOT = fileURLToPath(new URL('../../dist/web/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/** The file a request path names inside `root`, or null (outside it, or absent). */
export function resolveStatic(root: string, urlPath: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath.split('?')[0]!.split('#')[0]!);
  } catch {
    return null;
  }
  if (decoded.includes('\0')) return null;
  const rel = decoded.endsWith('/') ? `${decoded}index.html` : decoded;
  const file = path.resolve(root, `.${path.posix.normalize(`/${rel}`)}`);
  if (file !== path.resolve(root) && !file.startsWith(path.resolve(root) + path.sep)) return null;
  try {
    return fs.statSync(file).isFile() ? file : null;
  } catch {
    return null;
  }
}

/** Starts the server; resolves once it listens, with its URL. */
export function serveWeb(
  root: string,
  port: number,
  host = '127.0.0.1',
): Promise<{ server: http.Server; url: string }> {
  if (!fs.existsSync(path.join(root, 'index.html'))) {
    return Promise.reject(
      new Error(`${root}: no built web app here; run \`npm run build:web\` first`),
    );
  }
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const file = resolveStatic(root, req.url ?? '/');
    if (!file) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    const headers: Record<string, string | number> = {
      'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'content-length': fs.statSync(file).size,
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
    };
    res.writeHead(200, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const addr = server.address();
      const actual = typeof addr === 'object' && addr ? addr.port : port;
      resolve({ server, url: `http://${host}:${actual}/` });
    });
  });
}

export function registerWebCommand(program: Command): void {
  program
    .command('web')
    .description('serve the browser app (fine-tune in a tab on WebGPU) on 127.0.0.1')
    .option(
      '-p, --port <n>',
      'port (default 8080; 0 picks a free one)',
      intOption('--port', 0),
      8080,
    )
    .action(async (flags: { port: number }) => {
      const { url } = await serveWeb(WEB_ROOT, flags.port);
      console.log(`qlora web: open ${url} in a browser with WebGPU (Ctrl-C stops the server)`);
      await new Promise<void>(() => {});
    });
}
