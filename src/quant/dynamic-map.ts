/**
 * bitsandbytes `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)` (docs/formats.md
 * §2.3): the 256-entry "dynamic tree" 8-bit code used for double quantization (signed) and for
 * 8-bit optimizer states (signed for m, unsigned for v).
 *
 * For exponent i = 0..6 the fractions are midpoints of a float32 linspace(0.1, 1, n_i + 1) scaled
 * by 10^(i-6); 0 and 1 complete the table, which is then sorted. Arithmetic is float32 like torch's
 * (linspace: start + k·step for the first half, end - (n-1-k)·step for the second). torch's
 * vectorised linspace may differ by 1 ulp on some entries; checkpoints carry their own map
 * (`nested_quant_map`), which readers use instead of this one.
 */
const f = Math.fround;

function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const s = f(start);
  const e = f(end);
  const step = f((e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let k = 0; k < steps; k++) {
    out[k] = k < halfway ? f(s + f(step * k)) : f(e - f(step * (steps - k - 1)));
  }
  return out;
}

export function createDynamicMap(signed = true): Float32Array {
  const maxExponentBits = 7;
  const nonSignBits = 7;
  const data: number[] = [];
  for (let i = 0; i < maxExponentBits; i++) {
    const fractionItems = signed
      ? 2 ** (i + nonSignBits - maxExponentBits) + 1
      : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    const boundaries = linspaceF32(0.1, 1, fractionItems);
    // torch multiplies the float32 tensor by a Python float scalar, which becomes a float32 operand.
    const scale = f(10 ** (-(maxExponentBits - 1) + i));
    for (let k = 0; k + 1 < boundaries.length; k++) {
      const mean = f(f(boundaries[k]! + boundaries[k + 1]!) / 2);
      data.push(f(scale * mean));
      if (signed) data.push(f(-scale * mean));
    }
  }
  data.push(0, 1);
  if (data.length !== 256)
    throw new Error(`createDynamicMap: ${data.length} entries, expected 256`);
  data.sort((a, b) => a - b);
  return Float32Array.from(data);
}
