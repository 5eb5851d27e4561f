// `--quant keep` on webgpu (issue 17.3): a short run on a tiny GGUF model whose projections and head
// stay in their Q4_K (then Q8_0) blocks on the GPU gives the cpu backend's per-step losses within
// 1e-4 relative (both compute in f32), and `qlora generate --backend webgpu` with that adapter on
// the kept base prints cpu's greedy text. Skips without an adapter (as every webgpu suite).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readAdapterRecipe } from '../src/io/adapter-recipe.js';
import { train } from '../src/train/run.js';
import { webgpuBackend } from './backends-under-test.js';
import { writeRandomGguf } from './ggml-support.js';

const gpu = await webgpuBackend();
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');
const STEPS = 8;
let tmp: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-webgpu-keep-'));
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function run(file: string, backend: 'cpu' | 'webgpu', out: string): Promise<number[]> {
  const losses: number[] = [];
  await train({
    model: file,
    data: DATA,
    output: out,
    quant: 'keep',
    maxSteps: STEPS,
    seqLen: 32,
    batchSize: 2,
    lr: 1e-2,
    evalEvery: 0,
    saveEvery: 0,
    backend,
    computeDtype: 'f32',
    onLog: () => {},
    onStep: (m) => losses.push(m.loss),
  } as Parameters<typeof train>[0]);
  return losses;
}

function generate(file: string, adapter: string, backend: 'cpu' | 'webgpu') {
  const r = spawnSync(
    process.execPath,
    [
      '--import',
      import.meta.resolve('tsx'),
      path.join(root, 'src', 'cli', 'run.ts'),
      'generate',
      '-m',
      file,
      '-a',
      adapter,
      '-p',
      'the',
      '-t',
      '0',
      '--max-tokens',
      '8',
      '--compute-dtype',
      'f32',
      '--backend',
      backend,
    ],
    { cwd: root, encoding: 'utf8', timeout: 180_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stderr,
    /base: the GGUF's own quantization as stored \((Q4_K|Q8_0) ×15\), as the adapter was trained/,
  );
  return r.stdout;
}

for (const type of ['Q4_K', 'Q8_0'] as const) {
  test(
    `webgpu --quant keep on a ${type} model: per-step losses equal cpu's within 1e-4 relative${type === 'Q4_K' ? '; generate prints cpu\u2019s text' : ''}`,
    { skip: !gpu },
    async () => {
      const file = path.join(tmp, `${type}.gguf`);
      writeRandomGguf(file, () => type, 11);
      const cpu = await run(file, 'cpu', path.join(tmp, `cpu-${type}`));
      const outWeb = path.join(tmp, `webgpu-${type}`);
      const web = await run(file, 'webgpu', outWeb);
      assert.equal(web.length, STEPS);
      let worst = 0;
      for (let i = 0; i < STEPS; i++) {
        const rel = Math.abs(web[i]! - cpu[i]!) / Math.abs(cpu[i]!);
        worst = Math.max(worst, rel);
        assert.ok(rel <= 1e-4, `step ${i + 1}: webgpu ${web[i]} vs cpu ${cpu[i]}`);
      }
      console.log(
        `# ${type} --quant keep, webgpu vs cpu over ${STEPS} steps: max relative loss difference ${worst.toExponential(2)}`,
      );
      assert.ok(web.at(-1)! < web[0]!, `the loss falls: ${web.join(' ')}`);
      assert.deepEqual(readAdapterRecipe(outWeb)?.quantization, {
        quantType: 'keep',
        tensorTypes: { [type]: 15 },
      });
      if (type !== 'Q4_K') return;
      // The webgpu-trained adapter on the kept base: the same greedy text on both backends.
      const text = generate(file, outWeb, 'cpu');
      assert.ok(text.trim().length > 0, 'cpu generated nothing');
      assert.equal(generate(file, outWeb, 'webgpu'), text);
    },
  );
}
