/**
 * Finds the vocabulary that belongs with a checkpoint: an explicit tokenizer path (.gguf,
 * tokenizer.json or its folder, llama2.c tokenizer.bin), else the checkpoint's own (a GGUF's
 * metadata, an HF folder's tokenizer.json, a tokenizer.bin next to a llama2.c model).
 */
import { fs, path } from '../io/host.js';
import { readGgufMetadata } from '../io/gguf.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { tokenizerPathFor } from '../tokenizer/index.js';
import {
  type VocabMetadata,
  vocabFromGguf,
  vocabFromHfFolder,
  vocabFromLlama2c,
} from './gguf-vocab.js';

function isGguf(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(4);
    fs.readSync(fd, head, 0, 4, 0);
    return head.toString('latin1') === 'GGUF';
  } finally {
    fs.closeSync(fd);
  }
}

/** Vocabulary metadata from a tokenizer file or folder, sized to the model's vocabulary. */
export function vocabFromPath(p: string, modelVocab: number): VocabMetadata {
  if (!fs.existsSync(p)) throw new Error(`${p}: no such tokenizer file or folder`);
  if (fs.statSync(p).isDirectory()) return vocabFromHfFolder(p, modelVocab);
  if (path.basename(p) === 'tokenizer.json') return vocabFromHfFolder(path.dirname(p), modelVocab);
  if (isGguf(p)) return vocabFromGguf(readGgufMetadata(p));
  if (p.endsWith('.bin')) return vocabFromLlama2c(p, modelVocab);
  throw new Error(
    `${p}: not a tokenizer this export understands (a .gguf, tokenizer.json or its folder, or a llama2.c tokenizer.bin)`,
  );
}

export function vocabForCheckpoint(ck: Checkpoint, tokenizer?: string | null): VocabMetadata {
  const n = ck.config.vocabSize;
  if (tokenizer) return vocabFromPath(tokenizer, n);
  switch (ck.source) {
    case 'gguf':
      return vocabFromGguf(readGgufMetadata(ck.path));
    case 'hf':
      return vocabFromHfFolder(ck.path, n);
    case 'llama2c':
      // tokenizer.bin (or tokNNN.bin) beside the model; the error says to pass --tokenizer otherwise.
      return vocabFromLlama2c(tokenizerPathFor(ck.path), n);
  }
}
