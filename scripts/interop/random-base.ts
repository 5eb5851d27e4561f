/**
 * Writes a small random-weight Llama-shape model as a Hugging Face folder (config.json,
 * model.safetensors in f32, tokenizer.json + tokenizer_config.json), for the interop checks in
 * scripts/peft-interop.py: the shape is stories260K's (GQA: 8 query heads over 4 KV heads, an
 * intermediate size of 172) with 2 layers and an untied lm_head, the vocabulary is stories260K's
 * 512-token SentencePiece one, and the weights come from src/models/synthetic.ts, seeded.
 *
 *   node --import tsx scripts/interop/random-base.ts OUT_DIR [--seed N]
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeCheckpointAs } from '../../src/export/convert.js';
import { type Checkpoint, openCheckpoint } from '../../src/io/checkpoint.js';
import type { LlamaConfig } from '../../src/io/config.js';
import { syntheticSource } from '../../src/models/synthetic.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const STORIES = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');

export function writeRandomBase(out: string, seed: number): void {
  const stories = openCheckpoint(STORIES);
  try {
    const config: LlamaConfig = { ...stories.config, numLayers: 2, tieWordEmbeddings: false };
    const src = syntheticSource(config, seed);
    // A llama2.c-sourced checkpoint (so the writer takes the vocabulary from tok512.bin beside it)
    // whose tensors are the synthetic ones.
    const ck: Checkpoint = {
      config,
      source: 'llama2c',
      path: STORIES,
      tensorNames: src.names,
      has: (n) => src.has(n),
      shapeOf: (n) => src.shape(n),
      loadTensor: (n) => src.load(n),
      load: (n) => src.load(n),
      loadQuantized: () => null,
      close: () => {},
    };
    const r = writeCheckpointAs(ck, out, { dtype: 'f32' });
    for (const w of r.warnings) console.error(`warning: ${w}`);
  } finally {
    stories.close();
  }
}

const args = process.argv.slice(2);
const out = args[0];
if (!out || out.startsWith('-')) {
  console.error('usage: random-base.ts OUT_DIR [--seed N]');
  process.exit(2);
}
const seedAt = args.indexOf('--seed');
writeRandomBase(out, seedAt >= 0 ? Number(args[seedAt + 1]) : 1234);
console.log(`wrote ${out}`);
