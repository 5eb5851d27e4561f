/**
 * The bodies of POST /v1/completions and /v1/chat/completions, checked field by field: a wrong
 * value is a 400 naming the field (`param`), as the OpenAI API answers. Fields this server cannot
 * honour (n > 1, logprobs, tools, ...) are refused by name rather than silently ignored; fields that
 * only describe the caller (user, metadata, store) are ignored.
 */
import type { ChatMessage } from '../data/chat-template.js';
import { invalidRequest } from './api-error.js';

export interface SamplingRequest {
  readonly model: string;
  readonly stream: boolean;
  /** stream_options.include_usage: a last chunk with the token counts. */
  readonly includeUsage: boolean;
  /** null: the endpoint's default (16 for completions, the rest of the context for chat). */
  readonly maxTokens: number | null;
  readonly temperature: number;
  readonly topP: number;
  readonly topK: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly stop: readonly string[];
  /** null: a fresh seed for this request. */
  readonly seed: number | null;
}

export interface CompletionRequest extends SamplingRequest {
  readonly prompt: string | readonly number[];
  readonly echo: boolean;
}

export interface ChatRequest extends SamplingRequest {
  readonly messages: readonly ChatMessage[];
}

type Body = Record<string, unknown>;

const isObject = (v: unknown): v is Body =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function number(
  body: Body,
  key: string,
  fallback: number,
  min: number,
  max: number,
  integer = false,
): number {
  const v = body[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)))
    throw invalidRequest(`'${key}' must be ${integer ? 'an integer' : 'a number'}`, key);
  if (v < min || v > max)
    throw invalidRequest(`'${key}' must be between ${min} and ${max}, got ${v}`, key);
  return v;
}

function boolean(body: Body, key: string): boolean {
  const v = body[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw invalidRequest(`'${key}' must be a boolean`, key);
  return v;
}

/** Refuses a field set to anything but its "off" values. */
function unsupported(body: Body, key: string, off: readonly unknown[], why: string): void {
  const v = body[key];
  if (v === undefined || v === null || off.includes(v)) return;
  // An empty list or object asks for nothing either (clients send tools: [], logit_bias: {}).
  if (typeof v === 'object' && Object.keys(v).length === 0) return;
  throw invalidRequest(`'${key}' is not supported by this server (${why})`, key);
}

function sampling(body: Body, maxTokensKeys: readonly string[]): SamplingRequest {
  if (typeof body.model !== 'string' || body.model === '')
    throw invalidRequest("'model' is required: one of the names GET /v1/models lists", 'model');
  unsupported(body, 'n', [1], 'one choice per request');
  unsupported(body, 'best_of', [1], 'one choice per request');
  unsupported(body, 'logprobs', [false, 0], 'no log probabilities');
  unsupported(body, 'top_logprobs', [0], 'no log probabilities');
  unsupported(body, 'logit_bias', [], 'no logit bias');
  unsupported(body, 'frequency_penalty', [0], 'use repetition_penalty');
  unsupported(body, 'presence_penalty', [0], 'use repetition_penalty');
  let maxTokens: number | null = null;
  for (const key of maxTokensKeys) {
    if (body[key] !== undefined && body[key] !== null)
      maxTokens = number(body, key, 0, 1, Number.MAX_SAFE_INTEGER, true);
  }
  let stop: string[] = [];
  const s = body.stop;
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) {
    if (s.length > 4) throw invalidRequest("'stop' takes at most 4 sequences", 'stop');
    if (!s.every((x) => typeof x === 'string'))
      throw invalidRequest("'stop' must be a string or a list of strings", 'stop');
    stop = s as string[];
  } else if (s !== undefined && s !== null)
    throw invalidRequest("'stop' must be a string or a list of strings", 'stop');
  if (stop.some((x) => x === ''))
    throw invalidRequest("'stop' sequences must not be empty", 'stop');
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && !isObject(streamOptions))
    throw invalidRequest("'stream_options' must be an object", 'stream_options');
  const stream = boolean(body, 'stream');
  if (streamOptions && !stream)
    throw invalidRequest(
      "'stream_options' is only allowed when 'stream' is true",
      'stream_options',
    );
  const seed = body.seed;
  if (
    seed !== undefined &&
    seed !== null &&
    !(typeof seed === 'number' && Number.isSafeInteger(seed))
  )
    throw invalidRequest("'seed' must be an integer", 'seed');
  return {
    model: body.model,
    stream,
    includeUsage: isObject(streamOptions) && streamOptions.include_usage === true,
    maxTokens,
    temperature: number(body, 'temperature', 1, 0, 2),
    topP: number(body, 'top_p', 1, Number.MIN_VALUE, 1),
    // Beyond OpenAI's fields, as llama.cpp's server takes them.
    topK: number(body, 'top_k', 0, 0, Number.MAX_SAFE_INTEGER, true),
    minP: number(body, 'min_p', 0, 0, 0.999999),
    repetitionPenalty: number(body, 'repetition_penalty', 1, Number.MIN_VALUE, 100),
    stop,
    // The sampler's counter-based RNG takes a 32-bit seed.
    seed: typeof seed === 'number' ? Number(BigInt.asUintN(32, BigInt(seed))) : null,
  };
}

export function parseCompletionRequest(body: unknown, vocabSize: number): CompletionRequest {
  if (!isObject(body)) throw invalidRequest('the request body must be a JSON object');
  unsupported(body, 'suffix', [''], 'no fill-in-the-middle');
  let prompt: string | number[];
  const p = body.prompt;
  if (typeof p === 'string') prompt = p;
  else if (Array.isArray(p) && p.length === 1 && typeof p[0] === 'string') prompt = p[0];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'number')) {
    const bad = p.findIndex((x) => !Number.isInteger(x) || x < 0 || x >= vocabSize);
    if (bad >= 0)
      throw invalidRequest(
        `'prompt' token ${bad} (${String(p[bad])}) is not a token id of this model (0 to ${vocabSize - 1})`,
        'prompt',
      );
    prompt = p as number[];
  } else if (p === undefined || p === null) throw invalidRequest("'prompt' is required", 'prompt');
  else
    throw invalidRequest(
      "'prompt' must be a string, a list of one string, or a list of token ids (one prompt per request)",
      'prompt',
    );
  return { ...sampling(body, ['max_tokens']), prompt, echo: boolean(body, 'echo') };
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant']);

function messageText(content: unknown, where: string): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        if (isObject(part) && part.type === 'text' && typeof part.text === 'string')
          return part.text;
        throw invalidRequest(
          `${where}.content[${j}]: only text parts are supported (type "text")`,
          `${where}.content`,
        );
      })
      .join('');
  }
  throw invalidRequest(
    `${where}.content must be a string or a list of text parts`,
    `${where}.content`,
  );
}

export function parseChatRequest(body: unknown): ChatRequest {
  if (!isObject(body)) throw invalidRequest('the request body must be a JSON object');
  unsupported(body, 'tools', [], 'no tool calls');
  unsupported(body, 'tool_choice', ['none'], 'no tool calls');
  unsupported(body, 'functions', [], 'no function calls');
  unsupported(body, 'response_format', [], 'no constrained output');
  const list = body.messages;
  if (!Array.isArray(list) || list.length === 0)
    throw invalidRequest("'messages' must be a non-empty list", 'messages');
  const messages = list.map((m, i): ChatMessage => {
    const where = `messages[${i}]`;
    if (!isObject(m)) throw invalidRequest(`${where} must be an object`, where);
    if (typeof m.role !== 'string' || !ROLES.has(m.role))
      throw invalidRequest(
        `${where}.role must be one of system, developer, user, assistant (got ${JSON.stringify(m.role)})`,
        `${where}.role`,
      );
    // "developer" is OpenAI's newer name for the system message; chat templates know "system".
    const role = m.role === 'developer' ? 'system' : m.role;
    if (m.content === null && role === 'assistant') return { role, content: '' };
    return { role, content: messageText(m.content, where) };
  });
  return { ...sampling(body, ['max_tokens', 'max_completion_tokens']), messages };
}
