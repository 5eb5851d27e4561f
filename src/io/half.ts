/** IEEE half (f16) and bfloat16 <-> f32 conversions (Node 20 has no Float16Array). */

/** f16 bits → f32 value for all 65536 patterns (subnormals, ±inf, NaN included). */
const F16_TABLE: Float32Array = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 31) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

export function f16ToF32(bits: number): number {
  return F16_TABLE[bits & 0xffff]!;
}

/** Decodes `count` little-endian f16 values starting at byte `offset` of `src` into `out`. */
export function decodeF16(
  src: Uint8Array,
  offset: number,
  count: number,
  out: Float32Array,
  outOffset = 0,
): void {
  for (let i = 0; i < count; i++) {
    const p = offset + 2 * i;
    out[outOffset + i] = F16_TABLE[src[p]! | (src[p + 1]! << 8)]!;
  }
}

/** Decodes `count` little-endian bf16 values (the top half of an f32) into `out`. */
export function decodeBF16(
  src: Uint8Array,
  offset: number,
  count: number,
  out: Float32Array,
  outOffset = 0,
): void {
  const bits = new Uint32Array(out.buffer, out.byteOffset + outOffset * 4, count);
  for (let i = 0; i < count; i++) {
    const p = offset + 2 * i;
    bits[i] = ((src[p]! | (src[p + 1]! << 8)) << 16) >>> 0;
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** f32 → f16 bits, round to nearest even (overflow → ±inf, NaN kept). */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the implicit-1 mantissa right, rounding to nearest even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/** f32 → bf16 bits, round to nearest even (NaN kept quiet). */
export function f32ToBF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}
