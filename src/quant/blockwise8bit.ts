/**
 * Blockwise 8-bit quantization with a 256-entry code (bnb `quantize_blockwise` /
 * `dequantize_blockwise`, docs/formats.md §2.3): the primitive behind double quantization of 4-bit
 * absmax values and behind 8-bit optimizer states.
 *
 * Per block: absmax = max|x| (float32), s = x · (1/absmax) in float32, code index = the nearest
 * code value. Tie rule (documented choice): an s exactly halfway between two codes takes the LOWER
 * code, like torch.bucketize(s, midpoints) and the argmin of bnb's CPU reference. (CUDA's binary
 * search resolves exact ties toward its last pivot instead; exact ties essentially never occur on
 * real data.) A zero block stores absmax 0 and scales nothing (s = 0).
 */
const f = Math.fround;

export interface Blockwise8bit {
  /** One code index per element. */
  readonly codes: Uint8Array;
  /** float32 absmax per block. */
  readonly absmax: Float32Array;
  readonly blocksize: number;
  /** The code the indices refer to (256 float32 values, ascending). */
  readonly code: Float32Array;
}

/**
 * Midpoints between adjacent values of an ascending code, exact in float64 (sums of two float32
 * are exact). Used here and by the 8-bit optimizer states (backends/adamw8bit-host.ts).
 */
export function codeMidpoints(code: Float32Array): Float64Array {
  const mids = new Float64Array(code.length - 1);
  for (let i = 0; i + 1 < code.length; i++) mids[i] = (code[i]! + code[i + 1]!) / 2;
  return mids;
}

/**
 * Index of the code nearest to s (ties to the lower code): the count of midpoints strictly below s
 * (torch.bucketize; NaN gives 0).
 */
export function nearestCodeIndex(mids: Float64Array, s: number): number {
  let lo = 0;
  let hi = mids.length; // answer in [lo, hi]
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (s > mids[mid]!) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Reciprocal used for scaling, in float32; absmax is clamped to 1e-38 so 1/absmax stays finite. */
export function scaleReciprocal(absmax: number): number {
  return f(1 / Math.max(absmax, f(1e-38)));
}

/** Quantizes `values` (converted to float32 first) blockwise with `code`. */
export function quantizeBlockwise8bit(
  values: ArrayLike<number>,
  code: Float32Array,
  blocksize: number,
): Blockwise8bit {
  if (code.length !== 256)
    throw new Error(`quantizeBlockwise8bit: code has ${code.length} entries, expected 256`);
  if (!Number.isInteger(blocksize) || blocksize <= 0)
    throw new Error(`quantizeBlockwise8bit: invalid blocksize ${blocksize}`);
  const n = values.length;
  const nblocks = Math.ceil(n / blocksize);
  const codes = new Uint8Array(n);
  const absmax = new Float32Array(nblocks);
  for (let i = 0; i + 1 < code.length; i++) {
    if (!(code[i + 1]! >= code[i]!)) throw new Error('code values must be sorted ascending');
  }
  const mids = codeMidpoints(code);
  for (let b = 0; b < nblocks; b++) {
    const start = b * blocksize;
    const end = Math.min(n, start + blocksize);
    let amax = 0;
    for (let i = start; i < end; i++) amax = Math.max(amax, Math.abs(f(values[i]!)));
    absmax[b] = amax;
    const recip = scaleReciprocal(amax);
    for (let i = start; i < end; i++) {
      const s = Math.min(1, Math.max(-1, f(f(values[i]!) * recip)));
      codes[i] = nearestCodeIndex(mids, amax === 0 ? 0 : s);
    }
  }
  return { codes, absmax, blocksize, code };
}

/** out[i] = code[codes[i]] · absmax[i / blocksize], in float32. */
export function dequantizeBlockwise8bit(
  q: Pick<Blockwise8bit, 'codes' | 'absmax' | 'blocksize' | 'code'>,
): Float32Array {
  const out = new Float32Array(q.codes.length);
  for (let i = 0; i < out.length; i++) {
    out[i] = q.code[q.codes[i]!]! * q.absmax[Math.floor(i / q.blocksize)]!;
  }
  return out;
}
