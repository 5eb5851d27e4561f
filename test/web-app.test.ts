// The browser app's Node-side parts: the bundle builds for browsers with no Node built-in in it (and
// the build fails when one sneaks in), `qlora web` serves it on 127.0.0.1 and nothing outside it,
// and the device-fit check says why a run does not fit a WebGPU device.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as esbuild from 'esbuild';
import { webBuildOptions } from '../scripts/build-web.js';
import { resolveStatic, serveWeb } from '../src/cli/web.js';
import { deviceFit } from '../src/train/device-fit.js';
import { planTraining } from '../src/train/plan.js';
import { configFromGguf } from '../src/io/config.js';
import { readGgufMetadata } from '../src/io/gguf.js';
import { STORIES } from './export-support.js';

test('the web app bundles for browsers, and its worker holds the library without any Node built-in', async () => {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-web-build-'));
  try {
    const r = await esbuild.build({
      ...webBuildOptions(outdir),
      write: false,
      sourcemap: false,
      metafile: true,
      logLevel: 'silent',
    });
    assert.deepEqual(r.errors, []);
    const worker = r.outputFiles.find((f) => f.path.endsWith('worker.js'))!;
    assert.ok(worker, 'worker.js is built');
    const inputs = Object.keys(r.metafile.inputs);
    for (const m of [
      'src/train/trainer.ts',
      'src/io/gguf.ts',
      'src/io/memory-fs.ts',
      'src/backends/webgpu/index.ts',
      'src/data/dataset.ts',
    ]) {
      assert.ok(inputs.includes(m), `${m} is in the bundle`);
    }
    assert.ok(
      !inputs.some((i) => i.startsWith('src/backends/cpu/')),
      'the native backend stays out',
    );
    assert.doesNotMatch(worker.text, /from\s*["']node:|require\(["']node:/);
  } finally {
    fs.rmSync(outdir, { recursive: true, force: true });
  }
});

test('a Node built-in reaching the browser bundle fails the build', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-web-guard-'));
  try {
    // A library module that imports node:fs statically, as a careless change would.
    const entry = path.join(dir, 'entry.ts');
    fs.writeFileSync(
      entry,
      "import fs from 'node:fs';\nexport const size = fs.statSync('x').size;\n",
    );
    const options = webBuildOptions(dir);
    await assert.rejects(
      esbuild.build({ ...options, entryPoints: { entry }, write: false, logLevel: 'silent' }),
      /node:fs/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('qlora web serves the app on 127.0.0.1 and nothing outside its folder', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-web-root-'));
  const secret = path.join(path.dirname(root), `${path.basename(root)}-secret.txt`);
  fs.writeFileSync(secret, 'private');
  fs.writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>app</title>');
  fs.writeFileSync(path.join(root, 'app.js'), 'console.log(1)');
  const { server, url } = await serveWeb(root, 0);
  try {
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const index = await fetch(url);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type')!, /text\/html/);
    assert.match(await index.text(), /<title>app<\/title>/);
    const js = await fetch(`${url}app.js`);
    assert.match(js.headers.get('content-type')!, /javascript/);
    for (const p of [
      'missing.js',
      `..%2f${path.basename(secret)}`,
      `%2e%2e/${path.basename(secret)}`,
      '%00',
    ]) {
      assert.equal((await fetch(`${url}${p}`)).status, 404, p);
    }
    assert.equal(resolveStatic(root, `/../${path.basename(secret)}`), null);
    assert.equal((await fetch(url, { method: 'POST' })).status, 405);
  } finally {
    server.close();
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(secret, { force: true });
  }
  await assert.rejects(serveWeb(path.join(root, 'nowhere'), 0), /npm run build:web/);
});

test('device fit: stories260K fits a browser adapter; a 7B shape names the tensor over the binding limit', async () => {
  const small = configFromGguf(
    readGgufMetadata(path.join(STORIES, 'stories260K.gguf')),
    { tieWordEmbeddings: true, embeddingRows: 512 },
    'stories260K.gguf',
  );
  const swiftshader = { maxBufferSize: 2 ** 30, maxStorageBufferBindingSize: 2 ** 30 };
  const fitSmall = deviceFit(
    small,
    await planTraining(small, { seqLen: 64, batchSize: 2, rank: 4 }),
    swiftshader,
  );
  assert.equal(fitSmall.fits, true);
  assert.deepEqual(fitSmall.reasons, []);

  const llama7b = {
    vocabSize: 32000,
    hiddenSize: 4096,
    intermediateSize: 11008,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 32,
    headDim: 128,
    tieWordEmbeddings: false,
    maxPositionEmbeddings: 4096,
    attentionBias: false,
  };
  const plan = await planTraining(llama7b, { seqLen: 512, batchSize: 1, rank: 16 });
  const webgpuDefaults = {
    maxBufferSize: 256 * 2 ** 20,
    maxStorageBufferBindingSize: 128 * 2 ** 20,
  };
  const fit = deviceFit(llama7b, plan, webgpuDefaults);
  assert.equal(fit.fits, false);
  // Weights are bound in row windows, so the table must fit one buffer, not one binding.
  assert.match(
    fit.reasons.join('\n'),
    /embedding table 32000 × 4096 f32 takes 500\.0 MiB, over this GPU's maxBufferSize of 256\.0 MiB/,
  );
  const bigBuffers = deviceFit(llama7b, plan, {
    maxBufferSize: 2 ** 32,
    maxStorageBufferBindingSize: 128 * 2 ** 20,
  });
  assert.equal(bigBuffers.fits, true, bigBuffers.reasons.join('; '));
  const tinyBinding = deviceFit(llama7b, plan, {
    maxBufferSize: 2 ** 32,
    maxStorageBufferBindingSize: 16 * 2 ** 20,
  });
  assert.match(
    tinyBinding.reasons.join('\n'),
    /MLP activation 512 × 11008 f32 takes 21\.5 MiB, over this GPU's maxStorageBufferBindingSize of 16\.0 MiB/,
  );
  // With the whole base in 4-bit the largest tensors shrink under a 1 GiB binding; memory then decides.
  const q = await planTraining(llama7b, {
    seqLen: 512,
    batchSize: 1,
    rank: 16,
    quantizeEmbedding: true,
    quantizeHead: true,
  });
  assert.equal(deviceFit(llama7b, q, swiftshader).fits, true);
  // …and under the WebGPU defaults too (the page's '4-bit embedding and head' option).
  const qDefaults = deviceFit(llama7b, q, webgpuDefaults);
  assert.equal(qDefaults.fits, true, qDefaults.reasons.join('; '));
  const tight = deviceFit(llama7b, q, swiftshader, 2 * 2 ** 30);
  assert.equal(tight.fits, false);
  assert.match(tight.reasons[0]!, /needs .* GiB on the GPU, more than the 2\.00 GiB available/);
});
