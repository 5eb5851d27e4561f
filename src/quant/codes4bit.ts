/**
 * The bitsandbytes 4-bit code tables and the CUDA quantization decision rules (docs/formats.md
 * §2.1–2.2).
 *
 * Every comparison is made between float32 values, exactly like the CUDA kernels (`x > 0.0397…f`
 * compares a float against a float literal), so thresholds and pivots are rounded to float32 here.
 */

export type QuantType4bit = 'nf4' | 'fp4';

/** NF4 values, index = 4-bit code (bnb `get_4bit_type('nf4')`, exact float32 literals). */
export const NF4_CODE: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);

/**
 * NF4 decision thresholds of CUDA `dQuantizeNF4` (midpoints of adjacent codes): threshold k
 * separates code k and k+1, and a value goes to code k+1 only when strictly greater (ties go low).
 */
export const NF4_THRESHOLDS: Float32Array = Float32Array.from([
  -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
  -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
  0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
  0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
]);

/**
 * FP4 (E2M1) values in bit-pattern order: raw [0, 0.0625, 8, 12, 4, 6, 2, 3] / 12 for codes 0..7;
 * bit 3 is the sign (codes 8..15 are the negatives, code 8 is -0).
 */
export const FP4_CODE: Float32Array = (() => {
  const raw = [0, 0.0625, 8, 12, 4, 6, 2, 3];
  const code = new Float32Array(16);
  for (let i = 0; i < 8; i++) {
    code[i] = raw[i]! / 12;
    code[i + 8] = -raw[i]! / 12;
  }
  return code;
})();

/** FP4 pivots of CUDA `dQuantizeFP4`, as float32 (the literals carry `f` suffixes there). */
export const FP4_PIVOTS = {
  p0_29166667: Math.fround(0.29166667),
  p0_583333: Math.fround(0.583333),
  p0_8333333: Math.fround(0.8333333),
  p0_4166667: Math.fround(0.4166667),
  p0_0859375: Math.fround(0.0859375),
  p0_20833333: Math.fround(0.20833333),
  p0_00260417: Math.fround(0.00260417),
} as const;

export function codeTable(quantType: QuantType4bit): Float32Array {
  return quantType === 'nf4' ? NF4_CODE : FP4_CODE;
}

/**
 * NF4 code of a scaled value s ∈ [-1, 1] (a float32 number): the number of thresholds s is
 * strictly above, which is what the CUDA decision tree computes. NaN gets code 0, as on CUDA.
 */
export function quantizeNf4Value(s: number): number {
  let code = 0;
  while (code < 15 && s > NF4_THRESHOLDS[code]!) code++;
  return code;
}

/** FP4 code of a scaled value s ∈ [-1, 1]: CUDA `dQuantizeFP4`'s sign bit and decision tree. */
export function quantizeFp4Value(s: number): number {
  const sign = s < 0 ? 0b1000 : 0;
  const a = Math.abs(s);
  const p = FP4_PIVOTS;
  let bits: number;
  if (a > p.p0_29166667) {
    if (a > p.p0_583333) bits = a > p.p0_8333333 ? 0b011 : 0b010;
    else bits = a > p.p0_4166667 ? 0b101 : 0b100;
  } else if (a > p.p0_0859375) {
    bits = a > p.p0_20833333 ? 0b111 : 0b110;
  } else {
    bits = a > p.p0_00260417 ? 0b001 : 0b000;
  }
  return sign | bits;
}

export function quantizerFor(quantType: QuantType4bit): (s: number) => number {
  return quantType === 'nf4' ? quantizeNf4Value : quantizeFp4Value;
}
