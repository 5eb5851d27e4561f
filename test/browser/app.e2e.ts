// End to end in a real browser (npm run test:browser): Debian's headless Chromium, driven by
// playwright-core, opens the app served by `qlora web`'s server, picks stories260K.gguf and a small
// text file through the page's file inputs, trains 30 steps on WebGPU (SwiftShader: the CPU), stops
// and resumes from the checkpoint in the Origin Private File System, checks that the chart's loss
// falls, downloads the adapter, and checks that `qlora generate` (Node, cpu backend) gives the same
// greedy text with it as the page's after-sample — for the PEFT files and for the GGUF LoRA.
//
// Environment: QLORA_CHROMIUM (default /usr/bin/chromium); QLORA_WEB_BACKEND=ref runs the page on
// the plain-TypeScript backend instead of WebGPU; QLORA_WEB_SCREENSHOT=<png> saves the
// mid-training screenshot there (the README's picture), else into the test's temp folder.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type Page, chromium } from 'playwright-core';
import { WEB_ROOT, serveWeb } from '../../src/cli/web.js';
import { configFromHf } from '../../src/io/config.js';
import { writeSyntheticHfFolder } from '../export-support.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MODEL = path.join(ROOT, 'fixtures', 'stories260K', 'stories260K.gguf');
const SHAKESPEARE = path.join(ROOT, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');
const CHROMIUM = process.env.QLORA_CHROMIUM ?? '/usr/bin/chromium';
const BACKEND = process.env.QLORA_WEB_BACKEND === 'ref' ? 'ref' : 'webgpu';
const STEPS = 30;
const STOP_AT = 12;
const PROMPT = 'ROMEO:';
const SAMPLE_TOKENS = 12;

const run = promisify(execFile);

async function setValue(page: Page, id: string, value: string): Promise<void> {
  await page.fill(`#${id}`, value);
  await page.dispatchEvent(`#${id}`, 'change');
}

async function waitFor(page: Page, what: string, fn: string, timeoutMs: number): Promise<void> {
  try {
    await page.waitForFunction(fn, null, { timeout: timeoutMs, polling: 250 });
  } catch (e) {
    const status = await page.textContent('#status').catch(() => '');
    const gpu = await page.textContent('#gpu').catch(() => '');
    throw new Error(
      `waiting for ${what}: ${(e as Error).message.split('\n')[0]} (status: ${status}; gpu: ${gpu})`,
    );
  }
}

test(
  'fine-tune in the browser tab: train, stop, resume, download, same greedy text in qlora generate',
  { timeout: 1_800_000 },
  async (t) => {
    assert.ok(
      fs.existsSync(CHROMIUM),
      `${CHROMIUM} is missing (apt-get install chromium, or set QLORA_CHROMIUM)`,
    );
    assert.ok(
      fs.existsSync(path.join(WEB_ROOT, 'worker.js')),
      'the app is not built: npm run build:web',
    );
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-web-e2e-'));
    // A small text dataset: the first ~6 KB of the tiny-shakespeare excerpt.
    const data = path.join(tmp, 'shakespeare.txt');
    fs.writeFileSync(data, fs.readFileSync(SHAKESPEARE, 'utf8').slice(0, 6000));
    const times: Record<string, number> = {};
    const t0 = performance.now();
    const mark = (name: string) => (times[name] = Math.round((performance.now() - t0) / 100) / 10);

    const { server, url } = await serveWeb(WEB_ROOT, 0);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--enable-unsafe-webgpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const context = await browser.newContext({
        acceptDownloads: true,
        viewport: { width: 1400, height: 1000 },
      });
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${url}${BACKEND === 'ref' ? '?backend=ref' : ''}`);
      mark('page loaded');

      await waitFor(
        page,
        'the WebGPU check',
        "document.getElementById('gpu').dataset.ready !== undefined",
        30_000,
      );
      if (BACKEND === 'webgpu') {
        assert.equal(
          await page.getAttribute('#gpu', 'data-ready'),
          'true',
          (await page.textContent('#gpu')) ?? '',
        );
      }
      t.diagnostic(`adapter: ${await page.textContent('#gpu')}`);

      await page.setInputFiles('#model-file', MODEL);
      await waitFor(
        page,
        'the model summary',
        "document.getElementById('model-summary').textContent !== ''",
        30_000,
      );
      assert.match(
        (await page.textContent('#model-summary')) ?? '',
        /llama \(gguf\), 5 layers, hidden 64, vocab 512/,
      );
      await page.setInputFiles('#data-file', data);
      await waitFor(
        page,
        'the data view',
        "document.getElementById('inspect').dataset.format !== undefined",
        30_000,
      );
      assert.equal(await page.getAttribute('#inspect', 'data-format'), 'text');
      const inspect = (await page.textContent('#inspect')) ?? '';
      assert.match(inspect, /token lengths \(train\)/);
      assert.match(inspect, /carry loss/);
      assert.ok(
        (await page.locator('#inspect .example .loss').count()) > 0,
        'loss-carrying text is marked',
      );
      mark('model and data read');

      // Tiny on purpose: SwiftShader runs WGSL on the CPU, and compiling the kernels' pipelines takes
      // most of the first step.
      for (const [id, v] of [
        ['rank', '4'],
        ['alpha', '8'],
        ['lr', '0.01'],
        ['steps', String(STEPS)],
        ['batch', '1'],
        ['seq-len', '64'],
        ['eval-every', '10'],
        ['save-every', '6'],
        ['sample-prompt', PROMPT],
        ['sample-tokens', String(SAMPLE_TOKENS)],
      ] as const) {
        await setValue(page, id, v);
      }
      await waitFor(
        page,
        'the plan',
        "document.getElementById('plan').dataset.fits !== undefined",
        30_000,
      );
      if (BACKEND === 'webgpu')
        assert.equal(
          await page.getAttribute('#plan', 'data-fits'),
          'true',
          (await page.textContent('#plan')) ?? '',
        );

      // Train, stop part-way (a checkpoint goes to OPFS), resume from it.
      await page.click('#train');
      await waitFor(
        page,
        `step ${STOP_AT}`,
        `Number(document.getElementById('progress').dataset.step ?? 0) >= ${STOP_AT}`,
        600_000,
      );
      mark(`step ${STOP_AT}`);
      await page.click('#stop');
      await waitFor(
        page,
        'the stop',
        "document.getElementById('train-section').dataset.done === 'interrupt'",
        120_000,
      );
      const stoppedAt = Number(await page.getAttribute('#progress', 'data-step'));
      mark('stopped');
      assert.equal(await page.isEnabled('#resume'), true, 'a resumable checkpoint is offered');
      await page.click('#resume');
      await waitFor(
        page,
        'the resumed run',
        `Number(document.getElementById('progress').dataset.step ?? 0) > ${stoppedAt}`,
        120_000,
      );
      const shot = process.env.QLORA_WEB_SCREENSHOT ?? path.join(tmp, 'web-app.png');
      await waitFor(
        page,
        'step 16',
        "Number(document.getElementById('progress').dataset.step ?? 0) >= 16",
        600_000,
      );
      await page.screenshot({ path: shot, fullPage: true });
      mark('screenshot');
      await waitFor(
        page,
        'the end of training',
        "document.getElementById('train-section').dataset.done === 'max-steps'",
        600_000,
      );
      mark(`${STEPS} steps done`);

      // The chart's loss falls, and the resumed run continued the curve rather than restarting it.
      const losses = JSON.parse((await page.getAttribute('#chart', 'data-train')) ?? '[]') as [
        number,
        number,
      ][];
      assert.deepEqual(
        losses.map(([s]) => s),
        Array.from({ length: STEPS }, (_, i) => i + 1),
      );
      const mean = (xs: [number, number][]) => xs.reduce((a, [, l]) => a + l, 0) / xs.length;
      const first = mean(losses.slice(0, 5));
      const last = mean(losses.slice(-5));
      t.diagnostic(
        `loss: first 5 steps ${first.toFixed(4)}, last 5 ${last.toFixed(4)}; stopped at ${stoppedAt}`,
      );
      assert.ok(last < first - 0.1, `loss fell from ${first} to ${last}`);
      const evals = JSON.parse((await page.getAttribute('#chart', 'data-eval')) ?? '[]') as [
        number,
        number,
      ][];
      assert.ok(evals.length >= 2, 'eval points are plotted');

      const before = (await page.textContent('#sample-before')) ?? '';
      const after = (await page.textContent('#sample-after')) ?? '';
      t.diagnostic(`sample before: ${JSON.stringify(before)}`);
      t.diagnostic(`sample after:  ${JSON.stringify(after)}`);
      assert.ok(after.startsWith(PROMPT) && after.length > PROMPT.length);

      // Download the adapter through the page's links.
      const adapterDir = path.join(tmp, 'adapter');
      fs.mkdirSync(adapterDir);
      for (const name of [
        'adapter_model.safetensors',
        'adapter_config.json',
        'qlora_config.json',
        'adapter.gguf',
      ]) {
        const [download] = await Promise.all([
          page.waitForEvent('download'),
          page.click(`#download-${name.replace(/[^a-z0-9]+/gi, '-')}`),
        ]);
        assert.equal(download.suggestedFilename(), name);
        await download.saveAs(path.join(adapterDir, name));
      }
      mark('downloaded');
      assert.deepEqual(errors, []);

      // The page records the 4-bit base it trained on (qlora_config.json), as the CLI does.
      const recipe = JSON.parse(
        fs.readFileSync(path.join(adapterDir, 'qlora_config.json'), 'utf8'),
      ) as { quantization_config: { bnb_4bit_quant_type: string; blocksize: number } };
      assert.equal(recipe.quantization_config.bnb_4bit_quant_type, 'nf4');
      assert.equal(recipe.quantization_config.blocksize, 64);

      // The same greedy text from the CLI on the cpu backend: with the PEFT folder as downloaded
      // (its qlora_config.json picks the NF4 base), and with the GGUF LoRA (which records no base).
      const cli = path.join(ROOT, 'src', 'cli', 'run.ts');
      for (const [adapter, baseFlags] of [
        [adapterDir, []],
        [path.join(adapterDir, 'adapter.gguf'), ['--quantize', 'nf4']],
      ] as const) {
        const { stdout } = await run(
          process.execPath,
          [
            '--import',
            'tsx',
            cli,
            'generate',
            '-m',
            MODEL,
            '-a',
            adapter,
            ...baseFlags,
            '-p',
            PROMPT,
            '-t',
            '0',
            '-n',
            String(SAMPLE_TOKENS),
          ],
          { cwd: ROOT, maxBuffer: 1 << 20 },
        );
        assert.equal(
          stdout.replace(/\n$/, ''),
          after,
          `qlora generate -a ${path.basename(adapter)}`,
        );
      }
      mark('qlora generate matched');
      t.diagnostic(`timings (s since start): ${JSON.stringify(times)}`);
    } finally {
      await browser.close();
      server.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
);

test(
  'without a WebGPU adapter the page says so at once instead of hanging; an HF folder opens through the folder picker',
  { timeout: 120_000 },
  async () => {
    const { server, url } = await serveWeb(WEB_ROOT, 0);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-web-e2e-hf-'));
    const hfDir = path.join(tmp, 'tiny-llama-hf');
    const hf = {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      vocab_size: 32000,
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 128,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      tie_word_embeddings: true,
    };
    writeSyntheticHfFolder(hfDir, hf, configFromHf(hf, 'config.json'), 5);
    // Headless Chromium without --enable-unsafe-webgpu: navigator.gpu exists, requestAdapter() gives null.
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const page = await browser.newPage();
      await page.goto(url);
      await waitFor(
        page,
        'the WebGPU check',
        "document.getElementById('gpu').dataset.ready !== undefined",
        30_000,
      );
      assert.equal(await page.getAttribute('#gpu', 'data-ready'), 'false');
      assert.match((await page.textContent('#gpu')) ?? '', /no GPU adapter|no WebGPU/);
      assert.equal(await page.getAttribute('#gpu', 'class'), 'error');
      await page.setInputFiles('#model-file', MODEL);
      await waitFor(
        page,
        'the model summary',
        "document.getElementById('model-summary').textContent !== ''",
        30_000,
      );
      assert.equal(await page.isDisabled('#train'), true, 'training cannot start without a GPU');
      // An HF folder (config.json, model.safetensors, tokenizer.json) through the directory picker.
      await page.evaluate("document.getElementById('model-summary').textContent = ''");
      await page.setInputFiles('#model-folder', hfDir);
      await waitFor(
        page,
        'the HF model summary',
        "document.getElementById('model-summary').textContent !== ''",
        60_000,
      );
      assert.match(
        (await page.textContent('#model-summary')) ?? '',
        /^tiny-llama-hf: llama \(hf\), 2 layers, hidden 32, vocab 32000.*tokenizer tokenizer\.json \(32000 tokens\)/,
      );
    } finally {
      await browser.close();
      server.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
);
