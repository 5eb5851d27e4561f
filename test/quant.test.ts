// bitsandbytes 4-bit / 8-bit quantization against values derived from the spec (docs/formats.md
// §2), independent formulations (argmin nearest code, interval tables) and numerical theory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getBackend } from '../src/backends/index.js';
import {
  createDynamicMap,
  dequantize4bit,
  dequantizeBlockwise8bit,
  disposePacked4bit,
  quantize4bit,
  quantizeBlockwise8bit,
  quantizedBytes,
  type Quantized4bit,
  uploadPacked4bit,
  blockAbsmax,
} from '../src/quant/index.js';
import { assertClose, nextFloat32, randn } from './util.js';

const f = Math.fround;

// Literals copied from docs/formats.md §2.1–2.2 (not imported from the implementation).
const SPEC_NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
];
const SPEC_NF4_THRESHOLDS = [
  -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
  -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
  0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
  0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
];
const SPEC_FP4_POSITIVE = [0, 0.0625, 8, 12, 4, 6, 2, 3].map((v) => v / 12);
/** FP4 as magnitude intervals (upper pivot inclusive → 3-bit code), equivalent to the CUDA tree. */
const SPEC_FP4_INTERVALS: [number, number][] = [
  [0.00260417, 0b000],
  [0.0859375, 0b001],
  [0.20833333, 0b110],
  [0.29166667, 0b111],
  [0.4166667, 0b100],
  [0.583333, 0b101],
  [0.8333333, 0b010],
  [Infinity, 0b011],
];

function codesOf(q: Quantized4bit): number[] {
  return Array.from({ length: q.length }, (_, i) =>
    i % 2 === 0 ? q.packed[i >> 1]! >> 4 : q.packed[i >> 1]! & 15,
  );
}

/** Quantizes `values` in one block together with a 1.0, so absmax = 1 and s = x exactly. */
function codesWithUnitAbsmax(values: number[], quantType: 'nf4' | 'fp4'): number[] {
  const q = quantize4bit([1, ...values], { quantType, blocksize: 4096, doubleQuant: false });
  assert.equal(q.absmax[0], 1);
  return codesOf(q).slice(1);
}

test('NF4 code table and thresholds match the spec (thresholds are code midpoints)', () => {
  const q = quantize4bit([0.5], { quantType: 'nf4', doubleQuant: false });
  assert.deepEqual(Array.from(q.code), SPEC_NF4.map(f));
  for (let k = 0; k < 15; k++) {
    assert.ok(
      Math.abs((SPEC_NF4[k]! + SPEC_NF4[k + 1]!) / 2 - SPEC_NF4_THRESHOLDS[k]!) < 1e-7,
      `threshold ${k}`,
    );
  }
});

test('NF4: values just below, at and just above every threshold (x > t goes up, ties go low)', () => {
  const values: number[] = [];
  const expected: number[] = [];
  for (let k = 0; k < 15; k++) {
    const t = f(SPEC_NF4_THRESHOLDS[k]!);
    values.push(nextFloat32(t, -1), t, nextFloat32(t, 1));
    expected.push(k, k, k + 1);
  }
  assert.deepEqual(codesWithUnitAbsmax(values, 'nf4'), expected);
});

test('FP4: code table, values around every pivot, sign bit and negative zero', () => {
  const q = quantize4bit([0.5], { quantType: 'fp4', doubleQuant: false });
  assert.deepEqual(
    Array.from(q.code),
    [...SPEC_FP4_POSITIVE, ...SPEC_FP4_POSITIVE.map((v) => -v)].map(f),
  );
  const values: number[] = [];
  const expected: number[] = [];
  for (let k = 0; k < 7; k++) {
    const p = f(SPEC_FP4_INTERVALS[k]![0]);
    const below = SPEC_FP4_INTERVALS[k]![1];
    const above = SPEC_FP4_INTERVALS[k + 1]![1];
    for (const [v, code] of [
      [nextFloat32(p, -1), below],
      [p, below],
      [nextFloat32(p, 1), above],
    ] as const) {
      values.push(v, -v);
      expected.push(code, code | 0b1000);
    }
  }
  values.push(0, -0);
  expected.push(0, 0); // -0 is not < 0: no sign bit
  assert.deepEqual(codesWithUnitAbsmax(values, 'fp4'), expected);
});

test('zeros, negative zero and an all-zero block dequantize to 0', () => {
  const nf4 = quantize4bit([0, -0, 0, 0], { quantType: 'nf4', doubleQuant: false, blocksize: 32 });
  assert.equal(nf4.absmax[0], 0);
  assert.deepEqual(codesOf(nf4), [7, 7, 7, 7]); // code 7 is NF4's 0.0
  assert.deepEqual(Array.from(dequantize4bit(nf4)), [0, 0, 0, 0]);
  const mixed = codesWithUnitAbsmax([-0, 0], 'nf4');
  assert.deepEqual(mixed, [7, 7]);
});

test('a block of one repeated value reconstructs it exactly', () => {
  for (const c of [3, -3, 0.1, -7.25e-3, 1e-30, 123456.78]) {
    const q = quantize4bit(new Array(64).fill(c), { quantType: 'nf4', doubleQuant: false });
    assert.deepEqual(new Set(codesOf(q)), new Set([c > 0 ? 15 : 0]));
    for (const v of dequantize4bit(q)) assert.equal(v, f(c));
  }
});

test('partial last block, odd element count (padding nibble) and high-nibble-first packing', () => {
  const values = Array.from({ length: 64 + 9 }, (_, i) => Math.sin(i + 0.5) * (i < 64 ? 2 : 0.25));
  const q = quantize4bit(values, { quantType: 'nf4', doubleQuant: false, blocksize: 64 });
  assert.equal(q.absmax.length, 2);
  assert.equal(q.absmax[0], f(Math.max(...values.slice(0, 64).map((v) => Math.abs(f(v))))));
  assert.equal(q.absmax[1], f(Math.max(...values.slice(64).map((v) => Math.abs(f(v))))));
  assert.equal(q.packed.length, 37);
  assert.equal(q.packed[36]! & 15, 7, 'padding element 0.0 → NF4 code 7');
  const fp = quantize4bit([1, -1, 0.5], { quantType: 'fp4', doubleQuant: false });
  assert.deepEqual(Array.from(fp.packed), [(0b0011 << 4) | 0b1011, (0b0101 << 4) | 0b0000]);
  const nf = quantize4bit([1, -1, 0.44070982933044434], { quantType: 'nf4', doubleQuant: false });
  assert.deepEqual(Array.from(nf.packed), [0xf0, (12 << 4) | 7]);
});

test('every valid blocksize 32..4096 blocks the flat tensor; invalid ones throw', () => {
  const values = randn(2 * 4096 + 3, 5);
  for (const bs of [32, 64, 128, 256, 512, 1024, 2048, 4096]) {
    const q = quantize4bit(values, { blocksize: bs, doubleQuant: false });
    assert.equal(q.absmax.length, Math.ceil(values.length / bs));
    for (let b = 0; b < q.absmax.length; b++) {
      let m = 0;
      for (let i = b * bs; i < Math.min(values.length, (b + 1) * bs); i++)
        m = Math.max(m, Math.abs(f(values[i]!)));
      assert.equal(q.absmax[b], m);
    }
  }
  for (const bs of [16, 48, 8192])
    assert.throws(() => quantize4bit(values, { blocksize: bs }), /blocksize/);
  for (const bad of [NaN, Infinity]) assert.throws(() => quantize4bit([1, bad]), /non-finite/);
});

test('Gaussian data: codes equal the argmin nearest code (bnb CPU formulation) and errors stay within half a gap', () => {
  const values = randn(64 * 500, 17);
  for (const quantType of ['nf4', 'fp4'] as const) {
    const q = quantize4bit(values, { quantType, doubleQuant: false });
    const codes = codesOf(q);
    const table =
      quantType === 'nf4' ? SPEC_NF4 : [...SPEC_FP4_POSITIVE, ...SPEC_FP4_POSITIVE.map((v) => -v)];
    const sorted = [...table].sort((a, b) => a - b);
    const maxGap = Math.max(...sorted.slice(1).map((v, i) => v - sorted[i]!));
    const deq = dequantize4bit(q);
    for (let i = 0; i < values.length; i++) {
      const a = q.absmax[Math.floor(i / 64)]!;
      const s = f(f(values[i]!) * f(1 / a));
      let best = 0;
      for (let c = 1; c < 16; c++)
        if (Math.abs(s - table[c]!) < Math.abs(s - table[best]!)) best = c;
      // FP4 has +0 and -0 codes: compare values, not indices.
      assert.ok(
        table[codes[i]!] === table[best],
        `${quantType} element ${i}: code ${codes[i]} vs nearest ${best}`,
      );
      assert.ok(
        Math.abs(deq[i]! - values[i]!) <= (maxGap / 2) * a * (1 + 1e-6),
        `${quantType} error at ${i}`,
      );
    }
  }
});

/**
 * Theoretical MSE of a 4-bit code for iid N(0,1) in blocks of n. For one element x and M = max |x|
 * over the other n-1 elements, the error is 0 when |x| ≥ M (x maps to ±1 exactly) and
 * (x - M·Q(x/M))² otherwise, so E = ∫_{x≥0} φ(x) ∫_{m>x} f_M(m)·[e(x, m)² + e(-x, m)²] dm dx with
 * f_M(m) = (n-1)(2Φ(m)-1)^(n-2)·2φ(m) (both signs: NF4 is not symmetric). Midpoint rule on a
 * 0.005 grid; Q is the exact nearest code in float64.
 */
function theoreticalMse(table: number[], n: number): number {
  const phi = (x: number) => Math.exp((-x * x) / 2) / Math.sqrt(2 * Math.PI);
  const top = 7;
  const steps = 1400;
  const h = top / steps;
  // Φ at each cell midpoint, by accumulating φ over half-cells (midpoint rule).
  const cdfAt = new Float64Array(steps);
  let acc = 0.5;
  for (let i = 0; i < steps; i++) {
    const lo = i * h;
    acc += phi(lo + h / 4) * (h / 2);
    cdfAt[i] = acc;
    acc += phi(lo + (3 * h) / 4) * (h / 2);
  }
  const quant = (s: number) => {
    let best = table[0]!;
    for (const c of table) if (Math.abs(s - c) < Math.abs(s - best)) best = c;
    return best;
  };
  let total = 0;
  for (let i = 0; i < steps; i++) {
    const x = (i + 0.5) * h;
    let inner = 0;
    for (let j = i + 1; j < steps; j++) {
      const m = (j + 0.5) * h;
      const density = (n - 1) * Math.pow(2 * cdfAt[j]! - 1, n - 2) * 2 * phi(m);
      const ePlus = x - m * quant(x / m);
      const eMinus = -x - m * quant(-x / m);
      inner += density * (ePlus * ePlus + eMinus * eMinus) * h;
    }
    total += phi(x) * inner * h;
  }
  return total;
}

test('Gaussian round-trip MSE matches the theoretical expectation (blocks of 64)', (t) => {
  const values = randn(64 * 8192, 2024);
  for (const quantType of ['nf4', 'fp4'] as const) {
    const table =
      quantType === 'nf4' ? SPEC_NF4 : [...SPEC_FP4_POSITIVE, ...SPEC_FP4_POSITIVE.map((v) => -v)];
    const theory = theoreticalMse(table, 64);
    const q = quantize4bit(values, { quantType, doubleQuant: false });
    const deq = dequantize4bit(q);
    let se = 0;
    for (let i = 0; i < values.length; i++) se += (deq[i]! - values[i]!) ** 2;
    const mse = se / values.length;
    t.diagnostic(
      `${quantType}: measured MSE ${mse.toExponential(4)}, theory ${theory.toExponential(4)}`,
    );
    assert.ok(
      Math.abs(mse / theory - 1) < 0.01,
      `${quantType}: measured MSE ${mse} vs theory ${theory}`,
    );
    // Double quantization perturbs absmax by < 1%: the MSE barely moves.
    const dq = dequantize4bit(quantize4bit(values, { quantType, doubleQuant: true }));
    let se2 = 0;
    for (let i = 0; i < values.length; i++) se2 += (dq[i]! - values[i]!) ** 2;
    assert.ok(Math.abs(se2 / se - 1) < 0.01, `${quantType}: double-quant MSE ratio ${se2 / se}`);
  }
});

test('dynamic 8-bit maps: spec spot values, symmetry and the decade formula', () => {
  const signed = createDynamicMap(true);
  const unsigned = createDynamicMap(false);
  assert.equal(signed.length, 256);
  assert.equal(signed[0], f(-0.99296875));
  assertClose([signed[126]!, signed[127]!, signed[128]!, signed[255]!], [-5.5e-7, 0, 5.5e-7, 1], {
    atol: 0,
    rtol: 1e-6,
  });
  assertClose(
    [unsigned[0]!, unsigned[1]!, unsigned[254]!, unsigned[255]!],
    [0, 3.25e-7, 0.99648, 1],
    { atol: 0, rtol: 1e-5 },
  );
  for (let k = 1; k <= 127; k++) assert.equal(signed[127 + k], -signed[127 - k]!, `symmetry ${k}`);
  for (let i = 1; i < 256; i++) {
    assert.ok(signed[i]! > signed[i - 1]!, 'signed map strictly increasing');
    assert.ok(unsigned[i]! > unsigned[i - 1]!, 'unsigned map strictly increasing');
  }
  // Decade i holds the midpoints of linspace(0.1, 1, n+1) scaled by 10^(i-6), n = 2^i (signed) or 2^(i+1).
  const expectedPositive = (perDecade: (i: number) => number) => {
    const out: number[] = [];
    for (let i = 0; i < 7; i++) {
      const n = perDecade(i);
      for (let j = 0; j < n; j++) out.push(10 ** (i - 6) * (0.1 + (0.9 * (j + 0.5)) / n));
    }
    return out.sort((a, b) => a - b);
  };
  assertClose(
    Array.from(signed.slice(128, 255)),
    expectedPositive((i) => 2 ** i),
    { atol: 0, rtol: 1e-6, what: 'signed positives' },
  );
  assertClose(
    Array.from(unsigned.slice(1, 255)),
    expectedPositive((i) => 2 ** (i + 1)),
    { atol: 0, rtol: 1e-6, what: 'unsigned' },
  );
});

test('blockwise 8-bit: nearest code, exact ties to the lower code, round trip within local resolution', () => {
  const code = createDynamicMap(true);
  // A pair of codes whose exact midpoint is a float32 value: a true tie.
  let tieIndex = -1;
  for (let i = 128; i < 254; i++) {
    const mid = (code[i]! + code[i + 1]!) / 2;
    if (f(mid) === mid && code[i]! < mid) {
      tieIndex = i;
      break;
    }
  }
  assert.ok(tieIndex > 0, 'found a representable midpoint');
  const mid = (code[tieIndex]! + code[tieIndex + 1]!) / 2;
  const tie = quantizeBlockwise8bit([1, mid, nextFloat32(mid, 1), nextFloat32(mid, -1)], code, 256);
  assert.deepEqual(Array.from(tie.codes), [255, tieIndex, tieIndex + 1, tieIndex]);

  const values = randn(1000, 3, 0.02);
  const q = quantizeBlockwise8bit(values, code, 256);
  const deq = dequantizeBlockwise8bit(q);
  for (let i = 0; i < values.length; i++) {
    const a = q.absmax[Math.floor(i / 256)]!;
    const s = f(values[i]!) / a;
    let j = 0;
    while (j < 254 && code[j + 1]! <= s) j++;
    // Half the local gap; below the lowest code (-0.99297: the signed map has no -1) the distance to it.
    const local = Math.max((code[j + 1]! - code[j]!) / 2, code[0]! - s);
    // + float32 rounding of the dequantized product (≤ 1 ulp of a).
    assert.ok(Math.abs(deq[i]! - f(values[i]!)) <= local * a + 1.2e-7 * a, `element ${i}`);
  }
});

test('double quantization: offset = mean(absmax), dequantized absmax within the 8-bit local resolution', () => {
  const values = randn(64 * 700 + 5, 99, 0.05);
  const single = quantize4bit(values, { quantType: 'nf4', doubleQuant: false });
  const double = quantize4bit(values, { quantType: 'nf4', doubleQuant: true });
  assert.ok(double.absmax instanceof Uint8Array && double.nested);
  assert.equal(double.nested.blocksize, 256);
  assert.equal(double.nested.absmax.length, Math.ceil(single.absmax.length / 256));
  const trueAbsmax = single.absmax as Float32Array;
  const mean = trueAbsmax.reduce((s, v) => s + v, 0) / trueAbsmax.length;
  assert.ok(Math.abs(double.nested.offset - mean) <= 1e-7 * mean);
  assert.deepEqual(
    codesOf(double),
    codesOf(single),
    '4-bit codes do not depend on how absmax is stored',
  );
  const code = double.nested.code;
  const deq = blockAbsmax(double);
  for (let b = 0; b < trueAbsmax.length; b++) {
    const a2 = double.nested.absmax[Math.floor(b / 256)]!;
    const s = (trueAbsmax[b]! - double.nested.offset) / a2;
    let j = 0;
    while (j < 254 && code[j + 1]! <= s) j++;
    const local = Math.max((code[j + 1]! - code[j]!) / 2, code[0]! - s);
    const tol = local * a2 + 2e-7 * trueAbsmax[b]!;
    assert.ok(
      Math.abs(deq[b]! - trueAbsmax[b]!) <= tol,
      `block ${b}: ${deq[b]} vs ${trueAbsmax[b]}`,
    );
  }
});

test('memory: NF4 + double quant costs ≈ 4.127 bits per parameter at blocksize 64', () => {
  const n = 64 * 256 * 64;
  const q = quantize4bit(randn(n, 1), { quantType: 'nf4', blocksize: 64, doubleQuant: true });
  const bits = (quantizedBytes(q) * 8) / n;
  assert.ok(Math.abs(bits - (4 + 8 / 64 + 32 / (64 * 256))) < 1e-3, `bits/param ${bits}`);
  const plain = quantize4bit(randn(n, 1), { quantType: 'nf4', blocksize: 64, doubleQuant: false });
  assert.ok(Math.abs((quantizedBytes(plain) * 8) / n - 4.5) < 1e-9);
});

test('uploadPacked4bit: backend dequantization equals host dequantization; dispose frees it', async () => {
  const be = await getBackend('ref');
  const before = be.memoryStats().allocatedBytes;
  for (const doubleQuant of [false, true]) {
    const q = quantize4bit(randn(7 * 45, 4), { quantType: 'nf4', blocksize: 32, doubleQuant });
    const w = uploadPacked4bit(be, q, 7, 45);
    const out = be.zeros([7, 45]);
    be.dequantize4bit(w, out);
    assert.deepEqual(Array.from(out.data), Array.from(dequantize4bit(q)));
    out.dispose();
    disposePacked4bit(w);
    assert.throws(() => uploadPacked4bit(be, q, 5, 45), /does not match/);
  }
  assert.equal(be.memoryStats().allocatedBytes, before);
});
