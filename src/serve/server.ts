/**
 * An OpenAI-compatible HTTP server over node:http: POST /v1/completions and /v1/chat/completions
 * (JSON, or server-sent events ending in `data: [DONE]` when `stream` is true) and GET /v1/models.
 *
 * One model runs at a time: requests wait in a queue, and each generation has a KV cache of its
 * own and the whole scratch arena while it runs, so concurrent requests never see each other's
 * state (and an adapter's first load happens in the queue too). A client that goes away stops its
 * generation at the next token. Bodies are read up to a size bound (413 beyond it); every error is
 * OpenAI's `{ error: { message, type, param, code } }` with its status.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { ChatRenderError } from '../data/chat-template.js';
import { DatasetError } from '../data/errors.js';
import { generate, type GenerationResult } from '../generate/generate.js';
import type { Arena } from '../tensor/arena.js';
import { ApiError, invalidRequest } from './api-error.js';
import type { ModelRegistry, ServedModel } from './models.js';
import {
  type ChatRequest,
  type CompletionRequest,
  type SamplingRequest,
  parseChatRequest,
  parseCompletionRequest,
} from './requests.js';

export interface ServerOptions {
  readonly registry: ModelRegistry;
  /** Largest request body read (default 4 MiB): chats are text, so this is a lot of text. */
  readonly maxBodyBytes?: number;
  /** One line per request (default: none). */
  readonly log?: (line: string) => void;
}

export const DEFAULT_MAX_BODY_BYTES = 4 << 20;
/** OpenAI's default max_tokens for /v1/completions. */
const COMPLETION_DEFAULT_MAX_TOKENS = 16;

/** Runs jobs one after another, in arrival order. */
class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(job: () => Promise<T>): Promise<T> {
    const result = this.tail.then(job);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/** Thrown from the token callback when the client has gone: ends that generation. */
class ClientGone extends Error {}

const ROUTES: Record<string, string> = {
  '/v1/completions': 'POST',
  '/v1/chat/completions': 'POST',
  '/v1/models': 'GET',
};

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () =>
    new ApiError(
      413,
      `the request body is larger than ${limit} bytes`,
      'invalid_request_error',
      null,
      'request_too_large',
    );
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        // Stop reading: the answer is sent and the connection closed after it.
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!done) resolve(Buffer.concat(chunks));
    });
    req.on('error', (e) => {
      if (!done) reject(e);
    });
  });
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw invalidRequest(`the request body is not valid JSON: ${(e as Error).message}`);
  }
}

const FINISH: Record<GenerationResult['finishReason'], 'stop' | 'length'> = {
  'stop-token': 'stop',
  'stop-string': 'stop',
  'max-tokens': 'length',
  'context-full': 'length',
};

interface Outcome {
  readonly text: string;
  readonly finishReason: 'stop' | 'length';
  readonly promptTokens: number;
  readonly completionTokens: number;
}

export class OpenAiServer {
  readonly server: http.Server;
  private readonly queue = new SerialQueue();
  private readonly arena: Arena;
  private readonly maxBody: number;

  constructor(private readonly o: ServerOptions) {
    this.maxBody = o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const base = o.registry.get(o.registry.names()[0]!)!;
    this.arena = base.model.backend.createArena(1 << 22, 'serve');
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => this.fail(res, e));
    });
  }

  /** Listens on 127.0.0.1 (port 0: a free one); resolves with the base URL. */
  listen(port: number, host = '127.0.0.1'): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        const addr = this.server.address();
        resolve(`http://${host}:${typeof addr === 'object' && addr ? addr.port : port}`);
      });
    });
  }

  /** Stops listening, ends open connections, frees the models. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    await this.queue.run(async () => {
      this.arena.dispose();
      this.o.registry.dispose();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const route = url.pathname.replace(/\/+$/, '');
    const method = req.method ?? 'GET';
    const modelMatch = /^\/v1\/models\/(.+)$/.exec(route);
    const allowed = modelMatch ? 'GET' : ROUTES[route];
    if (!allowed)
      throw new ApiError(
        404,
        `Unknown request URL: ${method} ${url.pathname}. This server answers /v1/chat/completions, /v1/completions and /v1/models.`,
        'invalid_request_error',
        null,
        'unknown_url',
      );
    if (method !== allowed)
      throw new ApiError(
        405,
        `${method} is not allowed on ${url.pathname} (use ${allowed})`,
        'invalid_request_error',
        null,
        'method_not_allowed',
      );
    if (modelMatch) {
      const id = decodeURIComponent(modelMatch[1]!);
      if (!this.o.registry.has(id)) throw this.unknownModel(id);
      return sendJson(res, 200, this.modelCard(id));
    }
    if (route === '/v1/models') {
      return sendJson(res, 200, {
        object: 'list',
        data: this.o.registry.names().map((id) => this.modelCard(id)),
      });
    }
    const body = parseJson(await readBody(req, this.maxBody));
    const started = performance.now();
    const outcome =
      route === '/v1/chat/completions'
        ? await this.chat(parseChatRequest(body), res)
        : await this.completion(body, res);
    if (outcome)
      this.o.log?.(
        `${method} ${route} ${(body as { model: string }).model}: ${outcome.promptTokens} prompt + ${outcome.completionTokens} completion tokens, ${outcome.finishReason}, ${((performance.now() - started) / 1000).toFixed(2)} s`,
      );
  }

  private modelCard(id: string) {
    return { id, object: 'model', created: 0, owned_by: 'qlora-ts' };
  }

  private unknownModel(name: string): ApiError {
    return new ApiError(
      404,
      `The model '${name}' does not exist. Models here: ${this.o.registry.names().join(', ')}`,
      'invalid_request_error',
      'model',
      'model_not_found',
    );
  }

  private async completion(body: unknown, res: http.ServerResponse): Promise<Outcome | null> {
    // The vocabulary bounds token-id prompts; every model here shares the base's.
    const vocab = this.o.registry.get(this.o.registry.names()[0]!)!.model.dims.vocabSize;
    const r: CompletionRequest = parseCompletionRequest(body, vocab);
    if (!this.o.registry.has(r.model)) throw this.unknownModel(r.model);
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const chunk = (text: string, finish: string | null) => ({
      id,
      object: 'text_completion',
      created,
      model: r.model,
      choices: [{ text, index: 0, logprobs: null, finish_reason: finish }],
    });
    return this.respond(
      res,
      r,
      COMPLETION_DEFAULT_MAX_TOKENS,
      (m) => {
        if (typeof r.prompt !== 'string')
          return { ids: [...r.prompt], echo: m.tokenizer.decode([...r.prompt]) };
        // As `qlora generate -p` does: BOS, then the prompt's tokens.
        const ids = m.tokenizer.encode(r.prompt, { addSpecialTokens: false });
        return {
          ids: m.tokenizer.bosId !== null ? [m.tokenizer.bosId, ...ids] : ids,
          echo: r.prompt,
        };
      },
      {
        first: (echo) => (r.echo && echo ? [chunk(echo, null)] : []),
        piece: (text) => chunk(text, null),
        last: (finish) => chunk('', finish),
        usageChunk: (usage) => ({ ...chunk('', null), choices: [], usage }),
        full: (o, echo) => ({
          ...chunk((r.echo ? echo : '') + o.text, o.finishReason),
          usage: usageOf(o),
        }),
      },
    );
  }

  private async chat(r: ChatRequest, res: http.ServerResponse): Promise<Outcome | null> {
    if (!this.o.registry.has(r.model)) throw this.unknownModel(r.model);
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const chunk = (delta: Record<string, unknown>, finish: string | null) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model: r.model,
      system_fingerprint: null,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    });
    return this.respond(
      res,
      r,
      null,
      (m) => {
        if (!m.chat)
          throw invalidRequest(
            `the model '${m.name}' has no chat template: use /v1/completions, or start the server with --chat-template NAME|FILE`,
            'messages',
          );
        let text: string;
        try {
          text = m.chat.render(r.messages, true);
        } catch (e) {
          if (e instanceof ChatRenderError)
            throw invalidRequest(
              `the chat template refused these messages: ${e.message}`,
              'messages',
            );
          throw e;
        }
        // The template writes the special tokens (BOS included) itself, as `qlora generate --chat` renders.
        return { ids: m.tokenizer.encode(text, { addSpecialTokens: false }), echo: '' };
      },
      {
        first: () => [chunk({ role: 'assistant', content: '' }, null)],
        piece: (text) => chunk({ content: text }, null),
        last: (finish) => chunk({}, finish),
        usageChunk: (usage) => ({ ...chunk({}, null), choices: [], usage }),
        full: (o) => ({
          id,
          object: 'chat.completion',
          created,
          model: r.model,
          system_fingerprint: null,
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content: o.text, refusal: null },
              logprobs: null,
              finish_reason: o.finishReason,
            },
          ],
          usage: usageOf(o),
        }),
      },
    );
  }

  /**
   * Queues the generation and answers: one JSON body, or a stream of chunks. Returns null when the
   * client went away before the end.
   */
  private async respond(
    res: http.ServerResponse,
    r: SamplingRequest,
    defaultMaxTokens: number | null,
    prompt: (m: ServedModel) => { ids: number[]; echo: string },
    shape: {
      first: (echo: string) => unknown[];
      piece: (text: string) => unknown;
      last: (finish: string) => unknown;
      usageChunk: (usage: ReturnType<typeof usageOf>) => unknown;
      full: (o: Outcome, echo: string) => unknown;
    },
  ): Promise<Outcome | null> {
    let gone = false;
    res.on('close', () => {
      if (!res.writableFinished) gone = true;
    });
    const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
    return this.queue.run(async () => {
      if (gone) return null;
      let m: ServedModel;
      try {
        m = this.o.registry.get(r.model)!;
      } catch (e) {
        throw new ApiError(
          500,
          `could not load the model '${r.model}': ${(e as Error).message}`,
          'server_error',
          'model',
        );
      }
      const { ids, echo } = prompt(m);
      if (ids.length === 0)
        throw invalidRequest('the prompt is empty and the tokenizer has no BOS token', 'prompt');
      if (ids.length >= m.contextLength)
        throw invalidRequest(
          `This model's maximum context length is ${m.contextLength} tokens. However, your prompt has ${ids.length} tokens, leaving no room for a completion.`,
          'messages' in r ? 'messages' : 'prompt',
          'context_length_exceeded',
        );
      const room = m.contextLength - ids.length;
      const maxTokens = Math.min(r.maxTokens ?? defaultMaxTokens ?? room, room);
      if (r.stream) {
        res.writeHead(200, {
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
        });
        for (const c of shape.first(echo)) send(c);
      }
      let result: GenerationResult;
      try {
        result = await generate(
          m.model,
          m.tokenizer,
          ids,
          this.arena,
          {
            maxTokens,
            temperature: r.temperature,
            topP: r.topP,
            topK: r.topK,
            minP: r.minP,
            repetitionPenalty: r.repetitionPenalty,
            seed: r.seed ?? Math.floor(Math.random() * 2 ** 32),
            stopStrings: r.stop,
            contextLength: ids.length + maxTokens,
          },
          (step) => {
            if (gone) throw new ClientGone();
            if (r.stream && step.text) send(shape.piece(step.text));
          },
        );
      } catch (e) {
        if (e instanceof ClientGone) return null;
        throw e;
      }
      const outcome: Outcome = {
        text: result.text,
        finishReason: FINISH[result.finishReason],
        promptTokens: ids.length,
        completionTokens: result.tokens.length,
      };
      if (r.stream) {
        send(shape.last(outcome.finishReason));
        if (r.includeUsage) send(shape.usageChunk(usageOf(outcome)));
        res.end('data: [DONE]\n\n');
      } else sendJson(res, 200, shape.full(outcome, echo));
      return outcome;
    });
  }

  private fail(res: http.ServerResponse, e: unknown): void {
    const err =
      e instanceof ApiError
        ? e
        : e instanceof DatasetError
          ? invalidRequest(e.message)
          : new ApiError(
              500,
              `internal error: ${(e as Error)?.message ?? String(e)}`,
              'server_error',
            );
    if (err.status >= 500) this.o.log?.(`error: ${(e as Error)?.stack ?? String(e)}`);
    if (res.headersSent) {
      // Mid-stream: an error event (OpenAI clients raise it), then the end of the stream.
      if (!res.writableEnded) res.end(`data: ${JSON.stringify(err.body())}\n\n`);
      return;
    }
    const headers: Record<string, string> = {};
    if (err.status === 405) {
      const route = new URL(res.req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '');
      headers.allow = ROUTES[route] ?? 'GET';
    }
    // After a refused oversized body the rest of it is not read: close the connection.
    if (err.status === 413) headers.connection = 'close';
    sendJson(res, err.status, err.body(), headers);
  }
}

function usageOf(o: Outcome) {
  return {
    prompt_tokens: o.promptTokens,
    completion_tokens: o.completionTokens,
    total_tokens: o.promptTokens + o.completionTokens,
  };
}
