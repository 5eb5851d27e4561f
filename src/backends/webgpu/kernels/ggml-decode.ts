/**
 * WGSL decoders of a GGUF's own quantized blocks (ggml's Q4_0, Q8_0, Q4_K, Q5_K, Q6_K; layouts in
 * docs/formats.md §5.2), shared by the fused dequant-GEMM (gemm.ts stages B tiles through them) and
 * dequantizeGgml. The blocks are uploaded byte for byte as the file stores them and bound as u32
 * words (WGSL has no u8 storage, and f16 storage needs an optional feature): bytes are shifted out
 * of their word and f16 scales are decoded by bit manipulation, so every adapter reads them alike.
 * Each element is ggml's value exactly: the products are exact in f32 (an f16 scale times ≤ 8-bit
 * integers fits in 24 bits) and the one subtraction of Q4_K/Q5_K rounds once, as the reference's
 * Math.fround does (src/quant/ggml-blocks.ts).
 */
import type { KernelBinding, KernelParam } from '../context.js';
import { GGML_QUANT_TYPES, type GgmlQuantType } from '../../../quant/ggml-blocks.js';

/** The blocks, bound as u32 words (P.off_qw is a byte offset, as for every u32-bound u8 tensor). */
export const GGML_BINDINGS: readonly KernelBinding[] = [{ name: 'qw', type: 'u32', write: false }];

/** The block type (ggml id), bytes per W row (rows start at P.off_qw + r·rowBytes) and the window's first W column. */
export const GGML_PARAMS: readonly KernelParam[] = [
  { name: 'gtype', type: 'u32' },
  { name: 'rowBytes', type: 'u32' },
  { name: 'wCol0', type: 'u32' },
];

/** Byte and f16 readers over `qw`; an f16 is two byte reads since Q4_0/Q8_0 blocks (18, 34 bytes) leave scales 2-aligned only. */
const BYTES_WGSL = `fn qbyte(at: u32) -> u32 { return (qw[at >> 2u] >> ((at & 3u) << 3u)) & 255u; }
fn qi8(at: u32) -> i32 { let b = qbyte(at); return i32(b) - select(0, 256, b >= 128u); }
fn qhalf(at: u32) -> f32 {
  let h = qbyte(at) | (qbyte(at + 1u) << 8u);
  let e = (h >> 10u) & 31u;
  let m = h & 1023u;
  var v: f32;
  if (e == 0u) { v = f32(m) * 5.9604644775390625e-8; }
  else if (e == 31u) { v = bitcast<f32>(0x7f800000u | (m << 13u)); }
  else { v = bitcast<f32>(((e + 112u) << 23u) | (m << 13u)); }
  return select(v, -v, (h & 0x8000u) != 0u);
}`;

/** The 6-bit (scale, min) pair j of a K-quant's 12 packed scale bytes at `p` (ggml's get_scale_min_k4). */
const K_SCALE_WGSL = `fn kScaleMin(p: u32, j: u32) -> vec2<u32> {
  if (j < 4u) { return vec2<u32>(qbyte(p + j) & 63u, qbyte(p + j + 4u) & 63u); }
  let hi = qbyte(p + j + 4u);
  return vec2<u32>((hi & 15u) | ((qbyte(p + j - 4u) >> 6u) << 4u), (hi >> 4u) | ((qbyte(p + j) >> 6u) << 4u));
}`;

/** Per type: the body of `fn ggmlAt(r, c)` given p (the block's first byte) and j (the element in it). */
const ELEMENT: Record<GgmlQuantType, string> = {
  // { f16 d; i8 q[32] }: q·d.
  q8_0: `return f32(qi8(p + 2u + j)) * qhalf(p);`,
  // { f16 d; u8 qs[16] }: elements 0..15 in the low nibbles, 16..31 in the high; (q − 8)·d.
  q4_0: `let q = qbyte(p + 2u + (j & 15u));
  let nib = select(q & 15u, q >> 4u, j >= 16u);
  return f32(i32(nib) - 8) * qhalf(p);`,
  // { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }: chunk c of 64 values takes 32 bytes of qs, low
  // nibbles with pair 2c, high nibbles with pair 2c+1; d·sc·q − dmin·m.
  q4_k: `let c = j >> 6u;
  let high = (j & 32u) != 0u;
  let sm = kScaleMin(p + 4u, 2u * c + select(0u, 1u, high));
  let q = qbyte(p + 16u + 32u * c + (j & 31u));
  let nib = select(q & 15u, q >> 4u, high);
  return qhalf(p) * f32(sm.x) * f32(nib) - qhalf(p + 2u) * f32(sm.y);`,
  // Q4_K plus qh[32] before qs: the fifth bit of value l of chunk c is bit 2c (low) / 2c+1 (high) of qh[l].
  q5_k: `let c = j >> 6u;
  let high = (j & 32u) != 0u;
  let pair = 2u * c + select(0u, 1u, high);
  let sm = kScaleMin(p + 4u, pair);
  let l = j & 31u;
  let q = qbyte(p + 48u + 32u * c + l);
  let v = select(q & 15u, q >> 4u, high) | (((qbyte(p + 16u + l) >> pair) & 1u) << 4u);
  return qhalf(p) * f32(sm.x) * f32(v) - qhalf(p + 2u) * f32(sm.y);`,
  // { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }: in half h, value l + 32k takes its low four
  // bits from ql[l] (k even) or ql[l + 32] (k odd), low nibble for k < 2, and bit pair k of qh[l].
  q6_k: `let h = j >> 7u;
  let k = (j >> 5u) & 3u;
  let l = j & 31u;
  let a = qbyte(p + 64u * h + l + 32u * (k & 1u));
  let low = select(a & 15u, a >> 4u, k >= 2u);
  let q = low | (((qbyte(p + 128u + 32u * h + l) >> (2u * k)) & 3u) << 4u);
  let scale = qi8(p + 192u + 8u * h + (l >> 4u) + 2u * k);
  return qhalf(p + 208u) * f32(scale) * f32(i32(q) - 32);`,
};

/** The ggml type ids the decoder knows (P.gtype), in GGML_QUANT_TYPES order. */
const TYPES = Object.keys(GGML_QUANT_TYPES) as GgmlQuantType[];

/**
 * WGSL defining `fn ggmlAt(r: u32, col: u32) -> f32`: element (r, col) of the weight whose row r
 * starts at byte P.off_qw + r·P.rowBytes of `qw` (r counts from the window's first row), of the
 * block type whose ggml id is P.gtype. One pipeline decodes every type through a uniform branch:
 * free on a GPU, and a software adapter (CI's lavapipe, where compiling one GEMM variant takes
 * seconds) compiles one variant instead of five.
 */
export const GGML_DECODE_WGSL = [
  BYTES_WGSL,
  K_SCALE_WGSL,
  ...TYPES.map(
    (t) => `fn at_${t}(p: u32, j: u32) -> f32 {
  ${ELEMENT[t]}
}`,
  ),
  `fn ggmlAt(r: u32, col: u32) -> f32 {
  let row = P.off_qw + r * P.rowBytes;
  switch P.gtype {
${TYPES.map((t) => {
  const g = GGML_QUANT_TYPES[t];
  return `    case ${g.id}u: { return at_${t}(row + (col / ${g.blockElems}u) * ${g.blockBytes}u, col % ${g.blockElems}u); }`;
}).join('\n')}
    default: { return 0.0; }
  }
}`,
].join('\n');
