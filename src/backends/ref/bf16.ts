/**
 * The bf16 compute reference (docs/performance.md § bf16 compute): a frozen-base product with both
 * operands rounded to bf16 and the products summed exactly (float64), which the cpu backend's
 * vdpbf16ps kernels must match within fp32 accumulation error. Rounding is what AVX512_BF16's
 * vcvtne2ps2bf16 does to an fp32 value: round to nearest even, denormal inputs to signed zero, NaN
 * stays NaN.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** `v` as fp32, rounded to bf16 (8 significant bits), returned as a number. */
export function roundBf16(v: number): number {
  f32[0] = v;
  let u = u32[0]!;
  if ((u & 0x7f800000) === 0) u &= 0x80000000;
  else if ((u & 0x7fffffff) <= 0x7f800000) u = (u + 0x7fff + ((u >>> 16) & 1)) >>> 0;
  else u |= 0x00400000; // NaN: quiet, payload's top bits kept
  u32[0] = (u & 0xffff0000) >>> 0;
  return f32[0];
}

/** A float64 copy of `values` with every element rounded to bf16. */
export function roundedBf16(values: ArrayLike<number>): Float64Array {
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = roundBf16(values[i]!);
  return out;
}
