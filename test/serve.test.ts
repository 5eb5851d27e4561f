// qlora serve (issue 14, "Serve"): the official openai client against the server on 127.0.0.1 —
// two adapters over one NF4 base give the same greedy text as `qlora generate` with each (completions
// and chat, through each adapter's saved chat template), streaming equals non-streaming, concurrent
// requests equal sequential ones, stop / seed / usage / echo behave as the API says, and bad
// requests get OpenAI-style errors with the right status.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { BUILTIN_CHAT_TEMPLATES } from '../src/data/builtin-chat-templates.js';
import { writeAdapterRecipe } from '../src/io/adapter-recipe.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { loadModel } from '../src/load/load-model.js';
import { ModelRegistry } from '../src/serve/models.js';
import { loadTokenizer } from '../src/tokenizer/index.js';
import { writeRandomPeftAdapter } from './export-support.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const PROMPT = 'Once upon a time';
const N = 24;

function run(
  args: string[],
  cwd: string,
  stdin = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', TSX, cli, ...args], { cwd });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(stdin);
  });
}

/** Starts `qlora serve ... --port 0` and resolves with its URL once it listens. */
function startServer(args: string[], cwd: string): Promise<{ proc: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--import', TSX, cli, 'serve', '--port', '0', ...args], {
      cwd,
    });
    let out = '';
    let err = '';
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out);
      if (m) resolve({ proc, url: m[1]! });
    });
    proc.on('close', (code) => reject(new Error(`qlora serve exited (${code}): ${err}`)));
  });
}

describe('qlora serve with the openai client', () => {
  let cwd = '';
  let server: { proc: ChildProcess; url: string };
  let client: OpenAI;
  const generated: Record<string, string> = {};
  let chatReply = '';

  before(async () => {
    cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-serve-'));
    // Two adapters with seeded random weights, each recording the NF4 base and a chat template.
    const ck = openCheckpoint(MODEL);
    try {
      for (const [name, seed, template] of [
        ['one', 1, 'zephyr'],
        ['two', 2, 'chatml'],
      ] as const) {
        const dir = path.join(cwd, name);
        const lora = {
          r: 4,
          alpha: 8,
          dropout: 0,
          useRslora: false,
          init: 'kaiming',
          seed,
          targets: 'all-linear',
          layers: null,
        } as const;
        await writeRandomPeftAdapter(dir, ck.config, ck, lora, seed * 1000, 0.5);
        writeAdapterRecipe(dir, {
          baseModelPath: MODEL,
          quantization: {
            quantType: 'nf4',
            blocksize: 64,
            doubleQuant: true,
            quantizeHead: false,
            quantizeEmbeddings: false,
          },
          data: null,
          chatTemplate: BUILTIN_CHAT_TEMPLATES[template]!,
        });
      }
    } finally {
      ck.close();
    }
    // An adapter folder that exists but cannot be loaded: found out on its first request.
    fs.mkdirSync(path.join(cwd, 'broken'));
    fs.writeFileSync(path.join(cwd, 'broken', 'adapter_config.json'), '{"peft_type": "LORA",');
    // What `qlora generate` prints with each adapter (greedy), and one chat turn with adapter one.
    const [one, two, chat, started] = await Promise.all([
      run(['generate', '-a', 'one', '-p', PROMPT, '-t', '0', '-n', String(N)], cwd),
      run(['generate', '-a', 'two', '-p', PROMPT, '-t', '0', '-n', String(N)], cwd),
      run(['generate', '-a', 'one', '--chat', '-t', '0', '-n', '16'], cwd, 'Hello there\n'),
      startServer(
        [
          '-m',
          MODEL,
          '-a',
          'one=one',
          '-a',
          `two=${path.join(cwd, 'two')}`,
          '-a',
          'broken=broken',
          '--max-request-bytes',
          '65536',
        ],
        cwd,
      ),
    ]);
    server = started;
    for (const [name, r] of [
      ['one', one],
      ['two', two],
    ] as const) {
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.startsWith(PROMPT) && r.stdout.endsWith('\n'), r.stdout);
      generated[name] = r.stdout.slice(PROMPT.length, -1);
    }
    assert.equal(chat.code, 0, chat.stderr);
    chatReply = chat.stdout.replace(/\n$/, '');
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });

  after(async () => {
    if (server) {
      // Ctrl-C / SIGTERM closes the server and the process exits.
      const exited = new Promise((resolve) => server.proc.once('exit', resolve));
      server.proc.kill('SIGTERM');
      const timer = setTimeout(() => server.proc.kill('SIGKILL'), 20_000);
      assert.equal(await exited, 0);
      clearTimeout(timer);
    }
    if (cwd) fs.rmSync(cwd, { recursive: true, force: true });
  });

  test('GET /v1/models lists the base and each adapter', async () => {
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    assert.deepEqual(models, ['stories260K', 'one', 'two', 'broken']);
    assert.equal((await client.models.retrieve('two')).id, 'two');
  });

  test('each adapter gives the greedy text `qlora generate` gives with it, with usage counts', async () => {
    assert.notEqual(
      generated.one,
      generated.two,
      'the two adapters must differ to tell them apart',
    );
    const tokenizer = loadTokenizer(path.join(root, 'fixtures', 'stories260K', 'tok512.bin'));
    const promptTokens = 1 + tokenizer.encode(PROMPT, { addSpecialTokens: false }).length;
    for (const name of ['one', 'two']) {
      const r = await client.completions.create({
        model: name,
        prompt: PROMPT,
        max_tokens: N,
        temperature: 0,
      });
      assert.equal(r.object, 'text_completion');
      assert.equal(r.model, name);
      assert.equal(r.choices[0]!.text, generated[name]);
      const finish = r.choices[0]!.finish_reason;
      assert.equal(r.usage!.prompt_tokens, promptTokens);
      if (finish === 'length') assert.equal(r.usage!.completion_tokens, N);
      else assert.ok(finish === 'stop' && r.usage!.completion_tokens < N);
      assert.equal(r.usage!.total_tokens, promptTokens + r.usage!.completion_tokens);
    }
    const echoed = await client.completions.create({
      model: 'one',
      prompt: PROMPT,
      max_tokens: N,
      temperature: 0,
      echo: true,
    });
    assert.equal(echoed.choices[0]!.text, PROMPT + generated.one);
  });

  test("chat renders the adapter's saved chat template, as `qlora generate --chat` does", async () => {
    const r = await client.chat.completions.create({
      model: 'one',
      messages: [{ role: 'user', content: 'Hello there' }],
      max_tokens: 16,
      temperature: 0,
    });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0]!.message.role, 'assistant');
    assert.equal(r.choices[0]!.message.content, chatReply);
    const tokenizer = loadTokenizer(path.join(root, 'fixtures', 'stories260K', 'tok512.bin'));
    // Zephyr's rendering of the one user turn, tokenized without an added BOS.
    const rendered = '<|user|>\nHello there</s>\n<|assistant|>\n';
    assert.equal(
      r.usage!.prompt_tokens,
      tokenizer.encode(rendered, { addSpecialTokens: false }).length,
    );
    // The base has no chat template (stories260K ships none): chat there is refused by name.
    await assert.rejects(
      client.chat.completions.create({
        model: 'stories260K',
        messages: [{ role: 'user', content: 'Hi' }],
      }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /has no chat template/.test(e.message),
    );
  });

  test('streaming (SSE) gives the same text as a plain request, ending in data: [DONE]', async () => {
    const stream = await client.chat.completions.create({
      model: 'two',
      messages: [
        { role: 'system', content: 'Tell stories.' },
        { role: 'user', content: 'A cat' },
      ],
      max_tokens: 20,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined = null;
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) {
        text += ch.delta.content ?? '';
        finish = ch.finish_reason ?? finish;
      }
    }
    const plain = await client.chat.completions.create({
      model: 'two',
      messages: [
        { role: 'system', content: 'Tell stories.' },
        { role: 'user', content: 'A cat' },
      ],
      max_tokens: 20,
      temperature: 0,
    });
    assert.ok(chunks > 2, `streamed in ${chunks} chunks`);
    assert.equal(text, plain.choices[0]!.message.content);
    assert.equal(finish, plain.choices[0]!.finish_reason);
    assert.deepEqual(usage, plain.usage);

    // The wire format itself: data: lines, the last one [DONE].
    const res = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'one', prompt: PROMPT, max_tokens: 4, stream: true }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = (await res.text()).split('\n\n').filter(Boolean);
    assert.ok(events.every((e) => e.startsWith('data: ')));
    assert.equal(events.at(-1), 'data: [DONE]');
  });

  test('stop sequences end the text before them, also when streamed token by token', async () => {
    // Seven characters of a 512-token vocabulary span several tokens: the first of them is streamed
    // only once the rest proves it is not the start of the stop sequence.
    assert.ok(generated.one!.length >= 16, generated.one);
    const stop = generated.one!.slice(6, 13);
    const expected = generated.one!.slice(0, generated.one!.indexOf(stop));
    const plain = await client.completions.create({
      model: 'one',
      prompt: PROMPT,
      max_tokens: N,
      temperature: 0,
      stop: [stop],
    });
    assert.equal(plain.choices[0]!.text, expected);
    assert.equal(plain.choices[0]!.finish_reason, 'stop');
    let streamed = '';
    const stream = await client.completions.create({
      model: 'one',
      prompt: PROMPT,
      max_tokens: N,
      temperature: 0,
      stop: [stop],
      stream: true,
    });
    for await (const c of stream) streamed += c.choices[0]?.text ?? '';
    assert.equal(streamed, expected);
  });

  test('a seed makes sampling repeatable', async () => {
    const ask = () =>
      client.completions.create({
        model: 'two',
        prompt: PROMPT,
        max_tokens: 16,
        temperature: 1,
        top_p: 0.9,
        seed: 1234,
      });
    const [a, b] = [await ask(), await ask()];
    assert.equal(a.choices[0]!.text, b.choices[0]!.text);
  });

  test('concurrent requests queue and give what they give one at a time', async () => {
    const jobs = [
      () =>
        client.completions.create({ model: 'one', prompt: PROMPT, max_tokens: N, temperature: 0 }),
      () =>
        client.completions.create({ model: 'two', prompt: PROMPT, max_tokens: N, temperature: 0 }),
      async () => {
        const s = await client.completions.create({
          model: 'two',
          prompt: PROMPT,
          max_tokens: N,
          temperature: 0,
          stream: true,
        });
        let t = '';
        for await (const c of s) t += c.choices[0]?.text ?? '';
        return t;
      },
      () =>
        client.completions.create({
          model: 'one',
          prompt: 'The dog',
          max_tokens: N,
          temperature: 0,
        }),
    ];
    const text = (r: OpenAI.Completion | string) =>
      typeof r === 'string' ? r : r.choices[0]!.text;
    const together = (await Promise.all(jobs.map((j) => j()))).map(text);
    const alone: string[] = [];
    for (const j of jobs) alone.push(text(await j()));
    assert.deepEqual(together, alone);
    assert.equal(together[0], generated.one);
    assert.equal(together[1], generated.two);
    assert.equal(together[2], generated.two);
  });

  test('bad requests get OpenAI error JSON with the right status', async () => {
    const base = { prompt: PROMPT, max_tokens: 2 };
    const check = async (
      p: Promise<unknown>,
      cls: new (...args: never[]) => InstanceType<typeof OpenAI.APIError>,
      status: number,
      param: string | null,
    ) =>
      assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof cls, String(e));
        assert.equal(e.status, status);
        assert.equal(e.param, param);
        assert.equal(e.type, 'invalid_request_error');
        return true;
      });
    await check(
      client.completions.create({ model: 'three', ...base }),
      OpenAI.NotFoundError,
      404,
      'model',
    );
    await check(
      client.completions.create({ model: 'one', ...base, temperature: 5 }),
      OpenAI.BadRequestError,
      400,
      'temperature',
    );
    await check(
      client.completions.create({ model: 'one', ...base, n: 2 }),
      OpenAI.BadRequestError,
      400,
      'n',
    );
    await check(
      client.chat.completions.create({ model: 'one', messages: [] }),
      OpenAI.BadRequestError,
      400,
      'messages',
    );
    await check(
      client.completions.create({ model: 'one', prompt: 'a '.repeat(2000), max_tokens: 2 }),
      OpenAI.BadRequestError,
      400,
      'prompt',
    );

    const raw = async (method: string, route: string, body?: string) => {
      const res = await fetch(`${server.url}${route}`, {
        method,
        headers: { 'content-type': 'application/json' },
        ...(body !== undefined ? { body } : {}),
      });
      const json = (await res.json()) as { error: Record<string, unknown> };
      assert.deepEqual(Object.keys(json.error).sort(), ['code', 'message', 'param', 'type']);
      return { status: res.status, error: json.error, allow: res.headers.get('allow') };
    };
    const badJson = await raw('POST', '/v1/completions', '{"model": "one",');
    assert.equal(badJson.status, 400);
    assert.match(String(badJson.error.message), /not valid JSON/);
    const wrongMethod = await raw('GET', '/v1/chat/completions');
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.allow, 'POST');
    assert.equal((await raw('POST', '/v1/embeddings', '{}')).status, 404);
    const huge = await raw(
      'POST',
      '/v1/completions',
      JSON.stringify({ model: 'one', prompt: 'x'.repeat(100_000) }),
    );
    assert.equal(huge.status, 413);
    await assert.rejects(
      client.completions.create({ model: 'broken', ...base }),
      (e: unknown) =>
        e instanceof OpenAI.InternalServerError &&
        e.status === 500 &&
        /could not load the model 'broken'.*adapter_model\.safetensors|adapter_config\.json/.test(
          e.message,
        ),
    );
    // The server still answers after all of that.
    const ok = await client.completions.create({
      model: 'one',
      prompt: PROMPT,
      max_tokens: N,
      temperature: 0,
    });
    assert.equal(ok.choices[0]!.text, generated.one);
  });
});

test("each model's chat template: --chat-template for all, else the adapter's saved one, else the model's", async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-serve-templates-'));
  try {
    const ck = openCheckpoint(MODEL);
    try {
      const lora = {
        r: 2,
        alpha: 4,
        dropout: 0,
        useRslora: false,
        init: 'kaiming',
        seed: 0,
        targets: ['q_proj'],
        layers: null,
      } as const;
      await writeRandomPeftAdapter(path.join(cwd, 'a'), ck.config, ck, lora, 7, 0.1);
      writeAdapterRecipe(path.join(cwd, 'a'), {
        baseModelPath: MODEL,
        quantization: null,
        data: null,
        chatTemplate: BUILTIN_CHAT_TEMPLATES.gemma!,
      });
    } finally {
      ck.close();
    }
    const registryWith = async (chatTemplate: { source: string; name: string } | null) => {
      const loaded = await loadModel({ model: MODEL });
      return new ModelRegistry({
        base: loaded.model,
        baseName: 'base',
        config: loaded.checkpoint.config,
        tokenizer: loaded.tokenizer,
        adapters: [{ name: 'a', path: path.join(cwd, 'a') }],
        chatTemplate,
      });
    };
    const plain = await registryWith(null);
    try {
      assert.equal(plain.get('base')!.chat, null); // stories260K's tokenizer has none
      assert.equal(plain.get('a')!.chat!.source, BUILTIN_CHAT_TEMPLATES.gemma);
      assert.equal(plain.get('nope'), undefined);
    } finally {
      plain.dispose();
    }
    const forced = await registryWith({ source: BUILTIN_CHAT_TEMPLATES.chatml!, name: 'chatml' });
    try {
      assert.equal(forced.get('base')!.chat!.source, BUILTIN_CHAT_TEMPLATES.chatml);
      assert.equal(forced.get('a')!.chat!.source, BUILTIN_CHAT_TEMPLATES.chatml);
    } finally {
      forced.dispose();
    }
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
