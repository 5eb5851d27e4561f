/**
 * Elementwise WebGPU kernels: fill, copy, add, scale, axpy, sum and sum of squares, soft-capping,
 * SwiGLU and dropout.
 * Grid-stride loops over a capped grid; f32/i32 move as 32-bit words, u8 tensors byte-exactly
 * (whole words read-modify-written by the one invocation that owns them).
 */
import { mix32 } from '../../../tensor/rng.js';
import type { Tensor } from '../../../tensor/tensor.js';
import type { KernelSpec } from '../context.js';
import { copyColumnsArgs, softcapOption } from '../../shape-checks.js';
import {
  args,
  checks,
  ctxOf,
  expectFinite,
  expectSize,
  f32,
  fail,
  noAlias,
  sameOrDisjoint,
} from '../checks.js';
import { strideGroups } from '../grid.js';
import { spanOf } from '../memory.js';

const WG = 256;
const HEAD = `const WG = ${WG}u;`;
const LOOP = (body: string): string => `${HEAD}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  for (var i = gid.x; i < P.n; i += step) {
    ${body}
  }
}`;

const b = (name: string, type: 'f32' | 'u32' | 'i32', write = false) => ({ name, type, write });

const FILL_WORDS: KernelSpec = {
  key: 'fill_words',
  bindings: [b('out', 'u32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'value', type: 'u32' },
  ],
  source: LOOP('out[P.off_out / 4u + i] = P.value;'),
};

/** Bytes [off, off+n) of a u32-bound buffer set from a byte pattern, word by word. */
const FILL_BYTES: KernelSpec = {
  key: 'fill_bytes',
  bindings: [b('out', 'u32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'words', type: 'u32' },
    { name: 'value', type: 'u32' },
  ],
  source: `${HEAD}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  let first = P.off_out / 4u;
  for (var w = gid.x; w < P.words; w += step) {
    var mask = 0u;
    for (var k = 0u; k < 4u; k++) {
      let byte = (first + w) * 4u + k;
      if (byte >= P.off_out && byte < P.off_out + P.n) { mask |= 0xffu << (8u * k); }
    }
    let old = out[first + w];
    out[first + w] = (old & ~mask) | (P.value & mask);
  }
}`,
};

const COPY_WORDS: KernelSpec = {
  key: 'copy_words',
  bindings: [b('src', 'u32'), b('dst', 'u32', true)],
  params: [{ name: 'n', type: 'u32' }],
  source: LOOP('dst[P.off_dst / 4u + i] = src[P.off_src / 4u + i];'),
};

const COPY_COLUMNS: KernelSpec = {
  key: 'copy_columns',
  bindings: [b('src', 'f32'), b('dst', 'f32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'width', type: 'u32' },
    { name: 'srcStride', type: 'u32' },
    { name: 'srcCol', type: 'u32' },
    { name: 'dstStride', type: 'u32' },
    { name: 'dstCol', type: 'u32' },
  ],
  source: LOOP(`let r = i / P.width;
    let j = i - r * P.width;
    dst[P.off_dst + r * P.dstStride + P.dstCol + j] = src[P.off_src + r * P.srcStride + P.srcCol + j];`),
};

const COPY_BYTES: KernelSpec = {
  key: 'copy_bytes',
  bindings: [b('src', 'u32'), b('dst', 'u32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'words', type: 'u32' },
  ],
  source: `${HEAD}
fn srcByte(i: u32) -> u32 { let at = P.off_src + i; return (src[at / 4u] >> (8u * (at % 4u))) & 0xffu; }
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  let first = P.off_dst / 4u;
  for (var w = gid.x; w < P.words; w += step) {
    var word = dst[first + w];
    for (var k = 0u; k < 4u; k++) {
      let byte = (first + w) * 4u + k;
      if (byte >= P.off_dst && byte < P.off_dst + P.n) {
        let v = srcByte(byte - P.off_dst);
        word = (word & ~(0xffu << (8u * k))) | (v << (8u * k));
      }
    }
    dst[first + w] = word;
  }
}`,
};

const ADD: KernelSpec = {
  key: 'add',
  bindings: [b('a', 'f32'), b('bb', 'f32'), b('out', 'f32', true)],
  params: [{ name: 'n', type: 'u32' }],
  source: LOOP('out[P.off_out + i] = a[P.off_a + i] + bb[P.off_bb + i];'),
};

const SCALE: KernelSpec = {
  key: 'scale',
  bindings: [b('x', 'f32'), b('out', 'f32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'alpha', type: 'f32' },
  ],
  source: LOOP('out[P.off_out + i] = P.alpha * x[P.off_x + i];'),
};

const AXPY: KernelSpec = {
  key: 'axpy',
  bindings: [b('x', 'f32'), b('y', 'f32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'alpha', type: 'f32' },
  ],
  source: LOOP('y[P.off_y + i] = fma(P.alpha, x[P.off_x + i], y[P.off_y + i]);'),
};

/**
 * WGSL tanh as the cpu kernels compute it (native/src/vec.h: a rational minimax form on x clamped to
 * ±7.905, within 5 ulp): WGSL's own tanh is only specified through sinh/cosh, whose absolute error
 * near 0 and overflow for large |x| vary between drivers. Used by soft-capping here, in attention
 * and in the cross-entropy.
 */
export const TANH_WGSL = `fn tanhRational(x0: f32) -> f32 {
  let x = clamp(x0, -7.90531110763549805, 7.90531110763549805);
  let x2 = x * x;
  var p = -2.76076847742355e-16;
  p = fma(p, x2, 2.00018790482477e-13);
  p = fma(p, x2, -8.60467152213735e-11);
  p = fma(p, x2, 5.12229709037114e-08);
  p = fma(p, x2, 1.48572235717979e-05);
  p = fma(p, x2, 6.37261928875436e-04);
  p = fma(p, x2, 4.89352455891786e-03);
  var q = 1.19825839466702e-06;
  q = fma(q, x2, 1.18534705686654e-04);
  q = fma(q, x2, 2.26843463243900e-03);
  q = fma(q, x2, 4.89352518554385e-03);
  return p * x / q;
}`;

const SOFTCAP: KernelSpec = {
  key: 'softcap',
  bindings: [b('x', 'f32'), b('out', 'f32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'cap', type: 'f32' },
  ],
  source: `${TANH_WGSL}
${LOOP('out[P.off_out + i] = P.cap * tanhRational(x[P.off_x + i] / P.cap);')}`,
};

const SOFTCAP_BACKWARD: KernelSpec = {
  key: 'softcap_backward',
  bindings: [b('dout', 'f32'), b('x', 'f32'), b('dx', 'f32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'cap', type: 'f32' },
  ],
  source: `${TANH_WGSL}
${LOOP(`let t = tanhRational(x[P.off_x + i] / P.cap);
    dx[P.off_dx + i] = dout[P.off_dout + i] * (1.0 - t * t);`)}`,
};

const SWIGLU: KernelSpec = {
  key: 'swiglu',
  bindings: [b('gate', 'f32'), b('up', 'f32'), b('out', 'f32', true)],
  params: [{ name: 'n', type: 'u32' }],
  source: LOOP(`let g = gate[P.off_gate + i];
    out[P.off_out + i] = g / (1.0 + exp(-g)) * up[P.off_up + i];`),
};

const SWIGLU_BACKWARD: KernelSpec = {
  key: 'swiglu_backward',
  bindings: [
    b('dout', 'f32'),
    b('gate', 'f32'),
    b('up', 'f32'),
    b('dgate', 'f32', true),
    b('dup', 'f32', true),
  ],
  params: [{ name: 'n', type: 'u32' }],
  source: LOOP(`let g = gate[P.off_gate + i];
    let u = up[P.off_up + i];
    let d = dout[P.off_dout + i];
    let s = 1.0 / (1.0 + exp(-g));
    dgate[P.off_dgate + i] = d * u * s * (1.0 + g * (1.0 - s));
    dup[P.off_dup + i] = d * g * s;`),
};

/** The counter-based mask of rng.ts (mix32 of mix32(seed) + i, top 24 bits vs ceil(p·2²⁴)). */
const DROPOUT: KernelSpec = {
  key: 'dropout',
  bindings: [b('x', 'f32'), b('out', 'f32', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'seedHash', type: 'u32' },
    { name: 'threshold', type: 'u32' },
    { name: 'scale', type: 'f32' },
  ],
  source: `${HEAD}
fn mix32(v: u32) -> u32 {
  var x = v;
  x = x ^ (x >> 16u); x = x * 0x7feb352du;
  x = x ^ (x >> 15u); x = x * 0x846ca68bu;
  x = x ^ (x >> 16u);
  return x;
}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  for (var i = gid.x; i < P.n; i += step) {
    let h = mix32(P.seedHash + i);
    let keep = (h >> 8u) >= P.threshold;
    out[P.off_out + i] = select(0.0, x[P.off_x + i] * P.scale, keep);
  }
}`,
};

const SUMSQ_GROUPS = 256;

/**
 * Pass 1: workgroup g sums its strided elements (squared for the sum of squares) into partial[g]
 * (fixed tree order).
 */
const sumPartial = (square: boolean): KernelSpec => ({
  key: square ? 'sumsq_partial' : 'sum_partial',
  bindings: [b('x', 'f32'), b('partial', 'f32', true)],
  params: [{ name: 'n', type: 'u32' }],
  source: `${HEAD}
var<workgroup> acc: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  var s = 0.0;
  var c = 0.0;
  for (var i = gid.x; i < P.n; i += step) {
    let v = x[P.off_x + i];
    // Kahan: f32 has no f64 fallback on the GPU; compensation keeps long sums accurate.
    let y = ${square ? 'v * v' : 'v'} - c;
    let t = s + y;
    c = (t - s) - y;
    s = t;
  }
  acc[lid.x] = s;
  workgroupBarrier();
  for (var w = WG / 2u; w > 0u; w = w / 2u) {
    if (lid.x < w) { acc[lid.x] += acc[lid.x + w]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) { partial[P.off_partial + wg.x] = acc[0]; }
}`,
});
const SUMSQ_PARTIAL = sumPartial(true);
const SUM_PARTIAL = sumPartial(false);

const SUMSQ_FINAL: KernelSpec = {
  key: 'sumsq_final',
  bindings: [b('partial', 'f32'), b('out', 'f32', true)],
  params: [
    { name: 'groups', type: 'u32' },
    { name: 'accumulate', type: 'u32' },
  ],
  source: `${HEAD}
var<workgroup> acc: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u) {
  acc[lid.x] = select(0.0, partial[P.off_partial + lid.x], lid.x < P.groups);
  workgroupBarrier();
  for (var w = WG / 2u; w > 0u; w = w / 2u) {
    if (lid.x < w) { acc[lid.x] += acc[lid.x + w]; }
    workgroupBarrier();
  }
  if (lid.x == 0u) {
    out[P.off_out] = select(0.0, out[P.off_out], P.accumulate != 0u) + acc[0];
  }
}`,
};

function wordsCovering(byteOffset: number, n: number): number {
  return Math.ceil(((byteOffset % 4) + n) / 4);
}

export function fill(out: Tensor, value: number): void {
  if (typeof value !== 'number') fail('fill', 'value must be a number');
  const ctx = ctxOf(out);
  const span = spanOf(out);
  if (out.dtype === 'f32' || out.dtype === 'i32') {
    if (out.dtype === 'i32' && !Number.isInteger(value))
      fail('fill', `${value} is not an integer for a i32 tensor`);
    const word = new Uint32Array(1);
    if (out.dtype === 'f32') new Float32Array(word.buffer)[0] = value;
    else new Int32Array(word.buffer)[0] = value;
    ctx.dispatch(FILL_WORDS, [span], [out.size, word[0]!], [strideGroups(ctx, out.size, WG)]);
    return;
  }
  if (out.dtype !== 'u8') fail('fill', `dtype ${out.dtype} is not supported on webgpu`);
  if (!Number.isInteger(value)) fail('fill', `${value} is not an integer for a u8 tensor`);
  const byte = value & 0xff;
  const words = wordsCovering(span.byteOffset, out.size);
  ctx.dispatch(
    FILL_BYTES,
    [span],
    [out.size, words, (byte * 0x01010101) >>> 0],
    [strideGroups(ctx, words, WG)],
  );
}

export function copy(src: Tensor, dst: Tensor): void {
  if (src.dtype !== dst.dtype) fail('copy', `src is ${src.dtype} but dst is ${dst.dtype}`);
  expectSize('copy', 'dst', dst, src.size);
  const ctx = ctxOf(dst);
  const s = spanOf(src);
  const d = spanOf(dst);
  if (src.size === 0 || (s.buffer === d.buffer && s.byteOffset === d.byteOffset)) return;
  noAlias('copy', 'src and dst', src, dst);
  if (src.dtype !== 'u8') {
    ctx.dispatch(COPY_WORDS, [s, d], [src.size], [strideGroups(ctx, src.size, WG)]);
    return;
  }
  const words = wordsCovering(d.byteOffset, src.size);
  ctx.dispatch(COPY_BYTES, [s, d], [src.size, words], [strideGroups(ctx, words, WG)]);
}

/** dst[:, dstCol .. dstCol+width) = src[:, srcCol .. srcCol+width): one invocation per element. */
export function copyColumns(
  src: Tensor,
  srcCol: number,
  dst: Tensor,
  dstCol: number,
  width: number,
): void {
  const [n, a, bCols] = copyColumnsArgs(args, src, srcCol, dst, dstCol, width);
  const s = f32('copyColumns', 'src', src);
  const d = f32('copyColumns', 'dst', dst);
  const total = n * width;
  if (total === 0) return;
  const ctx = ctxOf(dst);
  ctx.dispatch(
    COPY_COLUMNS,
    [s, d],
    [total, width, a, srcCol, bCols, dstCol],
    [strideGroups(ctx, total, WG)],
  );
}

export function add(a: Tensor, bb: Tensor, out: Tensor): void {
  const x = f32('add', 'a', a);
  const y = f32('add', 'b', bb);
  const o = f32('add', 'out', out);
  expectSize('add', 'b', bb, a.size);
  expectSize('add', 'out', out, a.size);
  sameOrDisjoint('add', 'out and a', out, a);
  sameOrDisjoint('add', 'out and b', out, bb);
  const ctx = ctxOf(out);
  ctx.dispatch(ADD, [x, y, o], [a.size], [strideGroups(ctx, a.size, WG)]);
}

export function scale(x: Tensor, alpha: number, out: Tensor): void {
  const xs = f32('scale', 'x', x);
  const o = f32('scale', 'out', out);
  expectSize('scale', 'out', out, x.size);
  expectFinite('scale', 'alpha', alpha);
  sameOrDisjoint('scale', 'out and x', out, x);
  const ctx = ctxOf(out);
  ctx.dispatch(SCALE, [xs, o], [x.size, alpha], [strideGroups(ctx, x.size, WG)]);
}

export function axpy(alpha: number, x: Tensor, y: Tensor): void {
  const xs = f32('axpy', 'x', x);
  const ys = f32('axpy', 'y', y);
  expectSize('axpy', 'y', y, x.size);
  expectFinite('axpy', 'alpha', alpha);
  sameOrDisjoint('axpy', 'x and y', x, y);
  const ctx = ctxOf(y);
  ctx.dispatch(AXPY, [xs, ys], [x.size, alpha], [strideGroups(ctx, x.size, WG)]);
}

/** out[0] (+)= Σ x² or Σ x: Kahan-compensated f32 partials per invocation, then a fixed tree (no f64 on GPUs). */
function reduce(
  op: 'sum' | 'sumOfSquares',
  partialSpec: KernelSpec,
  x: Tensor,
  out: Tensor,
  accumulate: boolean,
): void {
  const xs = f32(op, 'x', x);
  const o = f32(op, 'out', out);
  expectSize(op, 'out', out, 1);
  noAlias(op, 'x and out', x, out);
  const ctx = ctxOf(out);
  const groups = Math.min(SUMSQ_GROUPS, Math.max(1, Math.ceil(x.size / WG)));
  const partial = ctx.scratch(SUMSQ_GROUPS * 4);
  ctx.dispatch(partialSpec, [xs, partial], [x.size], [groups]);
  ctx.dispatch(SUMSQ_FINAL, [partial, o], [groups, accumulate ? 1 : 0], [1]);
}

export function sumOfSquares(x: Tensor, out: Tensor, accumulate: boolean): void {
  reduce('sumOfSquares', SUMSQ_PARTIAL, x, out, accumulate);
}

export function sum(x: Tensor, out: Tensor, accumulate: boolean): void {
  reduce('sum', SUM_PARTIAL, x, out, accumulate);
}

/** out = cap·tanh(x / cap); out may alias x. */
export function softcap(x: Tensor, cap: number, out: Tensor): void {
  const op = 'softcap';
  const c = softcapOption(checks, op, 'cap', cap)!;
  const xs = f32(op, 'x', x);
  const o = f32(op, 'out', out);
  expectSize(op, 'out', out, x.size);
  sameOrDisjoint(op, 'out and x', out, x);
  const ctx = ctxOf(out);
  ctx.dispatch(SOFTCAP, [xs, o], [x.size, c], [strideGroups(ctx, x.size, WG)]);
}

/** dx = dout·(1 - tanh²(x / cap)); dx may alias dout. */
export function softcapBackward(dout: Tensor, x: Tensor, cap: number, dx: Tensor): void {
  const op = 'softcapBackward';
  const c = softcapOption(checks, op, 'cap', cap)!;
  const d = f32(op, 'dout', dout);
  const xs = f32(op, 'x', x);
  const g = f32(op, 'dx', dx);
  expectSize(op, 'x', x, dout.size);
  expectSize(op, 'dx', dx, dout.size);
  sameOrDisjoint(op, 'dx and dout', dx, dout);
  sameOrDisjoint(op, 'dx and x', dx, x);
  const ctx = ctxOf(dx);
  ctx.dispatch(SOFTCAP_BACKWARD, [d, xs, g], [dout.size, c], [strideGroups(ctx, dout.size, WG)]);
}

export function swiglu(gate: Tensor, up: Tensor, out: Tensor): void {
  const g = f32('swiglu', 'gate', gate);
  const u = f32('swiglu', 'up', up);
  const o = f32('swiglu', 'out', out);
  expectSize('swiglu', 'up', up, gate.size);
  expectSize('swiglu', 'out', out, gate.size);
  sameOrDisjoint('swiglu', 'out and gate', out, gate);
  sameOrDisjoint('swiglu', 'out and up', out, up);
  const ctx = ctxOf(out);
  ctx.dispatch(SWIGLU, [g, u, o], [gate.size], [strideGroups(ctx, gate.size, WG)]);
}

export function swigluBackward(
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
  dgate: Tensor,
  dup: Tensor,
): void {
  const op = 'swigluBackward';
  const d = f32(op, 'dout', dout);
  const g = f32(op, 'gate', gate);
  const u = f32(op, 'up', up);
  const dg = f32(op, 'dgate', dgate);
  const du = f32(op, 'dup', dup);
  for (const [name, t] of [
    ['up', up],
    ['dout', dout],
    ['dgate', dgate],
    ['dup', dup],
  ] as const)
    expectSize(op, name, t, gate.size);
  noAlias(op, 'dgate and dup', dgate, dup);
  sameOrDisjoint(op, 'dgate and gate', dgate, gate);
  sameOrDisjoint(op, 'dup and up', dup, up);
  noAlias(op, 'dgate and up', dgate, up);
  noAlias(op, 'dup and gate', dup, gate);
  const ctx = ctxOf(dgate);
  ctx.dispatch(SWIGLU_BACKWARD, [d, g, u, dg, du], [gate.size], [strideGroups(ctx, gate.size, WG)]);
}

export function dropout(x: Tensor, p: number, seed: number, out: Tensor): void {
  const xs = f32('dropout', 'x', x);
  const o = f32('dropout', 'out', out);
  expectSize('dropout', 'out', out, x.size);
  if (!(p >= 0 && p < 1)) fail('dropout', `p must be in [0, 1), got ${p}`);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32)
    fail('dropout', `seed must be a u32, got ${seed}`);
  if (x.size > 2 ** 32) fail('dropout', 'more than 2^32 elements');
  sameOrDisjoint('dropout', 'out and x', out, x);
  const ctx = ctxOf(out);
  const threshold = Math.ceil(p * 16777216);
  const scaleValue = p < 1 ? Math.fround(1 / (1 - p)) : 1;
  ctx.dispatch(
    DROPOUT,
    [xs, o],
    [x.size, mix32(seed), threshold, scaleValue],
    [strideGroups(ctx, x.size, WG)],
  );
}
