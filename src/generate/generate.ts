import type { Arena } from '../tensor/arena.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { CausalLM } from '../models/causal-lm.js';
import { KvCache } from '../models/kv-cache.js';
import {
  DEFAULT_SAMPLING,
  type SamplingOptions,
  sampleToken,
  validateSampling,
} from './sampler.js';

/** The most prompt tokens one forward takes (longer prompts are prefilled in chunks). */
export const PREFILL_CHUNK = 512;

export interface GenerateOptions extends Partial<SamplingOptions> {
  readonly maxTokens?: number;
  /** Generation stops when one of these ids is produced (default: the tokenizer's eos ids). */
  readonly stopTokens?: readonly number[];
  /** Generation stops when the text contains one of these strings (the stop string is not returned). */
  readonly stopStrings?: readonly string[];
  /** Context length to reserve for the KV cache (default: prompt + maxTokens). */
  readonly contextLength?: number;
}

export interface GenerationStep {
  /** New text since the previous step (complete UTF-8 characters only). */
  readonly text: string;
  readonly token: number;
}

export interface GenerationResult {
  readonly tokens: number[];
  readonly text: string;
  readonly finishReason: 'stop-token' | 'stop-string' | 'max-tokens' | 'context-full';
  readonly promptTokens: number;
  /** Seconds spent on the prompt (prefill) and on generated tokens (decode). */
  readonly prefillSeconds: number;
  readonly decodeSeconds: number;
}

/**
 * Autoregressive generation with a KV cache: one prefill over the prompt, then one forward per
 * new token. `onStep` receives text as it becomes printable (streaming).
 */
export async function generate(
  model: CausalLM,
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  arena: Arena,
  options: GenerateOptions = {},
  onStep?: (step: GenerationStep) => void,
): Promise<GenerationResult> {
  const sampling: SamplingOptions = { ...DEFAULT_SAMPLING, ...definedOnly(options) };
  validateSampling(sampling);
  const maxTokens = options.maxTokens ?? 256;
  if (promptIds.length === 0)
    throw new Error('generate: the prompt is empty (no tokens and no BOS)');
  const capacity = options.contextLength ?? promptIds.length + maxTokens;
  const stopTokens = new Set(options.stopTokens ?? tokenizer.eosIds);
  const stopStrings = options.stopStrings ?? [];
  // Prompts are prefilled in chunks, so the sliding-window layers' caches hold a bounded number of
  // positions however long the prompt and the generation (KvCache maxAppend).
  const cache = new KvCache(model, Math.max(capacity, promptIds.length + 1), {
    maxAppend: PREFILL_CHUNK,
  });
  const out: number[] = [];
  let finishReason: GenerationResult['finishReason'] = 'max-tokens';
  let emitted = '';
  const context = [...promptIds];
  let prefillSeconds = 0;
  let decodeSeconds = 0;
  try {
    let next: Int32Array = Int32Array.from(promptIds);
    for (let step = 0; step < maxTokens; step++) {
      if (cache.length + next.length > cache.capacity) {
        finishReason = 'context-full';
        break;
      }
      const t0 = performance.now();
      let logits: Tensor | null = null;
      for (let at = 0; at < next.length; at += PREFILL_CHUNK) {
        arena.reset();
        logits = model.forwardCached(next.subarray(at, at + PREFILL_CHUNK), cache, arena, 1);
      }
      const row = await logits!.read();
      const elapsed = (performance.now() - t0) / 1000;
      if (step === 0) prefillSeconds += elapsed;
      else decodeSeconds += elapsed;
      const token = sampleToken(row, context, step, sampling);
      if (stopTokens.has(token)) {
        finishReason = 'stop-token';
        break;
      }
      out.push(token);
      context.push(token);
      const text = tokenizer.decode(out, { skipSpecialTokens: true });
      const stopAt = firstStop(text, stopStrings);
      if (stopAt >= 0) {
        const piece = printable(text.slice(0, stopAt)).slice(emitted.length);
        if (piece) onStep?.({ text: piece, token });
        emitted = text.slice(0, stopAt);
        finishReason = 'stop-string';
        break;
      }
      // Text that may be the start of a stop string waits until it is known not to be one.
      const ready = withoutStopPrefix(printable(text), stopStrings);
      if (ready.length > emitted.length) {
        onStep?.({ text: ready.slice(emitted.length), token });
        emitted = ready;
      }
      next = Int32Array.of(token);
    }
  } finally {
    cache.dispose();
    arena.reset();
  }
  const finalText =
    finishReason === 'stop-string' ? emitted : tokenizer.decode(out, { skipSpecialTokens: true });
  if (finishReason !== 'stop-string' && finalText.length > emitted.length) {
    onStep?.({ text: finalText.slice(emitted.length), token: out[out.length - 1] ?? -1 });
  }
  return {
    tokens: out,
    text: finalText,
    finishReason,
    promptTokens: promptIds.length,
    prefillSeconds,
    decodeSeconds,
  };
}

/** Text up to the last complete character (a trailing U+FFFD may be half of a multi-byte char). */
function printable(text: string): string {
  return text.endsWith('\uFFFD') ? text.slice(0, -1) : text;
}

/** `text` less its longest ending that is the beginning of a stop string. */
function withoutStopPrefix(text: string, stops: readonly string[]): string {
  let cut = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > cut; n--) {
      if (text.endsWith(s.slice(0, n))) {
        cut = n;
        break;
      }
    }
  }
  return text.slice(0, text.length - cut);
}

function firstStop(text: string, stops: readonly string[]): number {
  let best = -1;
  for (const s of stops) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
