/**
 * loadTokenizer(path): one entry point for every vocabulary source we support.
 * - a folder with tokenizer.json (+ tokenizer_config.json, generation_config.json,
 *   chat_template.jinja), or that tokenizer.json itself → HfTokenizer;
 * - a .gguf file (detected by its magic) → the vocabulary in its metadata;
 * - a llama2.c tokenizer.bin → Llama2cTokenizer (vocabSize option checks the token count;
 *   without it tokens are read to the end of the file).
 * Loading is synchronous (files are read whole; GGUF tensors are not touched).
 */
import fs from 'node:fs';
import path from 'node:path';
import { readGgufMetadata } from '../io/gguf.js';
import type { Tokenizer } from './types.js';
import { HfTokenizer } from './hf-tokenizer.js';
import { Llama2cTokenizer } from './llama2c-tokenizer.js';
import { tokenizerFromGgufMetadata } from './gguf-tokenizer.js';

export type { Tokenizer } from './types.js';
export { HfTokenizer } from './hf-tokenizer.js';
export { Llama2cTokenizer, parseLlama2cTokenizer } from './llama2c-tokenizer.js';
export { SpmTokenizer } from './spm-tokenizer.js';
export { tokenizerFromGgufMetadata } from './gguf-tokenizer.js';

export interface LoadTokenizerOptions {
  /** llama2.c tokenizer.bin only: the model's vocab_size (the file does not store it). */
  vocabSize?: number;
}

const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');

function startsWithGgufMagic(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(4);
    return fs.readSync(fd, head, 0, 4, 0) === 4 && head.equals(GGUF_MAGIC);
  } finally {
    fs.closeSync(fd);
  }
}

export function loadTokenizer(target: string, options: LoadTokenizerOptions = {}): Tokenizer {
  if (!fs.existsSync(target)) throw new Error(`${target}: no such file or folder`);
  if (fs.statSync(target).isDirectory()) {
    if (fs.existsSync(path.join(target, 'tokenizer.json'))) return HfTokenizer.fromDirectory(target);
    throw new Error(`${target}: no tokenizer.json in this folder (pass a .gguf or llama2.c tokenizer.bin file instead)`);
  }
  if (path.basename(target) === 'tokenizer.json') return HfTokenizer.fromDirectory(path.dirname(target));
  if (startsWithGgufMagic(target)) return tokenizerFromGgufMetadata(readGgufMetadata(target).metadata);
  if (target.endsWith('.bin')) return Llama2cTokenizer.fromFile(target, options.vocabSize);
  throw new Error(
    `${target}: unrecognized tokenizer file (expected a folder with tokenizer.json, a .gguf file, or a llama2.c tokenizer.bin)`,
  );
}
