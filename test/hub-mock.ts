// A local stand-in for the Hugging Face Hub's HTTP API, as @huggingface/hub calls it: repository
// info (/api/models|datasets/<id>/revision/<rev> with `sha`), the recursive tree listing (paged with
// Link headers), and resolve/<rev>/<file> URLs that answer with X-Repo-Commit and ETag /
// X-Linked-Etag / X-Linked-Size headers, redirecting LFS files (weights, parquet) to a CDN path that
// serves byte ranges. A repository can be gated (401 without a token, 403 with the wrong one), and
// a file can be cut off part-way once, like a dropped connection. Listens on 127.0.0.1, port 0.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MockRepo {
  readonly type: 'model' | 'dataset';
  readonly name: string;
  readonly sha: string;
  readonly files: ReadonlyMap<string, Buffer>;
  /** Gated: resolve needs `Authorization: Bearer <token>`. */
  readonly gatedToken?: string;
}

export interface MockRequest {
  readonly method: string;
  readonly path: string;
  readonly range: string | undefined;
  readonly auth: string | undefined;
}

export interface MockHub {
  readonly url: string;
  readonly requests: MockRequest[];
  /** Repository file path → bytes to send before the connection drops (once). */
  readonly cutOnce: Map<string, number>;
  close(): Promise<void>;
}

const isLfs = (p: string) => /\.(safetensors|gguf|parquet|bin|pth)$/.test(p);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitOid = (b: Buffer) =>
  createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

function pointer(b: Buffer): Buffer {
  return Buffer.from(
    `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(b)}\nsize ${b.length}\n`,
  );
}

function json(res: http.ServerResponse, status: number, body: unknown, headers = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

export async function startMockHub(repos: readonly MockRepo[]): Promise<MockHub> {
  const requests: MockRequest[] = [];
  const cutOnce = new Map<string, number>();
  const byHash = new Map<string, { file: string; data: Buffer }>();
  for (const r of repos)
    for (const [file, data] of r.files) if (isLfs(file)) byHash.set(sha256(data), { file, data });
  const find = (type: string, name: string) =>
    repos.find((r) => r.type === type && r.name === name);

  function serve(req: http.IncomingMessage, res: http.ServerResponse, file: string, data: Buffer) {
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = data.length - 1;
    if (m) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
      if (start >= data.length) {
        res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
        res.end();
        return;
      }
    }
    const body = data.subarray(start, end + 1);
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Content-Length': body.length,
      'Accept-Ranges': 'bytes',
      ETag: `"${isLfs(file) ? sha256(data) : gitOid(data)}"`,
    };
    if (m) headers['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
    res.writeHead(m ? 206 : 200, headers);
    const cut = cutOnce.get(file);
    if (cut !== undefined && body.length > 1) {
      cutOnce.delete(file);
      res.write(body.subarray(0, cut), () => {
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    res.end(body);
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    requests.push({
      method: req.method ?? 'GET',
      path: url.pathname + url.search,
      range: req.headers.range,
      auth: req.headers.authorization,
    });
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);

    if (parts[0] === 'cdn' && parts.length === 2) {
      const hit = byHash.get(parts[1]!);
      if (!hit) return json(res, 404, { error: 'not found' });
      return serve(req, res, hit.file, hit.data);
    }

    if (parts[0] === 'api' && (parts[1] === 'models' || parts[1] === 'datasets')) {
      const type = parts[1] === 'models' ? 'model' : 'dataset';
      const repo = find(type, `${parts[2]}/${parts[3]}`);
      if (!repo)
        return json(
          res,
          404,
          { error: 'Repository not found' },
          { 'X-Error-Code': 'RepositoryNotFound' },
        );
      const rev = parts[5];
      const known = rev === 'main' || rev === 'HEAD' || rev === repo.sha;
      if (!known)
        return json(
          res,
          404,
          { error: `Invalid rev id: ${rev}` },
          { 'X-Error-Code': 'RevisionNotFound' },
        );
      if (parts[4] === 'revision') {
        return json(res, 200, {
          _id: `id-${repo.name}`,
          id: repo.name,
          sha: repo.sha,
          private: false,
          gated: repo.gatedToken ? 'manual' : false,
          downloads: 0,
          likes: 0,
          lastModified: '2024-01-01T00:00:00.000Z',
        });
      }
      if (parts[4] === 'tree') {
        const dirs = new Set<string>();
        for (const f of repo.files.keys()) {
          const segs = f.split('/');
          for (let i = 1; i < segs.length; i++) dirs.add(segs.slice(0, i).join('/'));
        }
        const entries: unknown[] = [
          ...[...dirs].map((d) => ({
            type: 'directory',
            path: d,
            oid: gitOid(Buffer.from(d)),
            size: 0,
          })),
          ...[...repo.files].map(([f, data]) =>
            isLfs(f)
              ? {
                  type: 'file',
                  path: f,
                  size: data.length,
                  oid: gitOid(pointer(data)),
                  lfs: { oid: sha256(data), size: data.length, pointerSize: pointer(data).length },
                }
              : { type: 'file', path: f, size: data.length, oid: gitOid(data) },
          ),
        ];
        // Pages of 4, linked as the Hub links them.
        const cursor = Number(url.searchParams.get('cursor') ?? 0);
        const page = entries.slice(cursor, cursor + 4);
        const headers: Record<string, string> = {};
        if (cursor + 4 < entries.length) {
          const next = new URL(url.toString());
          next.host = req.headers.host!;
          next.searchParams.set('cursor', String(cursor + 4));
          headers.Link = `<${next.toString()}>; rel="next"`;
        }
        return json(res, 200, page, headers);
      }
      return json(res, 404, { error: 'unknown endpoint' });
    }

    // <org>/<name>/resolve/<rev>/<file...>, datasets/ in front for datasets.
    const type = parts[0] === 'datasets' ? 'dataset' : 'model';
    const p = type === 'dataset' ? parts.slice(1) : parts;
    if (p[2] === 'resolve' && p.length >= 5) {
      const repo = find(type, `${p[0]}/${p[1]}`);
      if (!repo)
        return json(
          res,
          404,
          { error: 'Repository not found' },
          { 'X-Error-Code': 'RepositoryNotFound' },
        );
      if (repo.gatedToken) {
        if (!req.headers.authorization)
          return json(
            res,
            401,
            {
              error: `Access to model ${repo.name} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
            },
            { 'X-Error-Code': 'GatedRepo' },
          );
        if (req.headers.authorization !== `Bearer ${repo.gatedToken}`)
          return json(
            res,
            403,
            {
              error: `Access to model ${repo.name} is restricted and you are not in the authorized list.`,
            },
            { 'X-Error-Code': 'GatedRepo' },
          );
      }
      const rev = p[3];
      if (rev !== 'main' && rev !== repo.sha)
        return json(
          res,
          404,
          { error: 'Revision not found' },
          { 'X-Error-Code': 'RevisionNotFound' },
        );
      const file = p.slice(4).join('/');
      const data = repo.files.get(file);
      if (!data)
        return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      if (isLfs(file)) {
        // Another host, as the Hub's CDN is (`localhost` for `127.0.0.1`, both loopback): Python's
        // huggingface_hub reads the commit and linked etag from this response and does not follow
        // a HEAD redirect off the Hub's host.
        const port = (server.address() as AddressInfo).port;
        res.writeHead(302, {
          Location: `http://localhost:${port}/cdn/${sha256(data)}`,
          'X-Repo-Commit': repo.sha,
          'X-Linked-Etag': `"${sha256(data)}"`,
          'X-Linked-Size': String(data.length),
          ETag: `"${gitOid(pointer(data))}"`,
        });
        res.end();
        return;
      }
      res.setHeader('X-Repo-Commit', repo.sha);
      return serve(req, res, file, data);
    }
    json(res, 404, { error: 'not found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    cutOnce,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export { gitOid, sha256 };
