/**
 * Writes a Hugging Face model folder from any checkpoint: config.json (transformers keys),
 * model.safetensors (or 2 GiB shards with an index) in HF layout, and the tokenizer: copied from an
 * HF source, else tokenizer.json + tokenizer_config.json built from the vocabulary given (a GGUF's
 * or a llama2.c tokenizer.bin's). Tensors are loaded one at a time and each shard is written
 * before the next is built.
 */
import { fs, path } from '../io/host.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import {
  writeSafetensors,
  writeSafetensorsIndex,
  type SafetensorsTensorToWrite,
} from '../io/safetensors.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { configToHf } from '../io/config.js';
import type { VocabMetadata } from './gguf-vocab.js';
import { hfTokenizerFilesFromVocab } from './hf-tokenizer-files.js';

export const HF_DTYPES = ['f32', 'f16', 'bf16'] as const;
export type HfDtype = (typeof HF_DTYPES)[number];
const SAFETENSORS_DTYPE = { f32: 'F32', f16: 'F16', bf16: 'BF16' } as const;
const BYTES = { f32: 4, f16: 2, bf16: 2 } as const;
const SHARD_BYTES = 2 * 1024 ** 3;

/** Tokenizer and generation files copied from an HF source folder. */
const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
  'chat_template.jinja',
  'tokenizer.model',
];

export function writeHfFolder(
  ck: Checkpoint,
  dir: string,
  options: {
    dtype: HfDtype;
    transform?: (hf: string, w: Float32Array) => Float32Array;
    /** Vocabulary for a non-HF source (its tokenizer.json is built from it); ignored for HF sources. */
    vocab?: VocabMetadata | null;
  },
): { files: string[]; warnings: string[] } {
  fs.mkdirSync(dir, { recursive: true });
  const transform = options.transform ?? ((_h: string, w: Float32Array) => w);
  const bytesPer = BYTES[options.dtype];
  // Plan shards by size so every shard name (model-0000i-of-0000N) is known before writing.
  const shards: string[][] = [[]];
  let size = 0;
  let total = 0;
  for (const name of ck.tensorNames) {
    const bytes = ck.shapeOf(name).reduce((a, b) => a * b, 1) * bytesPer;
    if (size > 0 && size + bytes > SHARD_BYTES) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(name);
    size += bytes;
    total += bytes;
  }
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  shards.forEach((names, i) => {
    const file =
      shards.length === 1
        ? 'model.safetensors'
        : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    const tensors: SafetensorsTensorToWrite[] = names.map((name) => ({
      name,
      dtype: SAFETENSORS_DTYPE[options.dtype],
      shape: [...ck.shapeOf(name)],
      data: transform(name, ck.loadTensor(name)),
    }));
    writeSafetensors(path.join(dir, file), tensors, { format: 'pt' });
    for (const n of names) weightMap[n] = file;
    files.push(file);
  });
  if (shards.length > 1) {
    writeSafetensorsIndex(dir, weightMap, total);
    files.push('model.safetensors.index.json');
  }
  const config = new TextEncoder().encode(
    `${JSON.stringify({ ...configToHf(ck.config), torch_dtype: { f32: 'float32', f16: 'float16', bf16: 'bfloat16' }[options.dtype] }, null, 2)}\n`,
  );
  writeFileAtomic(path.join(dir, 'config.json'), (fd) => writeAll(fd, config));
  files.push('config.json');

  const warnings: string[] = [];
  writeTokenizerFiles(ck, dir, options.vocab ?? null, files, warnings);
  return { files, warnings };
}

/**
 * The tokenizer beside a written HF folder: copied from an HF source, else tokenizer.json +
 * tokenizer_config.json built from `vocab`. Appends written names to `files`, problems to `warnings`.
 */
export function writeTokenizerFiles(
  ck: Pick<Checkpoint, 'source' | 'path'>,
  dir: string,
  vocab: VocabMetadata | null,
  files: string[],
  warnings: string[],
): void {
  if (ck.source === 'hf') {
    for (const f of TOKENIZER_FILES) {
      const from = path.join(ck.path, f);
      if (fs.existsSync(from) && path.resolve(from) !== path.resolve(dir, f)) {
        fs.copyFileSync(from, path.join(dir, f));
        files.push(f);
      }
    }
  } else if (vocab) {
    const t = hfTokenizerFilesFromVocab(vocab.entries);
    for (const [name, json] of [
      ['tokenizer.json', t.tokenizerJson],
      ['tokenizer_config.json', t.tokenizerConfig],
    ] as const) {
      const bytes = new TextEncoder().encode(`${JSON.stringify(json, null, 2)}\n`);
      writeFileAtomic(path.join(dir, name), (fd) => writeAll(fd, bytes));
      files.push(name);
    }
  } else {
    warnings.push(
      `no tokenizer files written: no vocabulary was found for this ${ck.source} source (pass --tokenizer)`,
    );
  }
}
