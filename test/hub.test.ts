// Hub models and datasets against a local mock of the Hub (test/hub-mock.ts) and temporary cache
// folders: nothing reaches the network. The model served is stories260K converted to an HF folder
// by our own export and split into two safetensors shards with an index; the dataset is
// fixtures/datasets/hub-parquet (push_to_hub layout).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { main } from '../src/cli/main.js';
import { readConfigFile } from '../src/cli/train-config.js';
import { isHubModelId } from '../src/cli/hub-args.js';
import { readSplit, resolveSources } from '../src/data/sources.js';
import { convertCheckpoint } from '../src/export/convert.js';
import { hubEnv, type HubEnv } from '../src/hub/env.js';
import { parseHubId } from '../src/hub/repo-id.js';
import { resolveHubDataset, resolveHubModel, type HubProgress } from '../src/hub/resolve.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { writeSafetensors, writeSafetensorsIndex } from '../src/io/safetensors.js';
import { FIXTURES, STORIES } from './export-support.js';
import { gitOid, type MockHub, type MockRepo, sha256, startMockHub } from './hub-mock.js';

const SHA = 'a'.repeat(39) + '1';
const GGUF_SHA = 'b'.repeat(39) + '2';
const DATA_SHA = 'c'.repeat(39) + '3';
const GATED_SHA = 'd'.repeat(39) + '4';

let tmp: string;
let hf: string;
let hub: MockHub;
let modelFiles: Map<string, Buffer>;

function readDir(dir: string, rel = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of fs.readdirSync(path.join(dir, rel))) {
    const r = rel ? `${rel}/${name}` : name;
    if (fs.statSync(path.join(dir, r)).isDirectory())
      for (const [k, v] of readDir(dir, r)) out.set(k, v);
    else out.set(r, fs.readFileSync(path.join(dir, r)));
  }
  return out;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-hub-'));
  // stories260K as an HF folder (our own export), re-split into two shards with an index.
  hf = path.join(tmp, 'hf');
  convertCheckpoint(path.join(STORIES, 'stories260K.gguf'), hf);
  const ck = openCheckpoint(hf);
  const names = [...ck.tensorNames];
  const half = Math.ceil(names.length / 2);
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const [i, part] of [names.slice(0, half), names.slice(half)].entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(
      path.join(hf, file),
      part.map((name) => {
        const data = ck.loadTensor(name);
        total += data.byteLength;
        weightMap[name] = file;
        return { name, dtype: 'F32', shape: [...ck.shapeOf(name)], data };
      }),
      { format: 'pt' },
    );
  }
  ck.close();
  fs.rmSync(path.join(hf, 'model.safetensors'));
  writeSafetensorsIndex(hf, weightMap, total);
  modelFiles = readDir(hf);
  // Files a model repository also holds that loading never needs: never asked for.
  const served = new Map(modelFiles);
  served.set('README.md', Buffer.from('# stories260K\n'));
  served.set('pytorch_model.bin', Buffer.alloc(4096, 7));
  served.set('original/params.json', Buffer.from('{"dim": 64}\n'));

  const gguf = fs.readFileSync(path.join(STORIES, 'stories260K.gguf'));
  const repos: MockRepo[] = [
    { type: 'model', name: 'test/stories', sha: SHA, files: served },
    {
      type: 'model',
      name: 'test/stories-gguf',
      sha: GGUF_SHA,
      files: new Map([
        ['stories260K-F32.gguf', gguf],
        ['stories260K-Q8_0.gguf', Buffer.concat([gguf, Buffer.alloc(32)])],
        ['README.md', Buffer.from('# GGUF\n')],
      ]),
    },
    {
      type: 'model',
      name: 'test/gated',
      sha: GATED_SHA,
      files: new Map(modelFiles),
      gatedToken: 'hf_right',
    },
    {
      type: 'dataset',
      name: 'test/identity',
      sha: DATA_SHA,
      files: new Map([
        ...readDir(path.join(FIXTURES, 'datasets', 'hub-parquet')),
        // Not named by the README's configs: never fetched.
        [
          'raw/identity.json',
          fs.readFileSync(
            path.join(FIXTURES, 'datasets', 'llamafactory_identity', 'identity.json'),
          ),
        ],
      ]),
    },
  ];
  hub = await startMockHub(repos);
});

after(async () => {
  await hub?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function envWith(cacheName: string, over: Partial<HubEnv> = {}): HubEnv {
  return {
    endpoint: hub.url,
    cacheDir: path.join(tmp, cacheName),
    token: undefined,
    offline: false,
    ...over,
  };
}

const model = (name: string, revision = 'main') => parseHubId(`${name}@${revision}`, 'model')!;

/** Runs the CLI in this process with these environment variables; restores them after. */
async function cli(args: string[], env: Record<string, string>): Promise<number> {
  const saved: Record<string, string | undefined> = {};
  const keys = [
    'HF_HUB_CACHE',
    'HF_HOME',
    'HF_ENDPOINT',
    'HF_HUB_OFFLINE',
    'HF_TOKEN',
    ...Object.keys(env),
  ];
  for (const k of keys) saved[k] = process.env[k];
  for (const k of keys) delete process.env[k];
  Object.assign(process.env, env);
  const log = console.log;
  const write = process.stdout.write;
  console.log = () => {};
  process.stdout.write = (() => true) as typeof process.stdout.write;
  // main() reports process.exitCode when set, and the test runner sets it when a test fails.
  const exitCode = process.exitCode;
  process.exitCode = undefined;
  try {
    return await main(args);
  } finally {
    process.exitCode = exitCode;
    console.log = log;
    process.stdout.write = write;
    for (const k of keys) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

test('Hub ids: org/name[@revision] parses; paths, file names and odd revisions do not', () => {
  assert.deepEqual(parseHubId('TinyLlama/TinyLlama-1.1B-Chat-v1.0', 'model'), {
    type: 'model',
    name: 'TinyLlama/TinyLlama-1.1B-Chat-v1.0',
    revision: 'main',
  });
  assert.equal(
    parseHubId('org/name@refs/convert/parquet', 'dataset')?.revision,
    'refs/convert/parquet',
  );
  for (const bad of [
    'name',
    'a/b/c',
    './a/b',
    '/abs/x',
    'org/model.gguf',
    'org/data.jsonl',
    'a/b@',
    'a/b@../x',
    'a/..',
  ])
    assert.equal(parseHubId(bad, 'model'), null, bad);
  // A path that exists is never a Hub id.
  assert.equal(isHubModelId('fixtures/stories260K'), false);
  assert.equal(isHubModelId('fixtures/no-such-thing'), true);
});

test('environment: HF_HUB_CACHE, else HF_HOME/hub, else XDG; the token from HF_TOKEN, else $HF_HOME/token', () => {
  const home = path.join(tmp, 'home');
  fs.mkdirSync(home, { recursive: true });
  fs.writeFileSync(path.join(home, 'token'), 'hf_fromfile\n');
  assert.equal(hubEnv({ HF_HOME: home }).cacheDir, path.join(home, 'hub'));
  assert.equal(hubEnv({ HF_HOME: home }).token, 'hf_fromfile');
  assert.equal(hubEnv({ HF_HOME: home, HF_TOKEN: 'hf_env' }).token, 'hf_env');
  assert.equal(hubEnv({ HF_HOME: home, HF_HUB_CACHE: '/c' }).cacheDir, path.resolve('/c'));
  assert.equal(hubEnv({ XDG_CACHE_HOME: '/x' }).cacheDir, path.resolve('/x/huggingface/hub'));
  assert.equal(hubEnv({ HF_ENDPOINT: 'http://127.0.0.1:1/' }).endpoint, 'http://127.0.0.1:1');
  assert.equal(hubEnv({ HF_HUB_OFFLINE: '1' }).offline, true);
  assert.equal(hubEnv({ HF_HUB_OFFLINE: '0' }).offline, false);
});

test('a model downloads into the Python cache layout (only the files needed), then the cache answers with no request', async () => {
  const env = envWith('cache-download');
  hub.requests.length = 0;
  const progress: HubProgress[] = [];
  const r = await resolveHubModel(model('test/stories'), {
    env,
    onProgress: (p) => progress.push(p),
  });
  const folder = path.join(env.cacheDir, 'models--test--stories');
  assert.equal(r.fromCache, false);
  assert.equal(r.path, path.join(folder, 'snapshots', SHA));
  assert.equal(fs.readFileSync(path.join(folder, 'refs', 'main'), 'utf8'), SHA);
  // Snapshot files are relative symlinks to blobs named by the Hub's ETag (sha256 for LFS files).
  const shard = 'model-00002-of-00002.safetensors';
  assert.ok(fs.lstatSync(path.join(r.path, shard)).isSymbolicLink());
  assert.equal(
    fs.readlinkSync(path.join(r.path, shard)),
    `../../blobs/${sha256(modelFiles.get(shard)!)}`,
  );
  assert.equal(
    fs.readlinkSync(path.join(r.path, 'config.json')),
    `../../blobs/${gitOid(modelFiles.get('config.json')!)}`,
  );
  assert.deepEqual(new Set(fs.readdirSync(r.path)), new Set(modelFiles.keys()));
  assert.equal(fs.readdirSync(path.join(folder, 'blobs')).length, modelFiles.size);
  const resolved = hub.requests.filter((q) => q.path.includes('/resolve/')).map((q) => q.path);
  for (const never of ['README.md', 'pytorch_model.bin', 'original/params.json'])
    assert.ok(!resolved.some((p) => p.endsWith(never)), `${never} was requested`);
  assert.ok(
    hub.requests.some((q) => q.path.startsWith('/cdn/')),
    'the LFS redirect was followed',
  );
  const last = progress.at(-1)!;
  assert.equal(last.done, last.total);
  assert.equal(
    last.total,
    [...modelFiles.values()].reduce((a, b) => a + b.length, 0),
  );
  // The downloaded shards hold the exported tensors.
  const a = openCheckpoint(r.path);
  const b = openCheckpoint(path.join(STORIES, 'stories260K.gguf'));
  try {
    assert.deepEqual(
      a.loadTensor('model.layers.4.mlp.down_proj.weight'),
      b.loadTensor('model.layers.4.mlp.down_proj.weight'),
    );
  } finally {
    a.close();
    b.close();
  }

  hub.requests.length = 0;
  const again = await resolveHubModel(model('test/stories'), { env });
  assert.equal(again.fromCache, true);
  assert.equal(again.path, r.path);
  // The CLI takes the id too, from the same cache, and still asks nothing.
  assert.equal(
    await cli(['generate', '-m', 'test/stories', '-p', 'Once', '-t', '0', '--max-tokens', '4'], {
      HF_HUB_CACHE: env.cacheDir,
      HF_ENDPOINT: hub.url,
    }),
    0,
  );
  assert.equal(hub.requests.length, 0);
});

test('a cache populated by hand in the Python layout is used offline (HF_HOME, HF_HUB_OFFLINE=1), by branch and by commit', async () => {
  const home = path.join(tmp, 'py-home');
  const folder = path.join(home, 'hub', 'models--someone--stories-py');
  const commit = 'e'.repeat(40);
  const snap = path.join(folder, 'snapshots', commit);
  fs.mkdirSync(path.join(folder, 'blobs'), { recursive: true });
  fs.mkdirSync(path.join(folder, 'refs'), { recursive: true });
  fs.mkdirSync(snap, { recursive: true });
  for (const [name, data] of modelFiles) {
    const etag = name.endsWith('.safetensors') ? sha256(data) : gitOid(data);
    fs.writeFileSync(path.join(folder, 'blobs', etag), data);
    fs.symlinkSync(`../../blobs/${etag}`, path.join(snap, name));
  }
  fs.writeFileSync(path.join(folder, 'refs', 'main'), commit);
  const env = { HF_HOME: home, HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' };
  hub.requests.length = 0;
  assert.equal(await cli(['info', 'someone/stories-py'], env), 0);
  assert.equal(await cli(['info', `someone/stories-py@${commit}`], env), 0);
  const r = await resolveHubModel(model('someone/stories-py'), { env: hubEnv(env) });
  assert.equal(r.path, snap);
  assert.equal(r.fromCache, true);
  // Offline and not cached: a message that says so, no request.
  await assert.rejects(
    resolveHubModel(model('someone/other'), { env: hubEnv(env) }),
    /someone\/other: the model is not in the Hugging Face cache .* and HF_HUB_OFFLINE is set/,
  );
  assert.equal(hub.requests.length, 0);
});

test('an interrupted download resumes from its .incomplete file with a range request', async () => {
  const env = envWith('cache-resume');
  const shard = 'model-00002-of-00002.safetensors';
  const data = modelFiles.get(shard)!;
  hub.cutOnce.set(shard, 5000);
  await assert.rejects(
    resolveHubModel(model('test/stories'), { env }),
    /download of test\/stories\/model-00002-of-00002\.safetensors stopped at \d+ of \d+ bytes .*run the command again to resume it/,
  );
  const folder = path.join(env.cacheDir, 'models--test--stories');
  const incomplete = path.join(folder, 'blobs', `${sha256(data)}.incomplete`);
  const have = fs.statSync(incomplete).size;
  assert.ok(have > 0 && have <= 5000, `${have} bytes kept`);
  // No snapshot yet: a half-fetched model never looks complete.
  assert.equal(fs.existsSync(path.join(folder, 'snapshots', SHA)), false);
  hub.requests.length = 0;
  const r = await resolveHubModel(model('test/stories'), { env });
  assert.ok(
    hub.requests.some(
      (q) => q.path.startsWith('/cdn/') && q.range === `bytes=${have}-${data.length - 1}`,
    ),
    `asked for bytes ${have}- : ${JSON.stringify(hub.requests.map((q) => q.range))}`,
  );
  // The other files were not fetched again.
  assert.ok(!hub.requests.some((q) => q.path.endsWith('model-00001-of-00002.safetensors')));
  assert.deepEqual(fs.readFileSync(path.join(r.path, shard)), data);
  assert.equal(fs.existsSync(incomplete), false);
});

test('a gated model: a message with its URL without a token or with one lacking access; the token file works', async () => {
  const env = envWith('cache-gated');
  const url = `${hub.url}/test/gated`;
  await assert.rejects(
    resolveHubModel(model('test/gated'), { env }),
    (e: Error) =>
      e.message.includes('needs a login') &&
      e.message.includes(`accept its terms at ${url}`) &&
      e.message.includes('HF_TOKEN') &&
      e.message.includes('No token is set'),
  );
  await assert.rejects(
    resolveHubModel(model('test/gated'), { env: { ...env, token: 'hf_wrong' } }),
    (e: Error) => e.message.includes(`request access at ${url}`),
  );
  const home = path.join(tmp, 'gated-home');
  fs.mkdirSync(home, { recursive: true });
  fs.writeFileSync(path.join(home, 'token'), 'hf_right\n');
  const r = await resolveHubModel(model('test/gated'), {
    env: hubEnv({ HF_HOME: home, HF_ENDPOINT: hub.url }),
  });
  assert.ok(fs.existsSync(path.join(r.path, 'model.safetensors.index.json')));
  await assert.rejects(
    resolveHubModel(model('test/missing'), { env }),
    (e: Error) =>
      e.message.includes('no model test/missing') && e.message.includes(`${hub.url}/test/missing`),
  );
  await assert.rejects(
    resolveHubModel(model('test/stories', 'v9'), { env }),
    /no model test\/stories at revision v9/,
  );
});

test('--gguf-file picks one GGUF file of a repository and fetches only it', async () => {
  const env = envWith('cache-gguf');
  hub.requests.length = 0;
  const r = await resolveHubModel(model('test/stories-gguf'), { env, ggufFile: 'F32' });
  assert.equal(path.basename(r.path), 'stories260K-F32.gguf');
  assert.ok(!hub.requests.some((q) => q.path.includes('Q8_0')));
  assert.deepEqual(fs.readdirSync(path.dirname(r.path)), ['stories260K-F32.gguf']);
  const again = await resolveHubModel(model('test/stories-gguf'), { env, ggufFile: '*F32.gguf' });
  assert.equal(again.fromCache, true);
  // In a fresh cache, a pattern matching two files of the repository is refused.
  await assert.rejects(
    resolveHubModel(model('test/stories-gguf'), {
      env: envWith('cache-gguf-2'),
      ggufFile: '*.gguf',
    }),
    /matches 2 files/,
  );
  await assert.rejects(
    resolveHubModel(model('test/stories-gguf'), { env }),
    /holds GGUF files.*--gguf-file/,
  );
  assert.equal(
    await cli(['info', 'test/stories-gguf', '--gguf-file', 'F32'], {
      HF_HUB_CACHE: env.cacheDir,
      HF_HUB_OFFLINE: '1',
    }),
    0,
  );
});

test("a Hub dataset: the README's parquet splits load (shards in order), --split picks one, other files stay on the Hub", async () => {
  const env = envWith('cache-data');
  const ref = parseHubId('test/identity', 'dataset')!;
  hub.requests.length = 0;
  const r = await resolveHubDataset(ref, { env });
  assert.equal(r.path, path.join(env.cacheDir, 'datasets--test--identity', 'snapshots', DATA_SHA));
  assert.ok(!hub.requests.some((q) => q.path.includes('raw/identity.json')));
  const sources = await resolveSources(r.path);
  assert.deepEqual(
    sources.train.files.map((f) => path.basename(f.path)),
    ['train-00000-of-00002.parquet', 'train-00001-of-00002.parquet'],
  );
  const rows: unknown[] = [];
  for await (const row of readSplit(sources.train)) rows.push(row.value);
  assert.equal(rows.length, 24);
  const json = JSON.parse(
    fs.readFileSync(
      path.join(FIXTURES, 'datasets', 'llamafactory_identity', 'identity.json'),
      'utf8',
    ),
  ) as unknown[];
  assert.deepEqual(rows, json.slice(0, 24));
  const test = await resolveSources(r.path, { split: 'test' });
  let n = 0;
  for await (const row of readSplit(test.train)) {
    assert.deepEqual(row.value, json[24 + n]);
    n++;
  }
  assert.equal(n, 8);
  await assert.rejects(
    resolveSources(r.path, { split: 'dev' }),
    /no 'dev' split \(it has: train, test\)/,
  );
  await assert.rejects(
    resolveHubDataset(ref, { env, split: 'dev' }),
    /no 'dev' split \(it has: train, test\)/,
  );
  // Through the CLI, from the cache.
  hub.requests.length = 0;
  assert.equal(
    await cli(
      [
        'data',
        'inspect',
        'test/identity',
        '-m',
        path.join(STORIES, 'stories260K.gguf'),
        '--split',
        'test',
      ],
      {
        HF_HUB_CACHE: env.cacheDir,
        HF_ENDPOINT: hub.url,
      },
    ),
    0,
  );
  assert.equal(hub.requests.length, 0);
});

test('train on a Hub model and a Hub dataset; the adapter records the id, and generate -a finds the base through the cache offline', async () => {
  const cache = path.join(tmp, 'cache-train');
  const out = path.join(tmp, 'run');
  const online = { HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url };
  assert.equal(
    await cli(
      [
        'train',
        '-m',
        'test/stories',
        '-d',
        'test/identity',
        '-o',
        out,
        '--max-steps',
        '2',
        '--seq-len',
        '320',
        '--batch-size',
        '1',
        '--eval-every',
        '0',
        '--save-every',
        '0',
        '--sample-tokens',
        '0',
      ],
      online,
    ),
    0,
  );
  const peft = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(peft.base_model_name_or_path, 'test/stories');
  const recipe = JSON.parse(fs.readFileSync(path.join(out, 'qlora_config.json'), 'utf8'));
  assert.equal(recipe.base_model_path, 'test/stories');
  hub.requests.length = 0;
  assert.equal(
    await cli(['generate', '-a', out, '-p', 'Hi', '--max-tokens', '2'], {
      HF_HUB_CACHE: cache,
      HF_HUB_OFFLINE: '1',
    }),
    0,
  );
  assert.equal(hub.requests.length, 0);
});

test('a run YAML keeps Hub ids as ids (paths in it are relative to the file)', () => {
  const dir = path.join(tmp, 'yaml');
  fs.mkdirSync(path.join(dir, 'local'), { recursive: true });
  const file = path.join(dir, 'run.yaml');
  fs.writeFileSync(
    file,
    'model: org/some-model@v1\ndata: org/some-data\noutput: out\nsplit: train_sft\n',
  );
  const { values } = readConfigFile(file);
  assert.equal(values.model, 'org/some-model@v1');
  assert.equal(values.data, 'org/some-data');
  assert.equal(values.output, path.join(dir, 'out'));
  assert.equal(values.split, 'train_sft');
  fs.writeFileSync(file, 'model: local\n');
  assert.equal(readConfigFile(file).values.model, path.join(dir, 'local'));
});

test('two runs fetching one model download each file once; a lock left by a dead process is taken over', async () => {
  const env = envWith('cache-concurrent');
  const folder = path.join(env.cacheDir, 'models--test--stories');
  const shard = 'model-00001-of-00002.safetensors';
  const locks = path.join(env.cacheDir, '.locks', 'models--test--stories');
  fs.mkdirSync(locks, { recursive: true });
  fs.writeFileSync(path.join(locks, `${sha256(modelFiles.get(shard)!)}.qlora-lock`), '999999999');
  hub.requests.length = 0;
  const [a, b] = await Promise.all([
    resolveHubModel(model('test/stories'), { env }),
    resolveHubModel(model('test/stories'), { env }),
  ]);
  assert.equal(a.path, b.path);
  const bodies = hub.requests.filter((q) => q.path.startsWith('/cdn/') && q.range !== 'bytes=0-0');
  assert.equal(bodies.length, 2, JSON.stringify(bodies));
  assert.deepEqual(fs.readFileSync(path.join(a.path, shard)), modelFiles.get(shard));
  assert.deepEqual(fs.readdirSync(locks), []);
  assert.ok(fs.existsSync(path.join(folder, 'refs', 'main')));
});
