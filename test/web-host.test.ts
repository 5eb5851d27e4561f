// The browser's side of file access: the memory file system (user files as Blobs read by slices),
// installed as the library's host, must give the same model tensors, tokenizer, dataset and
// adapter files as node:fs — and read a model tensor by tensor, never whole.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import nodePath from 'node:path';
import { test } from 'node:test';
import { type HostPath, installHost } from '../src/io/host.js';
import { MemoryFs } from '../src/io/memory-fs.js';
import { posixPath } from '../src/io/posix-path.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { loadTokenizer, tokenizerPathFor } from '../src/tokenizer/index.js';
import { loadDataset } from '../src/data/dataset.js';
import { writeFileAtomic, writeAll } from '../src/io/atomic-write.js';
import { configFromHf } from '../src/io/config.js';
import { FIXTURES, STORIES, writeSyntheticHfFolder } from './export-support.js';
import { getBackend } from '../src/backends/index.js';
import { Batcher, type DataCursor } from '../src/data/batching.js';
import { buildLlama, type LoraConfig } from '../src/models/build.js';
import { Trainer, type TrainOptions } from '../src/train/trainer.js';
import { loadPeftAdapter } from '../src/io/peft.js';
import { exportGgufLora } from '../src/export/gguf-lora.js';

const GGUF = nodePath.join(STORIES, 'stories260K.gguf');
const SHAKESPEARE = nodePath.join(FIXTURES, 'datasets', 'tinyshakespeare', 'input.txt');

/** Blob reads in Node are async only: serve the synchronous ones from the same bytes, and record them. */
function mountedFs(files: Record<string, string>): { mem: MemoryFs; reads: number[] } {
  const bytesOf = new Map<Blob, Uint8Array>();
  const reads: number[] = [];
  const mem = new MemoryFs((blob, start, end) => {
    reads.push(end - start);
    return bytesOf.get(blob)!.slice(start, end);
  });
  for (const [at, file] of Object.entries(files)) {
    const bytes = new Uint8Array(fs.readFileSync(file));
    const blob = new Blob([bytes]);
    bytesOf.set(blob, bytes);
    mem.mount(at, blob);
  }
  return { mem, reads };
}

function withHost<T>(mem: MemoryFs, body: () => Promise<T> | T): Promise<T> {
  const previous = installHost({
    fs: mem.asHostFs(),
    path: posixPath as unknown as HostPath,
    process: {
      pid: 7,
      cpuCount: () => 1,
      totalMemoryBytes: () => 2 ** 32,
      peakRssBytes: () => 0,
      onInterrupt: () => () => {},
      yieldToEvents: () => new Promise((r) => setTimeout(r, 0)),
    },
  });
  return Promise.resolve()
    .then(body)
    .finally(() => installHost(previous));
}

test('a GGUF mounted as a Blob loads the same tensors and tokenizer as from disk, one tensor at a time', async () => {
  const disk = openCheckpoint(GGUF);
  const want = new Map(disk.tensorNames.map((n) => [n, disk.loadTensor(n)]));
  const wantIds = loadTokenizer(tokenizerPathFor(GGUF)).encode('Once upon a time, Lily', {
    addSpecialTokens: true,
  });
  disk.close();

  const { mem, reads } = mountedFs({ '/model/stories260K.gguf': GGUF });
  await withHost(mem, () => {
    const ck = openCheckpoint('/model/stories260K.gguf');
    assert.equal(ck.source, 'gguf');
    assert.equal(ck.config.hiddenSize, 64);
    for (const n of ck.tensorNames) assert.deepEqual(ck.loadTensor(n), want.get(n), n);
    ck.close();
    const tok = loadTokenizer(tokenizerPathFor('/model/stories260K.gguf'));
    assert.deepEqual(tok.encode('Once upon a time, Lily', { addSpecialTokens: true }), wantIds);
  });
  // Streaming: no read took the whole file; the biggest is the largest tensor (the embedding).
  const size = fs.statSync(GGUF).size;
  assert.ok(reads.length > 10);
  assert.ok(
    Math.max(...reads) <= 512 * 64 * 4 + 64,
    `largest read ${Math.max(...reads)} of a ${size}-byte file`,
  );
});

test('an HF safetensors folder mounted from Blobs gives the same tensors as from disk', async () => {
  const dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'qlora-web-hf-'));
  try {
    const hf = {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: 64,
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 128,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      tie_word_embeddings: false,
    };
    writeSyntheticHfFolder(dir, hf, configFromHf(hf, 'config.json'), 3);
    const disk = openCheckpoint(dir);
    const want = new Map(disk.tensorNames.map((n) => [n, disk.loadTensor(n)]));
    disk.close();
    const wantIds = loadTokenizer(dir).encode('Hello, world — ünïcødé', { addSpecialTokens: true });
    const files = Object.fromEntries(
      fs.readdirSync(dir).map((f) => [`/model/tiny/${f}`, nodePath.join(dir, f)]),
    );
    const { mem } = mountedFs(files);
    await withHost(mem, () => {
      const ck = openCheckpoint('/model/tiny');
      assert.equal(ck.source, 'hf');
      for (const n of ck.tensorNames) assert.deepEqual(ck.loadTensor(n), want.get(n), n);
      ck.close();
      assert.deepEqual(
        loadTokenizer('/model/tiny').encode('Hello, world — ünïcødé', { addSpecialTokens: true }),
        wantIds,
      );
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a dataset streamed from a Blob tokenizes exactly as from disk (text, JSONL, CSV)', async () => {
  const tok = loadTokenizer(tokenizerPathFor(GGUF));
  const dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'qlora-web-data-'));
  try {
    const jsonl = nodePath.join(dir, 'qa.jsonl');
    // Multi-byte characters across the 64 KiB stream chunks, CRLF endings, a last line without one.
    const rows = Array.from({ length: 900 }, (_, i) =>
      JSON.stringify({
        prompt: `Q${i}: ünïcødé ${'é'.repeat(i % 50)}?`,
        completion: ` A${i} — done.`,
      }),
    );
    fs.writeFileSync(jsonl, rows.join('\r\n'));
    const csv = nodePath.join(dir, 'qa.csv');
    fs.writeFileSync(csv, 'prompt,completion\n"Q, one?",A1\n"multi\nline",A2\n');
    for (const [file, at] of [
      [SHAKESPEARE, '/data/input.txt'],
      [jsonl, '/data/qa.jsonl'],
      [csv, '/data/qa.csv'],
    ] as const) {
      const want = await loadDataset(file, tok, { maxSeqLen: 64, validFraction: 0.1, seed: 1 });
      const { mem } = mountedFs({ [at]: file });
      const got = await withHost(mem, () =>
        loadDataset(at, tok, { maxSeqLen: 64, validFraction: 0.1, seed: 1 }),
      );
      assert.equal(got.format, want.format, at);
      assert.equal(got.train.length, want.train.length, at);
      assert.deepEqual(
        got.train.map((e) => Array.from(e.ids)),
        want.train.map((e) => Array.from(e.ids)),
        at,
      );
      assert.deepEqual(
        got.train.map((e) => Array.from(e.targets)),
        want.train.map((e) => Array.from(e.targets)),
        at,
      );
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('memory fs: atomic writes, renames of folders, recursive rm, and Node-like errors', async () => {
  const mem = new MemoryFs();
  await withHost(mem, () => {
    mem.mkdirSync('/out/.tmp-1', { recursive: true });
    writeFileAtomic('/out/.tmp-1/a.json', (fd) =>
      writeAll(fd, new TextEncoder().encode('{"x":1}')),
    );
    mem.appendFileSync('/out/.tmp-1/log.jsonl', 'one\n');
    mem.appendFileSync('/out/.tmp-1/log.jsonl', 'two\n');
    mem.renameSync('/out/.tmp-1', '/out/checkpoint-1');
    assert.deepEqual(mem.readdirSync('/out'), ['checkpoint-1']);
    assert.deepEqual(mem.readdirSync('/out/checkpoint-1'), ['a.json', 'log.jsonl']);
    assert.equal(mem.readFileSync('/out/checkpoint-1/log.jsonl', 'utf8'), 'one\ntwo\n');
    assert.equal(mem.statSync('/out/checkpoint-1/a.json')!.size, 7);
    assert.throws(() => mem.openSync('/out/checkpoint-1/a.json', 'wx'), { code: 'EEXIST' });
    // Numeric flags as the trainer's no-follow appends use them.
    const c = mem.constants;
    const fd = mem.openSync(
      '/out/checkpoint-1/log.jsonl',
      c.O_WRONLY | c.O_APPEND | c.O_CREAT | c.O_NOFOLLOW,
      0o644,
    );
    writeAll(fd, new TextEncoder().encode('three\n'));
    mem.closeSync(fd);
    assert.equal(mem.readFileSync('/out/checkpoint-1/log.jsonl', 'utf8'), 'one\ntwo\nthree\n');
    mem.writeFileSync('/out/checkpoint-1/log.jsonl', 'new\n');
    assert.equal(mem.readFileSync('/out/checkpoint-1/log.jsonl', 'utf8'), 'new\n');
    mem.mkdirSync('/out/empty');
    assert.throws(() => mem.rmdirSync('/out/checkpoint-1'), { code: 'ENOTEMPTY' });
    mem.rmdirSync('/out/empty');
    assert.throws(() => mem.readFileSync('/nope.txt'), { code: 'ENOENT' });
    assert.throws(() => mem.rmSync('/out'), /is a directory/);
    mem.rmSync('/out', { recursive: true });
    assert.equal(mem.existsSync('/out/checkpoint-1/a.json'), false);
    assert.throws(
      () => (mem.asHostFs() as unknown as { watch(): void }).watch(),
      /not available in the browser/,
    );
  });
});

test('posix path functions agree with node:path/posix', () => {
  const cases = [
    '/a/b/c.txt',
    'a/b/',
    '/',
    '',
    '.',
    '../x/./y',
    '/a//b/../c',
    'file.tar.gz',
    '.hidden',
    '/x/.hidden',
  ];
  for (const p of cases) {
    assert.equal(posixPath.dirname(p), nodePath.posix.dirname(p), `dirname(${p})`);
    assert.equal(posixPath.basename(p), nodePath.posix.basename(p), `basename(${p})`);
    assert.equal(posixPath.extname(p), nodePath.posix.extname(p), `extname(${p})`);
    assert.equal(posixPath.normalize(p), nodePath.posix.normalize(p), `normalize(${p})`);
    assert.equal(posixPath.isAbsolute(p), nodePath.posix.isAbsolute(p));
  }
  assert.equal(posixPath.basename('/a/b.txt', '.txt'), 'b');
  for (const args of [
    ['/a', 'b', '../c'],
    ['a', '', 'b/'],
    ['/a/', '/b'],
  ] as string[][]) {
    assert.equal(posixPath.join(...args), nodePath.posix.join(...args), `join(${args})`);
  }
  assert.equal(posixPath.resolve('/a/b', '../c', 'd'), '/a/c/d');
  assert.equal(posixPath.resolve('/a', '/x', 'y'), '/x/y');
  assert.equal(posixPath.relative('/a/b/c', '/a/d'), '../../d');
});

test('the Trainer runs on the memory file system as the browser worker runs it: checkpoints, resume, final adapter, GGUF LoRA', async () => {
  const { mem } = mountedFs({ '/model/stories260K.gguf': GGUF, '/data/input.txt': SHAKESPEARE });
  const backend = await getBackend('cpu');
  const lora: LoraConfig = {
    r: 4,
    alpha: 8,
    dropout: 0,
    useRslora: false,
    init: 'kaiming',
    seed: 1,
    targets: 'all-linear',
    layers: null,
  };
  await withHost(mem, async () => {
    const tok = loadTokenizer('/model/stories260K.gguf');
    const data = await loadDataset('/data/input.txt', tok, {
      maxSeqLen: 32,
      validFraction: 0.1,
      seed: 1,
    });
    const train = new Batcher(data.train, { batchSize: 2, seqLen: 32, seed: 1, padId: 0 });
    const options = (maxSteps: number, resume: boolean): TrainOptions => ({
      outputDir: '/out',
      maxSteps,
      lr: 1e-2,
      schedule: 'constant',
      warmupSteps: 0,
      gradAccum: 1,
      maxGradNorm: 1,
      weightDecay: 0,
      optimizer: 'adamw',
      seed: 1,
      gradientCheckpointing: true,
      lossChunkRows: 64,
      evalEvery: 0,
      saveEvery: 2,
      keepCheckpoints: 1,
      earlyStoppingPatience: 0,
      onNonFinite: 'stop',
      resume,
      baseModel: 'stories260K.gguf',
    });
    const runTo = async (maxSteps: number, resume: boolean) => {
      const ck = openCheckpoint('/model/stories260K.gguf');
      const model = await buildLlama(ck.config, ck, {
        backend,
        quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
        lora,
      });
      ck.close();
      let cursor: DataCursor = { epoch: 0, index: 0 };
      const source = {
        next: () => {
          const r = train.next(cursor);
          cursor = r.cursor;
          return r.batch;
        },
        cursor: () => cursor,
        restore: (c: unknown) => (cursor = c as DataCursor),
      };
      const trainer = new Trainer(model, options(maxSteps, resume), source, null);
      try {
        return await trainer.run();
      } finally {
        trainer.dispose();
        model.dispose();
      }
    };
    assert.equal((await runTo(2, false)).steps, 2);
    assert.ok(mem.existsSync('/out/checkpoint-2/optimizer.safetensors'));
    const resumed = await runTo(3, true);
    assert.equal(resumed.steps, 3);
    const steps = (mem.readFileSync('/out/metrics.jsonl', 'utf8') as string)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l).step);
    assert.deepEqual(steps, [1, 2, 3]);
    for (const f of [
      'adapter_config.json',
      'adapter_model.safetensors',
      'loss.svg',
      'checkpoint-3/trainer_state.json',
    ]) {
      assert.ok(mem.existsSync(`/out/${f}`), f);
    }
    const adapter = loadPeftAdapter('/out');
    assert.equal(adapter.lora.r, 4);
    exportGgufLora(adapter, openCheckpoint('/model/stories260K.gguf').config, '/out/adapter.gguf');
    assert.ok(mem.statSync('/out/adapter.gguf')!.size > 1000);
  });
});
