/**
 * `quantize4bit` on the native addon (native/src/quantize.cc): the same options, validation,
 * errors and result, bit for bit, as src/quant/quantize4bit.ts, threaded over blocks. It requires
 * the addon (importing this module loads it); callers that must work without the addon use the
 * TypeScript quantizer.
 */
import { kernel } from './native.js';
import { codeTable } from '../../quant/codes4bit.js';
import { createDynamicMap } from '../../quant/dynamic-map.js';
import {
  NESTED_BLOCKSIZE,
  type Quantize4bitOptions,
  type Quantized4bit,
  resolveQuantize4bitOptions,
} from '../../quant/quantize4bit.js';

type Quantize4bitKernel = (
  values: Float32Array,
  fp4: boolean,
  blocksize: number,
  packed: Uint8Array,
  absmax: Float32Array,
) => number;
type Blockwise8bitKernel = (
  values: Float32Array,
  code: Float32Array,
  blocksize: number,
  codes: Uint8Array,
  absmax: Float32Array,
) => void;

const quantize4bitF32 = kernel<Quantize4bitKernel>('quantize4bitF32');
const quantizeBlockwise8bitF32 = kernel<Blockwise8bitKernel>('quantizeBlockwise8bitF32');

export function quantize4bitNative(
  values: ArrayLike<number>,
  options: Quantize4bitOptions = {},
): Quantized4bit {
  const { quantType, blocksize, doubleQuant } = resolveQuantize4bitOptions(options);
  // Float32Array.from rounds each value like Math.fround, the TS quantizer's first step.
  const f32 = values instanceof Float32Array ? values : Float32Array.from(values);
  const n = f32.length;
  const nblocks = Math.ceil(n / blocksize);
  const absmax = new Float32Array(nblocks);
  const packed = new Uint8Array(Math.ceil(n / 2));
  const bad = quantize4bitF32(f32, quantType === 'fp4', blocksize, packed, absmax);
  if (bad >= 0) throw new Error(`quantize4bit: non-finite value ${f32[bad]!} at element ${bad}`);
  const code = codeTable(quantType).slice();
  if (!doubleQuant) return { quantType, blocksize, length: n, packed, code, absmax, nested: null };

  // The mean exactly as quantize4bit.ts computes it: a sequential float64 sum, rounded to float32
  // (a threaded reduction would change the summation order and could change the last bit).
  let sum = 0;
  for (let b = 0; b < nblocks; b++) sum += absmax[b]!;
  const offset = nblocks === 0 ? 0 : Math.fround(sum / nblocks);
  const centered = new Float32Array(nblocks);
  for (let b = 0; b < nblocks; b++) centered[b] = absmax[b]! - offset;
  const nestedCode = createDynamicMap(true);
  const codes = new Uint8Array(nblocks);
  const nestedAbsmax = new Float32Array(Math.ceil(nblocks / NESTED_BLOCKSIZE));
  quantizeBlockwise8bitF32(centered, nestedCode, NESTED_BLOCKSIZE, codes, nestedAbsmax);
  return {
    quantType,
    blocksize,
    length: n,
    packed,
    code,
    absmax: codes,
    nested: { absmax: nestedAbsmax, code: nestedCode, blocksize: NESTED_BLOCKSIZE, offset },
  };
}
