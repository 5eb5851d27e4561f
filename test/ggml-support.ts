// Random GGUF-quantized weights for the tests: every quant bit pattern, with the f16 scales set to
// finite values of a plausible size (any bytes are a valid block once its scales are finite).
import {
  GGML_QUANT_TYPES,
  type GgmlHostWeight,
  type GgmlQuantType,
} from '../src/quant/ggml-blocks.js';
import { rng } from './util.js';

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
  const e = eMin + Math.floor(r() * (eMax - eMin + 1));
  return ((r() < 0.5 ? 0x8000 : 0) | ((e + 15) << 10) | Math.floor(r() * 1024)) & 0xffff;
}

/** A [rows, cols] weight of random blocks; scales 2^-12..2^-8 keep values around ±0.1. */
export function randomGgmlWeight(
  type: GgmlQuantType,
  rows: number,
  cols: number,
  seed: number,
): GgmlHostWeight {
  const g = GGML_QUANT_TYPES[type];
  const nBlocks = (rows * cols) / g.blockElems;
  const blocks = new Uint8Array(nBlocks * g.blockBytes);
  const r = rng(seed);
  for (let i = 0; i < blocks.length; i++) blocks[i] = Math.floor(r() * 256);
  const [eMin, eMax] = type === 'q4_0' || type === 'q8_0' ? [-10, -7] : [-12, -9];
  for (let b = 0; b < nBlocks; b++) {
    for (const at of HALVES[type]) {
      const h = randomHalf(r, eMin, eMax);
      blocks[b * g.blockBytes + at] = h & 0xff;
      blocks[b * g.blockBytes + at + 1] = h >> 8;
    }
  }
  return { type, rows, cols, blocks };
}
