// The parsers the fuzzer attacks: for each, seed files built from the real fixtures, a mutator
// suited to the format (bytes and header fields for binary files, values and syntax for JSON and
// text) and a loader that exercises the file the way the CLI does. Everything is derived from a
// seeded RNG, so (subject, seed, case) reproduces a case exactly.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatRenderError, ChatTemplate } from '../../src/data/chat-template.js';
import { loadDataset, type DatasetOptions } from '../../src/data/dataset.js';
import { hfTokenizerFilesFromVocab } from '../../src/export/hf-tokenizer-files.js';
import { exportGgufLora } from '../../src/export/gguf-lora.js';
import { loadLoraAdapter } from '../../src/io/gguf-lora.js';
import { canonicalShapes, openCheckpoint } from '../../src/io/checkpoint.js';
import { configToHf, type LlamaConfig } from '../../src/io/config.js';
import { readGgufMetadata } from '../../src/io/gguf.js';
import {
  ADAPTER_CONFIG,
  ADAPTER_WEIGHTS,
  adapterConfigJson,
  loadPeftAdapter,
} from '../../src/io/peft.js';
import { SafetensorsFile, writeSafetensors } from '../../src/io/safetensors.js';
import { loadTokenizer, type Tokenizer } from '../../src/tokenizer/index.js';
import { RAW_ENGINE_TEXT_IN_TEMPLATES } from './classify.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixture = (p: string): string => path.join(root, 'fixtures', p);

export type Rng = () => number;

/** One fuzz case: files to write into a fresh folder, which of them was mutated, and how to load them. */
export interface FuzzCase {
  readonly files: ReadonlyMap<string, Uint8Array>;
  /** The mutated file (its name, or its folder's, must appear in any error message). */
  readonly target: string;
  readonly load: (dir: string) => Promise<void> | void;
}

export interface Subject {
  readonly name: string;
  make(r: Rng): FuzzCase;
}

/** mulberry32, as test/util.ts. */
export function rng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A case's own seed: a hash of the run seed and the case index, so any case replays alone. */
export function caseSeed(runSeed: number, index: number): number {
  let h = (runSeed ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ index, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: Rng, n: number): number => Math.floor(r() * n);

// ---------------------------------------------------------------------------------------------
// Mutators

/** Integers that break size arithmetic: zero, signs, powers of two and their neighbours. */
const INTERESTING = [
  0,
  1,
  2,
  3,
  7,
  8,
  255,
  256,
  0x7fff,
  0xffff,
  0x10000,
  0x7fffffff,
  0x80000000,
  0xffffffff,
  2 ** 20,
  2 ** 31 - 1,
  1e9,
];

/** Byte-level mutations, concentrated in the first `hot` bytes (headers, metadata). */
export function mutateBytes(src: Uint8Array, r: Rng, hot: number): Uint8Array {
  let b = Uint8Array.from(src);
  const where = (): number =>
    r() < 0.85 ? int(r, Math.max(1, Math.min(hot, b.length))) : int(r, Math.max(1, b.length));
  const edits = 1 + int(r, 4);
  for (let e = 0; e < edits; e++) {
    switch (int(r, 7)) {
      case 0: // flip bits
        if (b.length > 0) {
          const at = where();
          b[at] = b[at]! ^ (1 + int(r, 255));
        }
        break;
      case 1: // truncate
        b = b.subarray(0, where());
        break;
      case 2: // u32 field
      case 3: {
        const at = where() & ~3;
        if (at + 4 <= b.length)
          new DataView(b.buffer, b.byteOffset).setUint32(at, pick(r, INTERESTING) >>> 0, true);
        break;
      }
      case 4: {
        // u64 field
        const at = where() & ~7;
        if (at + 8 <= b.length) {
          const v =
            r() < 0.5
              ? BigInt(pick(r, INTERESTING))
              : (1n << BigInt(int(r, 64))) - BigInt(int(r, 2));
          new DataView(b.buffer, b.byteOffset).setBigUint64(at, BigInt.asUintN(64, v), true);
        }
        break;
      }
      case 5: {
        // insert random bytes
        const at = where();
        const ins = Uint8Array.from({ length: 1 + int(r, 16) }, () => int(r, 256));
        const out = new Uint8Array(b.length + ins.length);
        out.set(b.subarray(0, at));
        out.set(ins, at);
        out.set(b.subarray(at), at + ins.length);
        b = out;
        break;
      }
      default: {
        // copy a span over another
        if (b.length > 16) {
          const from = where();
          const to = where();
          const n = Math.min(1 + int(r, 32), b.length - Math.max(from, to));
          if (n > 0) b.copyWithin(to, from, from + n);
        }
      }
    }
  }
  return b;
}

/** Values that JSON consumers mishandle: wrong types, huge or negative numbers, odd strings, deep nesting. */
function hostileValue(r: Rng): unknown {
  switch (int(r, 14)) {
    case 0:
      return null;
    case 1:
      return pick(r, [true, false]);
    case 2:
      return pick(r, [-1, 0, 0.5, 2 ** 31, 2 ** 53, -(2 ** 31), 1e308, 2147483648, 4294967295]);
    case 3:
      return pick(r, ['', 'x', '<s>', '\u0000', '\ud800', '{{', '{% for %}', 'NaN']);
    case 4:
      return [];
    case 5:
      return {};
    case 6:
      return [pick(r, [1, 'a', null, [1, 2]])];
    case 7:
      return { content: 1, role: [] };
    case 8:
      return 'x'.repeat(int(r, 5000));
    case 9:
      return Array.from({ length: int(r, 50) }, (_, i) => i);
    case 10: {
      let v: unknown = 1;
      for (let i = 0, n = int(r, 200); i < n; i++) v = [v];
      return v;
    }
    case 11:
      return pick(r, [{ Regex: '(a+)+b' }, { Regex: '[' }, { String: 7 }, { Regex: '\\s+' }]);
    case 12:
      return pick(r, [
        'BPE',
        'Unigram',
        'WordPiece',
        'Sequence',
        'Split',
        'ByteLevel',
        'Metaspace',
        'Nope',
      ]);
    default:
      return int(r, 1000);
  }
}

/** Replaces, deletes or adds one value at a random place in a JSON document. */
function mutateJsonValue(doc: unknown, r: Rng): unknown {
  const root = structuredClone(doc);
  // Walk down a random path (at most ~8 levels), remembering the container.
  let parent: Record<string, unknown> | unknown[] | null = null;
  let key: string | number | null = null;
  let node: unknown = root;
  for (
    let depth = 0;
    depth < 8 && node !== null && typeof node === 'object' && r() < 0.8;
    depth++
  ) {
    const size = Array.isArray(node) ? node.length : Object.keys(node).length;
    if (size === 0) break;
    // Big arrays: prefer the start.
    const k: string | number = Array.isArray(node)
      ? r() < 0.7
        ? int(r, Math.min(size, 8))
        : int(r, size)
      : pick(r, Object.keys(node));
    parent = node as Record<string, unknown> | unknown[];
    key = k;
    node = (node as Record<string | number, unknown>)[k];
  }
  if (parent === null || key === null) return hostileValue(r);
  const op = int(r, 4);
  if (op === 0 && !Array.isArray(parent)) delete (parent as Record<string, unknown>)[key as string];
  else if (op === 1 && Array.isArray(parent)) parent.splice(key as number, 1);
  else if (op === 2 && !Array.isArray(parent))
    (parent as Record<string, unknown>)[
      pick(r, [
        'id',
        'type',
        'vocab',
        'merges',
        'content',
        'pattern',
        'chat_template',
        'r',
        'num_hidden_layers',
      ])
    ] = hostileValue(r);
  else (parent as Record<string | number, unknown>)[key] = hostileValue(r);
  return root;
}

const NASTY = [
  '"',
  '{',
  '}',
  '[',
  ']',
  ',',
  ':',
  '\n',
  '\r',
  '\t',
  '\\',
  '\\u',
  '\\ud800',
  'null',
  '1e999',
  '-',
  '\u0000',
  '\uFEFF',
  '😀',
  '{{',
  '}}',
  '{%',
  '%}',
  '{% endfor %}',
  '{{ x.y.z }}',
  '{% for i in range(99999999) %}',
];

/** Text-level mutations (syntax damage) for JSON, CSV, templates and plain text. */
export function mutateText(s: string, r: Rng): string {
  const edits = 1 + int(r, 3);
  for (let e = 0; e < edits; e++) {
    const at = int(r, s.length + 1);
    switch (int(r, 5)) {
      case 0:
        s = s.slice(0, at);
        break;
      case 1:
        s = s.slice(0, at) + s.slice(at + 1 + int(r, 20));
        break;
      case 2:
        s = s.slice(0, at) + pick(r, NASTY) + s.slice(at);
        break;
      case 3: {
        const lines = s.split('\n');
        const i = int(r, lines.length);
        lines.splice(i, 0, lines[i] ?? '');
        s = lines.join('\n');
        break;
      }
      default:
        s =
          s.slice(0, at) +
          Array.from({ length: 1 + int(r, 8) }, () => String.fromCharCode(int(r, 256))).join('') +
          s.slice(at);
    }
  }
  return s;
}

/** A JSON file: mostly structural value mutations, sometimes syntax damage. */
function mutateJsonFile(doc: unknown, r: Rng): Uint8Array {
  let text: string;
  if (r() < 0.7) {
    let d = doc;
    for (let i = 0, n = 1 + int(r, 3); i < n; i++) d = mutateJsonValue(d, r);
    text = JSON.stringify(d);
  } else {
    text = mutateText(JSON.stringify(doc), r);
  }
  return Buffer.from(text, 'utf8');
}

// ---------------------------------------------------------------------------------------------
// Seeds (built once per process)

interface Seeds {
  stories: { gguf: Uint8Array; bin: Uint8Array; tok: Uint8Array; config: LlamaConfig };
  safetensors: Uint8Array;
  hfConfig: Record<string, unknown>;
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  adapterConfig: Record<string, unknown>;
  adapterWeights: Uint8Array;
  ggufLora: Uint8Array;
}

let seeds: Seeds | null = null;

export function buildSeeds(scratch: string): Seeds {
  if (seeds) return seeds;
  fs.mkdirSync(scratch, { recursive: true });
  const read = (p: string): Uint8Array => new Uint8Array(fs.readFileSync(p));
  const ck = openCheckpoint(fixture('stories260K/stories260K.bin'));
  const config = ck.config;
  const stFile = path.join(scratch, 'seed.safetensors');
  try {
    writeSafetensors(
      stFile,
      ck.tensorNames.map((n, i) => ({
        name: n,
        dtype: ['F32', 'F16', 'BF16'][i % 3]!,
        shape: [...ck.shapeOf(n)],
        data: ck.loadTensor(n),
      })),
      { format: 'pt' },
    );
  } finally {
    ck.close();
  }
  const files = hfTokenizerFilesFromVocab(
    readGgufMetadata(fixture('stories260K/stories260K.gguf')).metadata,
  );
  // A small PEFT adapter (r=2 on q_proj/v_proj of every layer) and its GGUF LoRA export.
  const shapes = canonicalShapes(config);
  const adapterDir = path.join(scratch, 'seed-adapter');
  fs.mkdirSync(adapterDir, { recursive: true });
  const lora = {
    r: 2,
    alpha: 4,
    dropout: 0,
    useRslora: false,
    init: 'kaiming' as const,
    seed: 0,
    targets: ['q_proj', 'v_proj'] as ('q_proj' | 'v_proj')[],
    layers: null as number[] | null,
  };
  const tensors = [];
  for (let l = 0; l < config.numLayers; l++) {
    for (const proj of lora.targets) {
      const [out, inF] = shapes.get(`model.layers.${l}.self_attn.${proj}.weight`)!;
      const key = `base_model.model.model.layers.${l}.self_attn.${proj}`;
      tensors.push({
        name: `${key}.lora_A.weight`,
        dtype: 'F32',
        shape: [2, inF!],
        data: Float32Array.from({ length: 2 * inF! }, (_, i) => Math.sin(i) / 8),
      });
      tensors.push({
        name: `${key}.lora_B.weight`,
        dtype: 'F32',
        shape: [out!, 2],
        data: Float32Array.from({ length: 2 * out! }, (_, i) => Math.cos(i) / 8),
      });
    }
  }
  writeSafetensors(path.join(adapterDir, ADAPTER_WEIGHTS), tensors);
  const adapterConfig = adapterConfigJson(lora, null);
  fs.writeFileSync(path.join(adapterDir, ADAPTER_CONFIG), JSON.stringify(adapterConfig));
  const ggufLora = path.join(scratch, 'seed-lora.gguf');
  exportGgufLora(loadPeftAdapter(adapterDir), config, ggufLora);
  seeds = {
    stories: {
      gguf: read(fixture('stories260K/stories260K.gguf')),
      bin: read(fixture('stories260K/stories260K.bin')),
      tok: read(fixture('stories260K/tok512.bin')),
      config,
    },
    safetensors: read(stFile),
    hfConfig: configToHf(config),
    tokenizerJson: files.tokenizerJson,
    tokenizerConfig: {
      ...files.tokenizerConfig,
      chat_template: JSON.parse(
        fs.readFileSync(fixture('chat-templates/tinyllama-tokenizer_config.json'), 'utf8'),
      ).chat_template,
    },
    adapterConfig,
    adapterWeights: read(path.join(adapterDir, ADAPTER_WEIGHTS)),
    ggufLora: read(ggufLora),
  };
  return seeds;
}

// ---------------------------------------------------------------------------------------------
// Loaders

function loadAll(p: string): void {
  const ck = openCheckpoint(p);
  try {
    for (const n of ck.tensorNames) ck.loadTensor(n);
  } finally {
    ck.close();
  }
}

const SAMPLE =
  'Once upon a time, there was a little girl named Lily. 😀 héllo\n\n  tabs\tand <s> special </s>';

function exercise(tok: Tokenizer): void {
  const ids = tok.encode(SAMPLE);
  for (const id of ids)
    if (!Number.isInteger(id) || id < 0) throw new Error(`encode produced id ${String(id)}`);
  tok.decode(ids);
}

const CHAT = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi there' },
  { role: 'assistant', content: 'Hello!' },
];

const utf8 = (s: string): Uint8Array => Buffer.from(s, 'utf8');
const json = (v: unknown): Uint8Array => utf8(JSON.stringify(v));

// Data files: small seeds in each format.
const DATA_SEEDS: { ext: string; text: () => string }[] = [
  {
    ext: '.csv',
    text: () =>
      fs
        .readFileSync(fixture('datasets/viggo/train.csv'), 'utf8')
        .split('\n')
        .slice(0, 8)
        .join('\n'),
  },
  { ext: '.tsv', text: () => 'prompt\tcompletion\nHi\tHello\n"quoted\tfield"\tyes\n' },
  {
    ext: '.json',
    text: () =>
      JSON.stringify(
        JSON.parse(
          fs.readFileSync(fixture('datasets/llamafactory_identity/identity.json'), 'utf8'),
        ).slice(0, 4),
        null,
        2,
      ),
  },
  {
    ext: '.txt',
    text: () =>
      fs.readFileSync(fixture('datasets/tinyshakespeare/input.txt'), 'utf8').slice(0, 1200),
  },
  {
    ext: '.jsonl',
    text: () =>
      [
        '{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}]}',
        '{"prompt":"2+2=","completion":"4"}',
        '{"text":"plain words"}',
        '{"instruction":"Say hi","input":"","output":"hi"}',
        '{"conversations":[{"from":"human","value":"a"},{"from":"gpt","value":"b"}]}',
      ].join('\n'),
  },
];

export function subjects(scratch: string): Subject[] {
  const s = buildSeeds(scratch);
  const config = s.stories.config;
  const tokenizerFolderFiles = (
    tokenizerJson: Uint8Array,
    tokenizerConfig: Uint8Array,
  ): Map<string, Uint8Array> =>
    new Map([
      ['tokenizer.json', tokenizerJson],
      ['tokenizer_config.json', tokenizerConfig],
    ]);
  let stTokenizer: Tokenizer | null = null;
  const storiesTokenizer = (): Tokenizer =>
    (stTokenizer ??= loadTokenizer(fixture('stories260K/tok512.bin'), { vocabSize: 512 }));
  return [
    {
      name: 'safetensors',
      make: (r) => ({
        files: new Map([['model.safetensors', mutateBytes(s.safetensors, r, 1500)]]),
        target: 'model.safetensors',
        load: (dir) => {
          const f = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
          try {
            for (const t of f.tensors.values()) {
              if (t.dtype === 'U8') f.readRaw(t.name);
              else f.readF32(t.name);
            }
          } finally {
            f.close();
          }
        },
      }),
    },
    {
      name: 'hf-config',
      make: (r) => ({
        files: new Map([
          ['config.json', mutateJsonFile(s.hfConfig, r)],
          ['model.safetensors', s.safetensors],
        ]),
        target: 'config.json',
        load: (dir) => loadAll(dir),
      }),
    },
    {
      // As a checkpoint, or as the vocabulary in its metadata (tokenizer.ggml.*).
      name: 'gguf',
      make: (r) => {
        const asTokenizer = r() < 0.4;
        return {
          files: new Map([['model.gguf', mutateBytes(s.stories.gguf, r, 14176)]]),
          target: 'model.gguf',
          load: (dir) =>
            asTokenizer
              ? exercise(loadTokenizer(path.join(dir, 'model.gguf')))
              : loadAll(path.join(dir, 'model.gguf')),
        };
      },
    },
    {
      name: 'llama2c',
      make: (r) => ({
        files: new Map([['model.bin', mutateBytes(s.stories.bin, r, 28)]]),
        target: 'model.bin',
        load: (dir) => loadAll(path.join(dir, 'model.bin')),
      }),
    },
    {
      name: 'tokenizer.bin',
      make: (r) => {
        const withVocab = r() < 0.5;
        return {
          files: new Map([['tokenizer.bin', mutateBytes(s.stories.tok, r, 6227)]]),
          target: 'tokenizer.bin',
          load: (dir) =>
            exercise(
              loadTokenizer(path.join(dir, 'tokenizer.bin'), withVocab ? { vocabSize: 512 } : {}),
            ),
        };
      },
    },
    {
      name: 'tokenizer.json',
      make: (r) => ({
        files: tokenizerFolderFiles(mutateJsonFile(s.tokenizerJson, r), json(s.tokenizerConfig)),
        target: 'tokenizer.json',
        load: (dir) => exercise(loadTokenizer(dir)),
      }),
    },
    {
      name: 'tokenizer_config.json',
      make: (r) => {
        let config: Uint8Array;
        if (r() < 0.5) {
          // Damage the chat template's text.
          config = json({
            ...s.tokenizerConfig,
            chat_template: mutateText(String(s.tokenizerConfig.chat_template), r),
          });
        } else {
          config = mutateJsonFile(s.tokenizerConfig, r);
        }
        return {
          files: tokenizerFolderFiles(json(s.tokenizerJson), config),
          target: 'tokenizer_config.json',
          load: (dir) => {
            const tok = loadTokenizer(dir);
            exercise(tok);
            if (tok.chatTemplate) {
              const t = new ChatTemplate(tok.chatTemplate, {
                bosToken: tok.bosToken,
                eosToken: tok.eosToken,
                file: path.join(dir, 'tokenizer_config.json'),
              });
              try {
                t.renderWithAssistantSpans(CHAT);
              } catch (e) {
                // A template that cannot render a row is a row error (the loader adds file and row):
                // fine unless its message is raw engine text.
                if (!(e instanceof ChatRenderError) || RAW_ENGINE_TEXT_IN_TEMPLATES.test(e.message))
                  throw e;
              }
            }
          },
        };
      },
    },
    {
      name: 'peft',
      make: (r) => {
        const weights = r() < 0.5;
        return {
          files: new Map([
            [ADAPTER_CONFIG, weights ? json(s.adapterConfig) : mutateJsonFile(s.adapterConfig, r)],
            [ADAPTER_WEIGHTS, weights ? mutateBytes(s.adapterWeights, r, 2000) : s.adapterWeights],
          ]),
          target: weights ? ADAPTER_WEIGHTS : ADAPTER_CONFIG,
          load: (dir) => void loadLoraAdapter(dir, config),
        };
      },
    },
    {
      name: 'gguf-lora',
      make: (r) => ({
        files: new Map([['adapter.gguf', mutateBytes(s.ggufLora, r, 2000)]]),
        target: 'adapter.gguf',
        load: (dir) => void loadLoraAdapter(path.join(dir, 'adapter.gguf'), config),
      }),
    },
    {
      name: 'data',
      make: (r) => {
        const seed = pick(r, DATA_SEEDS);
        const ext = r() < 0.8 ? seed.ext : pick(r, DATA_SEEDS).ext;
        const bytes =
          r() < 0.1
            ? Uint8Array.from({ length: int(r, 400) }, () => int(r, 256))
            : Buffer.from(mutateText(seed.text(), r), r() < 0.8 ? 'utf8' : 'latin1');
        const name = `data${ext}`;
        const options: DatasetOptions = {
          maxSeqLen: pick(r, [2, 8, 64, 256]),
          format: r() < 0.7 ? 'auto' : pick(r, ['text', 'completion', 'alpaca', 'chat'] as const),
          skipBadRows: r() < 0.5,
          validFraction: pick(r, [0, 0.05, 0.5]),
          chatTemplate: String(s.tokenizerConfig.chat_template),
          ...(r() < 0.3 ? { text: { separator: '\n\n', pieceChars: 64 } } : {}),
          ...(r() < 0.2 ? { maxRowBytes: 1 + int(r, 300) } : {}),
        };
        return {
          files: new Map([[name, bytes]]),
          target: name,
          load: async (dir) =>
            void (await loadDataset(path.join(dir, name), storiesTokenizer(), options)),
        };
      },
    },
  ];
}
