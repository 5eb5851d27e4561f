// Random GGUF-quantized weights for the tests: every quant bit pattern, with the f16 scales set to
// finite values of a plausible size (any bytes are a valid block once its scales are finite).
import {
  GGML_QUANT_TYPES,
  type GgmlHostWeight,
  type GgmlQuantType,
} from '../src/quant/ggml-blocks.js';
import path from 'node:path';
import { rng } from './util.js';
import { STORIES } from './export-support.js';
import { openCheckpoint, ggufNameFor, permuteToInterleavedRows } from '../src/io/checkpoint.js';
import type { LlamaConfig } from '../src/io/config.js';
import { syntheticSource } from '../src/models/synthetic.js';
import { vocabFromLlama2c } from '../src/export/gguf-vocab.js';
import { encodeGgml } from '../src/export/ggml-encode.js';
import { GgmlType } from '../src/io/ggml-types.js';
import { writeGguf } from '../src/io/gguf-writer.js';
import { hyperparameterMetadata } from '../src/export/gguf-arch.js';

/** Byte offsets of each block's f16 scales. */
const HALVES: Record<GgmlQuantType, number[]> = {
  q4_0: [0],
  q8_0: [0],
  q4_k: [0, 2],
  q5_k: [0, 2],
  q6_k: [208],
};

/** f16 bits of ±2^e·(1 + m/1024) with e in [eMin, eMax]. */
function randomHalf(r: () => number, eMin: number, eMax: number): number {
  if (eMin < -14 || eMax > 15)
    throw new Error(`f16 normal exponents are −14..15, not ${eMin}..${eMax}`);
  const e = eMin + Math.floor(r() * (eMax - eMin + 1));
  return ((r() < 0.5 ? 0x8000 : 0) | ((e + 15) << 10) | Math.floor(r() * 1024)) & 0xffff;
}

/** A [rows, cols] weight of random blocks; scales 2^-12..2^-8 keep values around ±0.1. */
export function randomGgmlWeight(
  type: GgmlQuantType,
  rows: number,
  cols: number,
  seed: number,
  exponents?: [number, number],
): GgmlHostWeight {
  const g = GGML_QUANT_TYPES[type];
  const nBlocks = (rows * cols) / g.blockElems;
  const blocks = new Uint8Array(nBlocks * g.blockBytes);
  const r = rng(seed);
  for (let i = 0; i < blocks.length; i++) blocks[i] = Math.floor(r() * 256);
  const [eMin, eMax] = exponents ?? (type === 'q4_0' || type === 'q8_0' ? [-10, -7] : [-12, -9]);
  for (let b = 0; b < nBlocks; b++) {
    for (const at of HALVES[type]) {
      const h = randomHalf(r, eMin, eMax);
      blocks[b * g.blockBytes + at] = h & 0xff;
      blocks[b * g.blockBytes + at + 1] = h >> 8;
    }
  }
  return { type, rows, cols, blocks };
}

/** Per GGUF tensor name: how to store it (ggml type name). */
export type StoreAs = 'F32' | 'F16' | 'Q8_0' | 'Q4_0' | 'Q4_K' | 'Q5_K' | 'Q6_K';

/**
 * A small random Llama (llama architecture: Q/K rows interleaved on disk) with stories260K's
 * 512-token vocabulary, written as a GGUF whose tensors are stored as `storeAs(ggufName)` says:
 * F32/F16/Q8_0/Q4_0/Q4_K by our encoders from seeded values (the Q4_K one bit-exact to ggml's),
 * Q5_K and Q6_K as random blocks with small scales (any bytes with finite scales are valid blocks).
 * Dims are multiples of 256 so every K-quant fits.
 */
export function writeRandomGguf(
  out: string,
  storeAs: (ggufName: string, hf: string) => StoreAs,
  seed = 7,
): LlamaConfig {
  const base = openCheckpoint(path.join(STORIES, 'stories260K.bin'));
  const config: LlamaConfig = {
    ...base.config,
    hiddenSize: 256,
    intermediateSize: 512,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 64,
    tieWordEmbeddings: false,
    maxPositionEmbeddings: 256,
  };
  base.close();
  const src = syntheticSource(config, seed);
  const vocab = vocabFromLlama2c(path.join(STORIES, 'tok512.bin'), config.vocabSize);
  let index = 0;
  const tensors = src.names.map((hf) => {
    const shape = src.shape(hf);
    const name = ggufNameFor(hf);
    const as = shape.length === 2 ? storeAs(name, hf) : 'F32';
    let data: Uint8Array;
    if (as === 'Q5_K' || as === 'Q6_K') {
      const t = as === 'Q5_K' ? 'q5_k' : 'q6_k';
      data = randomGgmlWeight(
        t,
        shape[0]!,
        shape[1]!,
        seed * 1000 + index++,
        as === 'Q6_K' ? [-14, -13] : [-14, -12],
      ).blocks;
    } else {
      let w = src.load(hf);
      const heads = /q_proj/.test(hf) ? config.numHeads : /k_proj/.test(hf) ? config.numKvHeads : 0;
      if (heads > 0) w = permuteToInterleavedRows(w, heads, shape[1]!);
      data = encodeGgml(GgmlType[as], w);
    }
    return { name, shape, type: GgmlType[as], data };
  });
  writeGguf(out, [...hyperparameterMetadata(config, 'random'), ...vocab.entries], tensors);
  return config;
}
