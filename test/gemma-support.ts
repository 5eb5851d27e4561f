// Shared pieces of the Gemma tests: the transformers-written fixtures (fixtures/gemma/, written by
// scripts/gemma-reference.py), all-position logits of a model, and a backend whose GeGLU rounds as
// llama.cpp's CPU build does (ggml's fp16 GELU table), to tell that rounding from real differences.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { f16ToF32, f32ToF16 } from '../src/io/half.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level-bpe.js';
import { KvCache, type LlamaModel } from '../src/models/llama.js';
import type { Backend } from '../src/tensor/backend.js';
import type { Tensor } from '../src/tensor/tensor.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
export const GEMMA_FIXTURES = ['gemma2-tiny', 'gemma3-tiny'] as const;

export interface GemmaReference {
  readonly provenance: Record<string, string>;
  readonly input_ids: number[];
  readonly logits: number[][];
  readonly peft_keys: string[];
}

export function gemmaFixture(name: string): { dir: string; ref: GemmaReference } {
  const dir = path.join(root, 'fixtures', 'gemma', name);
  return {
    dir,
    ref: JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8')) as GemmaReference,
  };
}

/** Logits [T, V] of every position of `ids`, one prefill through the KV cache. */
export async function allLogits(model: LlamaModel, ids: readonly number[]): Promise<Float32Array> {
  const arena = model.backend.createArena();
  const cache = new KvCache(model, ids.length);
  try {
    const out = model.forwardCached(Int32Array.from(ids), cache, arena, ids.length);
    return Float32Array.from(await out.read());
  } finally {
    cache.dispose();
    arena.dispose();
  }
}

const SQRT_2_OVER_PI = Math.fround(Math.sqrt(2 / Math.PI));
const GELU_COEF_A = Math.fround(0.044715);

/** ggml_gelu_f32 in float32 steps. */
function ggmlGeluF32(x: number): number {
  const f = Math.fround;
  const inner = f(f(SQRT_2_OVER_PI * x) * f(1 + f(f(GELU_COEF_A * x) * x)));
  return f(f(0.5 * x) * f(1 + f(Math.tanh(inner))));
}

/**
 * `cpu` with GeGLU computed as llama.cpp's CPU backend computes it (ggml_vec_geglu_f32 under
 * GGML_GELU_FP16, on by default): the gate rounded to fp16 and GELU looked up in an fp16 table
 * (ggml_table_gelu_f16), so up to ~1e-3 relative error per element. Inference only.
 */
export function ggmlGeluBackend(cpu: Backend): Backend {
  const geglu = (gate: Tensor, up: Tensor, out: Tensor): void => {
    const g = gate.data as Float32Array;
    const u = up.data as Float32Array;
    const o = out.data as Float32Array;
    for (let i = 0; i < o.length; i++) {
      const x = g[i]!;
      if (x <= -10) o[i] = 0;
      else if (x >= 10) o[i] = Math.fround(x * u[i]!);
      else {
        const table = f16ToF32(f32ToF16(ggmlGeluF32(f16ToF32(f32ToF16(x)))));
        o[i] = Math.fround(table * u[i]!);
      }
    }
  };
  return new Proxy(cpu, {
    get(target, key) {
      if (key === 'geglu') return geglu;
      const v = Reflect.get(target, key, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** GPT-2's byte → printable-character map, so 256 byte tokens make a valid byte-level vocabulary. */
function byteTokens(): string[] {
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) =>
    String.fromCodePoint(printable(b) ? b : 256 + extra++),
  );
}

/**
 * A copy of a Gemma fixture folder under `tmp` with config.json changed by `edit` and a byte-level
 * tokenizer.json whose 256 tokens are the bytes (the fixtures' vocabulary size).
 */
export function fixtureCopy(
  tmp: string,
  name: string,
  edit: (c: Record<string, unknown>) => void = () => {},
): string {
  const { dir } = gemmaFixture(name);
  const out = path.join(tmp, name);
  fs.mkdirSync(out, { recursive: true });
  fs.copyFileSync(path.join(dir, 'model.safetensors'), path.join(out, 'model.safetensors'));
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  edit(config);
  fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify(config, null, 2));
  const json = byteLevelTokenizerJson({
    tokens: byteTokens(),
    merges: [],
    addedTokens: [],
    pre: undefined,
    bosToPrepend: null,
    eosToAppend: null,
  });
  fs.writeFileSync(path.join(out, 'tokenizer.json'), JSON.stringify(json));
  return out;
}
