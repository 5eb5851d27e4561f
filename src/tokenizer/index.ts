/**
 * loadTokenizer(path): one entry point for every vocabulary source we support.
 * - a folder with tokenizer.json (+ tokenizer_config.json, generation_config.json,
 *   chat_template.jinja), or that tokenizer.json itself → HfTokenizer;
 * - a .gguf file (detected by its magic) → the vocabulary in its metadata;
 * - a llama2.c tokenizer.bin → Llama2cTokenizer (vocabSize option checks the token count;
 *   without it tokens are read to the end of the file);
 * - a tiktoken ranks file (Meta's Llama 3 tokenizer.model) → byte-level BPE with Llama 3's split
 *   and special tokens. (SentencePiece protobuf tokenizer.model files are not supported: use the
 *   model's tokenizer.json or GGUF.)
 * Loading is synchronous (files are read whole; GGUF tensors are not touched).
 */
import { fs, path } from '../io/host.js';
import { readGgufMetadata } from '../io/gguf.js';
import type { Tokenizer } from './types.js';
import { HfTokenizer } from './hf-tokenizer.js';
import { Llama2cTokenizer } from './llama2c-tokenizer.js';
import { tokenizerFromGgufMetadata } from './gguf-tokenizer.js';
import { loadTiktokenLlama3, looksLikeTiktoken } from './tiktoken.js';

export type { Tokenizer } from './types.js';
export { HfTokenizer } from './hf-tokenizer.js';
export { Llama2cTokenizer } from './llama2c-tokenizer.js';
export { SpmTokenizer } from './spm-tokenizer.js';
export { tokenizerFromGgufMetadata } from './gguf-tokenizer.js';
export { tiktokenLlama3Tokenizer, loadTiktokenLlama3 } from './tiktoken.js';

export interface LoadTokenizerOptions {
  /** llama2.c tokenizer.bin only: the model's vocab_size (the file does not store it). */
  vocabSize?: number;
}

const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');

function fileHead(file: string, bytes: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(bytes);
    return head.subarray(0, fs.readSync(fd, head, 0, bytes, 0));
  } finally {
    fs.closeSync(fd);
  }
}

export function loadTokenizer(target: string, options: LoadTokenizerOptions = {}): Tokenizer {
  if (!fs.existsSync(target)) throw new Error(`${target}: no such file or folder`);
  if (fs.statSync(target).isDirectory()) {
    if (fs.existsSync(path.join(target, 'tokenizer.json')))
      return HfTokenizer.fromDirectory(target);
    throw new Error(
      `${target}: no tokenizer.json in this folder (pass a .gguf or llama2.c tokenizer.bin file instead)`,
    );
  }
  if (path.basename(target) === 'tokenizer.json')
    return HfTokenizer.fromDirectory(path.dirname(target));
  const head = fileHead(target, 256);
  if (head.subarray(0, 4).equals(GGUF_MAGIC)) {
    let tok: Tokenizer;
    try {
      tok = tokenizerFromGgufMetadata(readGgufMetadata(target).metadata);
    } catch (e) {
      // Metadata problems are found after the file is read: name it.
      const message = (e as Error).message;
      if (message.includes(path.basename(target))) throw e;
      throw new Error(`${target}: ${message.replace(/^GGUF tokenizer: /, '')}`, { cause: e });
    }
    // The chat template (if any) came from this file's tokenizer.chat_template: name it in messages.
    return tok.chatTemplate === null
      ? tok
      : Object.assign(tok, { chatTemplateFile: `${target} (tokenizer.chat_template)` });
  }
  if (looksLikeTiktoken(head.toString('latin1'))) return loadTiktokenLlama3(target);
  if (target.endsWith('.bin')) return Llama2cTokenizer.fromFile(target, options.vocabSize);
  throw new Error(
    `${target}: unrecognized tokenizer file (expected a folder with tokenizer.json, a .gguf file, a llama2.c tokenizer.bin, or a Llama 3 tiktoken tokenizer.model)`,
  );
}

/** Finds the tokenizer that belongs with a model path. */
export function tokenizerPathFor(modelPath: string): string {
  const stat = fs.statSync(modelPath);
  if (stat.isDirectory()) {
    for (const name of ['tokenizer.json', 'tokenizer.gguf', 'tokenizer.bin']) {
      if (fs.existsSync(path.join(modelPath, name))) return path.join(modelPath, name);
    }
    throw new Error(
      `${modelPath}: no tokenizer.json (or tokenizer.gguf / tokenizer.bin) in the model folder; pass --tokenizer`,
    );
  }
  if (modelPath.endsWith('.gguf')) return modelPath;
  // llama2.c checkpoints: tokenizer.bin (or tokNNN.bin) beside the model.
  const dir = path.dirname(modelPath);
  const candidates = fs
    .readdirSync(dir)
    .filter((f) => f === 'tokenizer.bin' || /^tok\d+\.bin$/.test(f))
    .sort();
  if (candidates.length > 0) return path.join(dir, candidates[0]!);
  throw new Error(
    `${modelPath}: no tokenizer.bin next to this llama2.c checkpoint; pass --tokenizer`,
  );
}
