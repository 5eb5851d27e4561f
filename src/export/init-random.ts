/**
 * `qlora init-random`: a loadable model of a real family and shape with seeded random weights, for
 * benchmarks and tests. The config is a config.json file, a shape `qlora plan` knows by name, or
 * a family name (its descriptor's default shape); `tiny` shrinks it to a few layers and a small
 * width and vocabulary while keeping the family's structure (io/tiny-config.ts). Weights come from
 * models/synthetic.ts (deterministic per seed and tensor name, one tensor at a time). The tokenizer
 * is TinyLlama's for the Llama-2 vocabulary (32000), else the byte-level fallback
 * (tokenizer/byte-level-fallback.ts), whose `<s>`/`</s>` become the config's bos/eos. Output: an
 * HF folder (config.json, model.safetensors or shards, tokenizer files) or `model.gguf` with the
 * vocabulary inside. Everything is written into a temporary folder inside the output folder and
 * renamed into place at the end, so an interrupted run leaves no half model.
 */
import { fs, path, nodeBuiltin } from '../io/host.js';
import { configFromHf, type LlamaConfig } from '../io/config.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { tinyHfConfig } from '../io/tiny-config.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import { syntheticSource } from '../models/synthetic.js';
import { FAMILIES, familyOf } from '../models/registry.js';
import { byteLevelFallbackTokenizer } from '../tokenizer/byte-level-fallback.js';
import { namedHfConfig, NAMED_SHAPES } from '../train/plan-shapes.js';
import { type HfDtype, writeHfFolder } from './hf-writer.js';
import { type GgufDtype, exportGgufModel } from './gguf-model.js';
import { vocabFromHfFolder } from './gguf-vocab.js';

export interface InitRandomOptions {
  /** A config.json path, a named shape, or a family name. */
  readonly config: string;
  readonly output: string;
  readonly format?: 'hf' | 'gguf';
  readonly seed?: number;
  readonly tiny?: boolean;
  /** Tensor type (HF: f32/f16/bf16, GGUF: f32/f16/bf16/q8_0/q4_0/q4_k); f32 by default. */
  readonly dtype?: string;
}

export interface InitRandomResult {
  /** What to pass as --model: the folder (HF) or the .gguf file. */
  readonly model: string;
  readonly config: LlamaConfig;
  /** Where the config came from (file, shape, or family → shape). */
  readonly source: string;
  readonly files: string[];
  readonly warnings: string[];
}

/** The config.json object `spec` names, and a label for it. */
export function resolveModelConfig(spec: string): { hf: Record<string, unknown>; source: string } {
  const family = FAMILIES.find((f) => f.name === spec.toLowerCase());
  if (family) {
    const shape = family.defaultShape;
    const hf = shape === undefined ? null : namedHfConfig(shape);
    if (!hf)
      throw new Error(
        `family '${family.name}' has no named shape to stand for it: pass its config.json`,
      );
    return { hf, source: `${family.name} (${shape})` };
  }
  const named = namedHfConfig(spec);
  if (named) return { hf: named, source: spec.toLowerCase() };
  if (fs.existsSync(spec)) {
    const file = fs.statSync(spec).isDirectory() ? path.join(spec, 'config.json') : spec;
    let hf: unknown;
    try {
      hf = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`${file}: cannot read JSON: ${(e as Error).message}`);
    }
    if (hf === null || typeof hf !== 'object' || Array.isArray(hf))
      throw new Error(`${file}: not a JSON object`);
    return { hf: hf as Record<string, unknown>, source: file };
  }
  throw new Error(
    `${spec}: not a config.json, a known shape (${NAMED_SHAPES.join(', ')}) nor a family (${FAMILIES.map((f) => f.name).join(', ')})`,
  );
}

const fixturesDir = (): string =>
  nodeBuiltin<typeof import('node:url')>('node:url')!.fileURLToPath(
    new URL('../../fixtures/', import.meta.url),
  );

/** Writes a tokenizer for `hf` into `dir`; returns the config with bos/eos that tokenizer has. */
function writeTokenizer(dir: string, hf: Record<string, unknown>): Record<string, unknown> {
  const vocab = hf.vocab_size as number;
  const json = (name: string, value: unknown): void => {
    const bytes = new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`);
    writeFileAtomic(path.join(dir, name), (fd) => writeAll(fd, bytes));
  };
  if (vocab === 32000) {
    // The Llama-2 vocabulary: TinyLlama's tokenizer (fixtures/tokenizers/tinyllama, Apache-2.0).
    const zlib = nodeBuiltin<typeof import('node:zlib')>('node:zlib')!;
    const tiny = path.join(fixturesDir(), 'tokenizers', 'tinyllama');
    const raw = zlib.gunzipSync(fs.readFileSync(path.join(tiny, 'tokenizer.json.gz')));
    writeFileAtomic(path.join(dir, 'tokenizer.json'), (fd) => writeAll(fd, raw));
    fs.copyFileSync(
      path.join(tiny, 'tokenizer_config.json'),
      path.join(dir, 'tokenizer_config.json'),
    );
    return { ...hf, bos_token_id: 1, eos_token_id: 2 };
  }
  // A family whose tokenizer starts sequences with BOS keeps doing so (Llama, Mistral); Qwen's
  // does not (its transformers default bos_token_id is null, though configs name one).
  const bos = familyOf(configFromHf(hf)).hf.defaults.bosTokenId !== null;
  const t = byteLevelFallbackTokenizer(vocab, { bos });
  json('tokenizer.json', t.tokenizerJson);
  json('tokenizer_config.json', t.tokenizerConfig);
  return { ...hf, bos_token_id: t.bosId, eos_token_id: t.eosId };
}

/** A Checkpoint over synthetic weights (what the writers consume). */
function syntheticCheckpoint(config: LlamaConfig, seed: number, dir: string): Checkpoint {
  const src = syntheticSource(config, seed);
  return {
    config,
    source: 'hf',
    path: dir,
    tensorNames: src.names,
    has: (n) => src.has(n),
    shapeOf: (n) => src.shape(n),
    loadTensor: (n) => src.load(n),
    load: (n) => src.load(n),
    loadQuantized: () => null,
    close: () => {},
  };
}

export function initRandomModel(o: InitRandomOptions): InitRandomResult {
  const format = o.format ?? 'hf';
  const seed = o.seed ?? 1234;
  if (!Number.isSafeInteger(seed) || seed < 0)
    throw new Error(`--seed ${seed}: not a non-negative integer`);
  const resolved = resolveModelConfig(o.config);
  let hf = o.tiny ? tinyHfConfig(resolved.hf, {}, resolved.source) : { ...resolved.hf };
  // Validated (and the family found) before anything is written.
  configFromHf(hf, resolved.source);
  const out = o.output;
  if (fs.existsSync(out) && (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0))
    throw new Error(`${out}: exists and is not an empty folder (choose a new output folder)`);
  fs.mkdirSync(out, { recursive: true });
  const staging = path.join(out, '.init-random.tmp');
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging);
  try {
    hf = writeTokenizer(staging, hf);
    const config = configFromHf(hf, resolved.source);
    const warnings: string[] = [];
    let files: string[];
    if (format === 'hf') {
      const dtype = (o.dtype ?? 'f32') as HfDtype;
      if (!['f32', 'f16', 'bf16'].includes(dtype))
        throw new Error(`--dtype ${dtype} is not available for an HF folder (f32, f16, bf16)`);
      const r = writeHfFolder(syntheticCheckpoint(config, seed, staging), staging, { dtype });
      warnings.push(...r.warnings);
      // The config as given (family fields the normalized config does not carry stay).
      const torchDtype = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[dtype];
      const bytes = new TextEncoder().encode(
        `${JSON.stringify({ ...hf, torch_dtype: torchDtype }, null, 2)}\n`,
      );
      writeFileAtomic(path.join(staging, 'config.json'), (fd) => writeAll(fd, bytes));
      files = fs.readdirSync(staging);
    } else {
      const dtype = (o.dtype ?? 'f32') as GgufDtype;
      const r = exportGgufModel(
        syntheticCheckpoint(config, seed, staging),
        path.join(staging, 'model.gguf'),
        {
          dtype,
          vocab: vocabFromHfFolder(staging, config.vocabSize),
          name: path.basename(path.resolve(out)),
        },
      );
      warnings.push(...r.warnings);
      for (const f of fs.readdirSync(staging))
        if (f !== 'model.gguf') fs.rmSync(path.join(staging, f));
      files = ['model.gguf'];
    }
    for (const f of files) fs.renameSync(path.join(staging, f), path.join(out, f));
    fs.rmSync(staging, { recursive: true, force: true });
    // Proof that what was written loads: the config and every tensor's shape.
    const model = format === 'hf' ? out : path.join(out, 'model.gguf');
    openCheckpoint(model).close();
    return { model, config, source: resolved.source, files, warnings };
  } catch (e) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw e;
  }
}
