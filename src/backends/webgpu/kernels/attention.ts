/**
 * Causal grouped-query flash attention on WebGPU (forward and backward), never holding a T×T score
 * matrix: workgroups stream key/value tiles (or query tiles) through workgroup memory with an online
 * softmax.
 *
 * Rows: one workgroup serves one (batch, kv head) and a block of BR "rows", where row ρ = i·G + hg is
 * query i of head g·G + hg (G = H / Hkv). Every head of a GQA group thus shares each K/V tile it
 * loads, and decode (Tq = 1) still fills G rows.
 *
 * Backward without float atomics, deterministic: a small pass stores each row's lse and
 * Δ = rowsum(dO ∘ O); the dQ pass walks key tiles per row block; the dK/dV pass owns a key block and
 * walks the row blocks that can see it, summing the group's heads in row order.
 *
 * A sliding window (a query at position p sees keys p - window < j ≤ p, docs/attention.md) starts the
 * forward and dQ key loops at the first key the block's first row sees and ends the dK/dV row loop
 * at the last row that sees the key block, so tiles wholly outside the window are never visited. A
 * soft-cap (Gemma 2) turns each scaled score s into cap·tanh(s / cap) and multiplies dS by its
 * derivative. Both are per-dispatch parameters, not kernel variants.
 *
 * Tile sizes follow the head dim and the adapter's maxComputeWorkgroupStorageSize (16 KiB by
 * default, 32 KiB on most GPUs); tiles are padded to an odd row stride so threads reading one
 * column of a tile hit different banks.
 */
import type { AttentionOptions } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { type AttentionDims, attentionBackwardArgs, attentionDims } from '../../shape-checks.js';
import type { GpuContext, GpuSpan, KernelSpec } from '../context.js';
import { args, checks, ctxOf, expectShape, f32, fail, i32, noAlias } from '../checks.js';
import { STRIDE, UNIT_INDEX, strideGroups, unitGroups } from '../grid.js';
import { TANH_WGSL } from './elementwise.js';

const WG = 256;
/** The largest head dim the kernels take (per-thread accumulators are sized for it). */
export const MAX_HEAD_DIM = 256;

type Pass = 'forward' | 'dq' | 'dkv';

interface Tiles {
  /** Rows (query, head) per tile. */
  readonly br: number;
  /** Keys per tile. */
  readonly bc: number;
}

/** Preferred tiles first; powers of two so WG splits evenly into rows (or keys) × lanes. */
const CANDIDATES: readonly Tiles[] = [
  { br: 16, bc: 32 },
  { br: 16, bc: 16 },
  { br: 16, bc: 8 },
  { br: 8, bc: 16 },
  { br: 8, bc: 8 },
  { br: 8, bc: 4 },
  { br: 4, bc: 8 },
  { br: 4, bc: 4 },
  { br: 4, bc: 2 },
  { br: 2, bc: 2 },
  { br: 2, bc: 1 },
  { br: 1, bc: 1 },
];

function rowStride(D: number): number {
  return D % 2 === 0 ? D + 1 : D;
}

/** Workgroup memory of a pass in 4-byte words. */
function sharedWords(pass: Pass, D: number, { br, bc }: Tiles): number {
  const ds = rowStride(D);
  switch (pass) {
    case 'forward':
      return (br + bc) * ds + br * bc + 6 * br + bc;
    case 'dq':
      return (2 * br + bc) * ds + 2 * br * bc + 5 * br + bc;
    case 'dkv':
      return (2 * br + 2 * bc) * ds + 2 * br * bc + 5 * br + bc;
  }
}

/**
 * Head dims share kernels by class (the largest head dim the tiles hold): 32, 64, 128, 256. The
 * exact dim is a parameter: constant loop bounds would be unrolled, which makes shader compilation
 * slow (seconds per variant on software adapters) for no gain at run time.
 */
function headDimClass(D: number): number {
  return D <= 32 ? 32 : D <= 64 ? 64 : D <= 128 ? 128 : MAX_HEAD_DIM;
}

function chooseTiles(ctx: GpuContext, pass: Pass, D: number): Tiles {
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  for (const t of CANDIDATES) if (sharedWords(pass, D, t) * 4 <= limit) return t;
  throw new Error(
    `webgpu.attention: head dim ${D} does not fit this adapter's ${limit}-byte workgroup memory`,
  );
}

/** WGSL shared by the passes: constants, and the (row → query, head) map. */
function header(dmax: number, tiles: Tiles, lanes: number): string {
  return `const WG = ${WG}u;
const BR = ${tiles.br}u;
const BC = ${tiles.bc}u;
const LN = ${lanes}u;
const NE = ${Math.ceil(dmax / lanes)}u;
// A finite "minus infinity" for masked scores: WGSL may assume no infinities at run time.
const NEG = -1.0e30;
${UNIT_INDEX}
// Element 0 of row ρ = i·G + hg (query i, head g·G + hg) in a [B, Tq, H, D] tensor.
fn qBase(b: u32, g: u32, rho: u32) -> u32 {
  let i = rho / P.G;
  return ((b * P.Tq + i) * P.H + g * P.G + (rho - i * P.G)) * P.D;
}
// Index of row ρ in lse [B, H, Tq].
fn lseIndex(b: u32, g: u32, rho: u32) -> u32 {
  let i = rho / P.G;
  return (b * P.H + g * P.G + (rho - i * P.G)) * P.Tq + i;
}
fn kBase(b: u32, g: u32, j: u32) -> u32 { return ((b * P.Tk + j) * P.Hkv + g) * P.D; }
// The first key the query at position pos sees (may be negative: then every earlier key).
fn firstKey(pos: i32) -> i32 {
  if (P.window > 0u) { return pos - i32(P.window) + 1; }
  return 0;
}
// The first key of the BC-aligned tile holding the first key row rho (of the block) sees.
fn keyStart(rho: u32) -> u32 {
  let first = max(firstKey(i32(P.Tk - P.Tq + rho / P.G)), 0);
  return (u32(first) / BC) * BC;
}
${TANH_WGSL}
// A scaled score, soft-capped when the dispatch asks (P.softcap > 0).
fn capScore(s: f32) -> f32 {
  if (P.softcap > 0.0) { return P.softcap * tanhRational(s / P.softcap); }
  return s;
}
// d capScore / ds at a capped score c: 1 - (c / cap)².
fn capGrad(c: f32) -> f32 {
  if (P.softcap > 0.0) {
    let t = c / P.softcap;
    return 1.0 - t * t;
  }
  return 1.0;
}`;
}

const DIM_PARAMS = [
  { name: 'units', type: 'u32' },
  { name: 'Tq', type: 'u32' },
  { name: 'Tk', type: 'u32' },
  { name: 'H', type: 'u32' },
  { name: 'Hkv', type: 'u32' },
  { name: 'G', type: 'u32' },
  { name: 'scale', type: 'f32' },
  { name: 'D', type: 'u32' },
  { name: 'DS', type: 'u32' },
  // BR and BC again, as loop bounds: constant bounds get unrolled, multiplying compile time.
  { name: 'br', type: 'u32' },
  { name: 'bc', type: 'u32' },
  // Sliding window in keys (0: none) and attention soft-cap (0: none).
  { name: 'window', type: 'u32' },
  { name: 'softcap', type: 'f32' },
] as const;

const f = (name: string, write = false) => ({ name, type: 'f32' as const, write });
const segBinding = { name: 'seg', type: 'i32' as const, write: false };

/** WGSL fragment: key j of the tile is visible from row rr (causal, in the window, and the same segment). */
function visible(seg: boolean, key: string, rowVar: string): string {
  const causal = `rowPos[${rowVar}] >= 0 && i32(${key}) <= rowPos[${rowVar}] && i32(${key}) >= rowFirst[${rowVar}]`;
  return seg ? `(${causal} && keySeg[c] == rowSeg[${rowVar}])` : `(${causal})`;
}

/** WGSL fragment: rowPos (−1 past the last row), rowFirst, rowSeg for the rows of the tile at rho0 (run by t < BR). */
function rowInfo(seg: boolean): string {
  return `let rho = rho0 + t;
    var pos = -1;
    if (rho < rows) { pos = i32(P.Tk - P.Tq + rho / P.G); }
    rowPos[t] = pos;
    rowFirst[t] = firstKey(pos);
    ${seg ? 'rowSeg[t] = seg[P.off_seg + b * P.Tk + u32(max(pos, 0))];' : ''}`;
}

function segShared(seg: boolean): string {
  const first = 'var<workgroup> rowFirst: array<i32, BR>;';
  return seg
    ? `${first}\nvar<workgroup> rowSeg: array<i32, BR>;\nvar<workgroup> keySeg: array<i32, BC>;`
    : first;
}

function segKeyLoad(seg: boolean, first: string): string {
  return seg
    ? `if (t < BC) { keySeg[t] = seg[P.off_seg + b * P.Tk + min(${first} + t, P.Tk - 1u)]; }`
    : '';
}

/** WGSL fragment: a tile of BR rows of a [B, Tq, H, D] tensor into workgroup memory (zeros past the end). */
function loadRows(src: string, dst: string): string {
  return `for (var idx = t; idx < BR * D; idx += WG) {
      let rr = idx / D;
      let e = idx - rr * D;
      var val = 0.0;
      if (rho0 + rr < rows) { val = ${src}[P.off_${src} + qBase(b, g, rho0 + rr) + e]; }
      ${dst}[rr * DS + e] = val;
    }`;
}

/** WGSL fragment: a tile of BC keys of a [B, Tk, Hkv, D] tensor (zeros at and past `end`). */
function loadKeys(src: string, dst: string, first: string, end: string): string {
  return `for (var idx = t; idx < BC * D; idx += WG) {
      let c = idx / D;
      let e = idx - c * D;
      let j = ${first} + c;
      var val = 0.0;
      if (j < ${end}) { val = ${src}[P.off_${src} + kBase(b, g, j) + e]; }
      ${dst}[c * DS + e] = val;
    }`;
}

function dotRows(a: string, ra: string, bb: string, rb: string): string {
  return `var acc = 0.0;
        for (var e = 0u; e < D; e++) { acc = fma(${a}[${ra} * DS + e], ${bb}[${rb} * DS + e], acc); }`;
}

function forwardSpec(dmax: number, tiles: Tiles, seg: boolean): KernelSpec {
  return {
    key: `attention_fwd_d${dmax}_${tiles.br}x${tiles.bc}${seg ? '_seg' : ''}`,
    bindings: [
      f('q'),
      f('k'),
      f('v'),
      f('out', true),
      f('lse', true),
      ...(seg ? [segBinding] : []),
    ],
    params: DIM_PARAMS,
    source: `${header(dmax, tiles, WG / tiles.br)}
var<workgroup> qs: array<f32, ${tiles.br * rowStride(dmax)}>;
var<workgroup> kv: array<f32, ${tiles.bc * rowStride(dmax)}>;
var<workgroup> sc: array<f32, ${tiles.br * tiles.bc}>;
var<workgroup> rowM: array<f32, BR>;
var<workgroup> rowL: array<f32, BR>;
var<workgroup> rowA: array<f32, BR>;
var<workgroup> rowPos: array<i32, BR>;
${segShared(seg)}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let unit = unitIndex(wg, nwg);
  if (unit >= P.units) { return; }
  // The head dim and tile row stride are per dispatch (constants would be unrolled: slow to compile).
  let D = P.D;
  let DS = P.DS;
  let rows = P.Tq * P.G;
  let blocks = (rows + BR - 1u) / BR;
  let rho0 = (unit % blocks) * BR;
  let g = (unit / blocks) % P.Hkv;
  let b = unit / blocks / P.Hkv;
  let t = lid.x;
  ${loadRows('q', 'qs')}
  if (t < BR) {
    ${rowInfo(seg)}
    rowM[t] = NEG;
    rowL[t] = 0.0;
  }
  let r = t / LN;
  let lane = t - r * LN;
  var o: array<f32, NE>;
  for (var x = 0u; x < NE; x++) { o[x] = 0.0; }
  // Keys [0, kEnd) reach the last row of the block (query positions are Tk - Tq + i).
  let kEnd = P.Tk - P.Tq + (min(rho0 + BR, rows) - 1u) / P.G + 1u;
  workgroupBarrier();
  for (var j0 = keyStart(rho0); j0 < kEnd; j0 += BC) {
    ${loadKeys('k', 'kv', 'j0', 'kEnd')}
    ${segKeyLoad(seg, 'j0')}
    workgroupBarrier();
    for (var idx = t; idx < BR * BC; idx += WG) {
      let rr = idx / BC;
      let c = idx - rr * BC;
      var s = NEG;
      if ${visible(seg, 'j0 + c', 'rr')} {
        ${dotRows('qs', 'rr', 'kv', 'c')}
        s = capScore(acc * P.scale);
      }
      sc[idx] = s;
    }
    workgroupBarrier();
    ${loadKeys('v', 'kv', 'j0', 'kEnd')}
    if (t < BR) {
      // Online softmax: rescale what the row has so far by exp(m_old − m_new).
      let mOld = rowM[t];
      var mx = mOld;
      for (var c = 0u; c < P.bc; c++) { mx = max(mx, sc[t * BC + c]); }
      var alpha = 1.0;
      if (mOld > NEG) { alpha = exp(mOld - mx); }
      var sum = 0.0;
      for (var c = 0u; c < P.bc; c++) {
        let s = sc[t * BC + c];
        var p = 0.0;
        if (s > NEG) { p = exp(s - mx); }
        sc[t * BC + c] = p;
        sum += p;
      }
      rowL[t] = rowL[t] * alpha + sum;
      rowM[t] = mx;
      rowA[t] = alpha;
    }
    workgroupBarrier();
    let alpha = rowA[r];
    for (var x = 0u; x < NE; x++) { o[x] *= alpha; }
    // Columns past D (clamped) accumulate values that are never stored.
    for (var c = 0u; c < P.bc; c++) {
      let p = sc[r * BC + c];
      for (var x = 0u; x < NE; x++) { o[x] = fma(p, kv[c * DS + min(lane + x * LN, D - 1u)], o[x]); }
    }
    workgroupBarrier();
  }
  let rho = rho0 + r;
  if (rho < rows) {
    // Every row sees at least its own key, so l > 0.
    let l = rowL[r];
    let inv = 1.0 / l;
    let base = qBase(b, g, rho);
    for (var x = 0u; x < NE; x++) {
      let e = lane + x * LN;
      if (e < D) { out[P.off_out + base + e] = o[x] * inv; }
    }
    if (lane == 0u) { lse[P.off_lse + lseIndex(b, g, rho)] = rowM[r] + log(l); }
  }
}`,
  };
}

/** stats[2·n] = lse[n], stats[2·n + 1] = Σ_e dO·O for each row n of lse's [B, H, Tq]. */
const STATS: KernelSpec = {
  key: 'attention_stats',
  bindings: [f('dout'), f('out'), f('lse'), f('stats', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'Tq', type: 'u32' },
    { name: 'H', type: 'u32' },
    { name: 'D', type: 'u32' },
  ],
  source: `const WG = ${WG}u;
${STRIDE}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var n = strideStart(gid); n < P.n; n += strideStep(nwg)) {
    let i = n % P.Tq;
    let bh = n / P.Tq;
    let h = bh % P.H;
    let b = bh / P.H;
    let base = ((b * P.Tq + i) * P.H + h) * P.D;
    var acc = 0.0;
    for (var e = 0u; e < P.D; e++) { acc = fma(dout[P.off_dout + base + e], out[P.off_out + base + e], acc); }
    stats[P.off_stats + 2u * n] = lse[P.off_lse + n];
    stats[P.off_stats + 2u * n + 1u] = acc;
  }
}`,
};

/** WGSL fragment: row statistics (lse, Δ) for the tile at rho0 (run by t < BR). */
const ROW_STATS = `if (rho < rows) {
      let s = 2u * lseIndex(b, g, rho);
      rowLse[t] = stats[P.off_stats + s];
      rowDel[t] = stats[P.off_stats + s + 1u];
    }`;

/** dQ = scale · Σ_j dS·K with dS = P ∘ (dO·Vᵀ − Δ), P = exp(S − lse); one row block per workgroup. */
function dqSpec(dmax: number, tiles: Tiles, seg: boolean): KernelSpec {
  return {
    key: `attention_dq_d${dmax}_${tiles.br}x${tiles.bc}${seg ? '_seg' : ''}`,
    bindings: [
      f('dout'),
      f('q'),
      f('k'),
      f('v'),
      f('stats'),
      f('dq', true),
      ...(seg ? [segBinding] : []),
    ],
    params: DIM_PARAMS,
    source: `${header(dmax, tiles, WG / tiles.br)}
var<workgroup> qs: array<f32, ${tiles.br * rowStride(dmax)}>;
var<workgroup> dos: array<f32, ${tiles.br * rowStride(dmax)}>;
var<workgroup> kv: array<f32, ${tiles.bc * rowStride(dmax)}>;
var<workgroup> sc: array<f32, ${tiles.br * tiles.bc}>;
var<workgroup> dp: array<f32, ${tiles.br * tiles.bc}>;
var<workgroup> rowPos: array<i32, BR>;
var<workgroup> rowLse: array<f32, BR>;
var<workgroup> rowDel: array<f32, BR>;
${segShared(seg)}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let unit = unitIndex(wg, nwg);
  if (unit >= P.units) { return; }
  // The head dim and tile row stride are per dispatch (constants would be unrolled: slow to compile).
  let D = P.D;
  let DS = P.DS;
  let rows = P.Tq * P.G;
  let blocks = (rows + BR - 1u) / BR;
  let rho0 = (unit % blocks) * BR;
  let g = (unit / blocks) % P.Hkv;
  let b = unit / blocks / P.Hkv;
  let t = lid.x;
  ${loadRows('q', 'qs')}
  ${loadRows('dout', 'dos')}
  if (t < BR) {
    ${rowInfo(seg)}
    ${ROW_STATS}
  }
  let r = t / LN;
  let lane = t - r * LN;
  var acc_dq: array<f32, NE>;
  for (var x = 0u; x < NE; x++) { acc_dq[x] = 0.0; }
  let kEnd = P.Tk - P.Tq + (min(rho0 + BR, rows) - 1u) / P.G + 1u;
  workgroupBarrier();
  for (var j0 = keyStart(rho0); j0 < kEnd; j0 += BC) {
    ${loadKeys('v', 'kv', 'j0', 'kEnd')}
    ${segKeyLoad(seg, 'j0')}
    workgroupBarrier();
    for (var idx = t; idx < BR * BC; idx += WG) {
      let rr = idx / BC;
      let c = idx - rr * BC;
      var dpv = 0.0;
      if ${visible(seg, 'j0 + c', 'rr')} {
        ${dotRows('dos', 'rr', 'kv', 'c')}
        dpv = acc;
      }
      dp[idx] = dpv;
    }
    workgroupBarrier();
    ${loadKeys('k', 'kv', 'j0', 'kEnd')}
    workgroupBarrier();
    for (var idx = t; idx < BR * BC; idx += WG) {
      let rr = idx / BC;
      let c = idx - rr * BC;
      var ds = 0.0;
      if ${visible(seg, 'j0 + c', 'rr')} {
        ${dotRows('qs', 'rr', 'kv', 'c')}
        let sv = capScore(acc * P.scale);
        let p = exp(sv - rowLse[rr]);
        ds = p * (dp[idx] - rowDel[rr]) * capGrad(sv);
      }
      sc[idx] = ds;
    }
    workgroupBarrier();
    for (var c = 0u; c < P.bc; c++) {
      let ds = sc[r * BC + c];
      for (var x = 0u; x < NE; x++) { acc_dq[x] = fma(ds, kv[c * DS + min(lane + x * LN, D - 1u)], acc_dq[x]); }
    }
    workgroupBarrier();
  }
  let rho = rho0 + r;
  if (rho < rows) {
    let base = qBase(b, g, rho);
    for (var x = 0u; x < NE; x++) {
      let e = lane + x * LN;
      if (e < D) { dq[P.off_dq + base + e] = acc_dq[x] * P.scale; }
    }
  }
}`,
  };
}

/**
 * dV = Σ_rows P·dO and dK = scale · Σ_rows dS·Q for one block of BC keys of a (batch, kv head): the
 * workgroup walks, in order, every row (query, head of the group) that can see the block.
 */
function dkvSpec(dmax: number, tiles: Tiles, seg: boolean): KernelSpec {
  const lanes = WG / tiles.bc;
  return {
    key: `attention_dkv_d${dmax}_${tiles.br}x${tiles.bc}${seg ? '_seg' : ''}`,
    bindings: [
      f('dout'),
      f('q'),
      f('k'),
      f('v'),
      f('stats'),
      f('dk', true),
      f('dv', true),
      ...(seg ? [segBinding] : []),
    ],
    params: DIM_PARAMS,
    source: `${header(dmax, tiles, lanes)}
var<workgroup> ks: array<f32, ${tiles.bc * rowStride(dmax)}>;
var<workgroup> vs: array<f32, ${tiles.bc * rowStride(dmax)}>;
var<workgroup> qs: array<f32, ${tiles.br * rowStride(dmax)}>;
var<workgroup> dos: array<f32, ${tiles.br * rowStride(dmax)}>;
var<workgroup> pp: array<f32, ${tiles.br * tiles.bc}>;
var<workgroup> dss: array<f32, ${tiles.br * tiles.bc}>;
var<workgroup> rowPos: array<i32, BR>;
var<workgroup> rowLse: array<f32, BR>;
var<workgroup> rowDel: array<f32, BR>;
${segShared(seg)}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let unit = unitIndex(wg, nwg);
  if (unit >= P.units) { return; }
  // The head dim and tile row stride are per dispatch (constants would be unrolled: slow to compile).
  let D = P.D;
  let DS = P.DS;
  let rows = P.Tq * P.G;
  let blocks = (P.Tk + BC - 1u) / BC;
  let j0 = (unit % blocks) * BC;
  let g = (unit / blocks) % P.Hkv;
  let b = unit / blocks / P.Hkv;
  let t = lid.x;
  ${loadKeys('k', 'ks', 'j0', 'P.Tk')}
  ${loadKeys('v', 'vs', 'j0', 'P.Tk')}
  ${segKeyLoad(seg, 'j0')}
  let c = t / LN;
  let lane = t - c * LN;
  var acc_dk: array<f32, NE>;
  var acc_dv: array<f32, NE>;
  for (var x = 0u; x < NE; x++) { acc_dk[x] = 0.0; acc_dv[x] = 0.0; }
  // The first row that sees key j0: query i ≥ j0 − (Tk − Tq).
  let shift = P.Tk - P.Tq;
  var rowStart = 0u;
  if (j0 > shift) { rowStart = (j0 - shift) * P.G; }
  // With a window, the last row that sees the block: query position j0 + BC - 1 + window - 1.
  var rowEnd = rows;
  if (P.window > 0u) {
    let lastPos = j0 + BC - 1u + P.window - 1u;
    rowEnd = select(min(rows, (lastPos - shift + 1u) * P.G), 0u, lastPos < shift);
  }
  for (var rho0 = rowStart; rho0 < rowEnd; rho0 += BR) {
    ${loadRows('q', 'qs')}
    ${loadRows('dout', 'dos')}
    if (t < BR) {
      ${rowInfo(seg)}
      ${ROW_STATS}
    }
    workgroupBarrier();
    for (var idx = t; idx < BR * BC; idx += WG) {
      let rr = idx / BC;
      let c = idx - rr * BC;
      var p = 0.0;
      var ds = 0.0;
      if (j0 + c < P.Tk && ${visible(seg, 'j0 + c', 'rr')}) {
        var s = 0.0;
        var dpv = 0.0;
        for (var e = 0u; e < D; e++) {
          s = fma(qs[rr * DS + e], ks[c * DS + e], s);
          dpv = fma(dos[rr * DS + e], vs[c * DS + e], dpv);
        }
        let sv = capScore(s * P.scale);
        p = exp(sv - rowLse[rr]);
        ds = p * (dpv - rowDel[rr]) * capGrad(sv);
      }
      pp[idx] = p;
      dss[idx] = ds;
    }
    workgroupBarrier();
    for (var rr = 0u; rr < P.br; rr++) {
      let p = pp[rr * BC + c];
      let ds = dss[rr * BC + c];
      for (var x = 0u; x < NE; x++) {
        let e = min(lane + x * LN, D - 1u);
        acc_dv[x] = fma(p, dos[rr * DS + e], acc_dv[x]);
        acc_dk[x] = fma(ds, qs[rr * DS + e], acc_dk[x]);
      }
    }
    workgroupBarrier();
  }
  let j = j0 + c;
  if (j < P.Tk) {
    let base = kBase(b, g, j);
    for (var x = 0u; x < NE; x++) {
      let e = lane + x * LN;
      if (e < D) {
        dk[P.off_dk + base + e] = acc_dk[x] * P.scale;
        dv[P.off_dv + base + e] = acc_dv[x];
      }
    }
  }
}`,
  };
}

const specs = new Map<string, KernelSpec>();
function cached(key: string, make: () => KernelSpec): KernelSpec {
  let s = specs.get(key);
  if (!s) {
    s = make();
    specs.set(key, s);
  }
  return s;
}

interface Prepared {
  readonly d: AttentionDims;
  readonly seg: GpuSpan | null;
}

/** The shared shape rules, lse [B, H, Tq], i32 segment ids, and this backend's head-dim limit. */
function prepare(
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  lse: Tensor,
  options: AttentionOptions,
): Prepared {
  const d = attentionDims(checks, op, q, k, v, options);
  expectShape(op, 'lse', lse, [d.B, d.H, d.Tq]);
  if (d.D > MAX_HEAD_DIM)
    fail(op, `head dim ${d.D} is over the webgpu kernels' limit of ${MAX_HEAD_DIM}`);
  const seg = options.segmentIds ? i32(op, 'segmentIds', options.segmentIds) : null;
  return { d, seg };
}

function dimParams(d: AttentionDims, tiles: Tiles, units: number, scale: number): number[] {
  if (d.window !== null && d.window >= 2 ** 32)
    fail('attention', `window ${d.window} is not a u32`);
  return [
    units,
    d.Tq,
    d.Tk,
    d.H,
    d.Hkv,
    d.H / d.Hkv,
    scale,
    d.D,
    rowStride(d.D),
    tiles.br,
    tiles.bc,
    d.window ?? 0,
    d.softcap ?? 0,
  ];
}

export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  options: AttentionOptions,
): void {
  const op = 'attention';
  const { d, seg } = prepare(op, q, k, v, lse, options);
  expectShape(op, 'out', out, q.shape);
  for (const [name, t] of [
    ['q', q],
    ['k', k],
    ['v', v],
    ['lse', lse],
  ] as const)
    noAlias(op, `out and ${name}`, out, t);
  for (const [name, t] of [
    ['q', q],
    ['k', k],
    ['v', v],
  ] as const)
    noAlias(op, `lse and ${name}`, lse, t);
  const spans = [
    f32(op, 'q', q),
    f32(op, 'k', k),
    f32(op, 'v', v),
    f32(op, 'out', out),
    f32(op, 'lse', lse),
  ];
  if (q.size === 0 || d.Tk === 0) return;
  const ctx = ctxOf(out);
  const dmax = headDimClass(d.D);
  const tiles = chooseTiles(ctx, 'forward', dmax);
  const spec = cached(`fwd|${dmax}|${tiles.br}|${tiles.bc}|${seg !== null}`, () =>
    forwardSpec(dmax, tiles, seg !== null),
  );
  const units = d.B * d.Hkv * Math.ceil((d.Tq * (d.H / d.Hkv)) / tiles.br);
  ctx.dispatch(
    spec,
    seg ? [...spans, seg] : spans,
    dimParams(d, tiles, units, options.scale),
    unitGroups(ctx, units),
  );
}

/** Gradients of attention; dq, dk, dv are overwritten. */
export function attentionBackward(
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  options: AttentionOptions,
): void {
  const op = 'attentionBackward';
  const { d, seg } = prepare(op, q, k, v, lse, options);
  attentionBackwardArgs(args, dout, q, k, v, out, lse, dq, dk, dv);
  const s = {
    dout: f32(op, 'dout', dout),
    q: f32(op, 'q', q),
    k: f32(op, 'k', k),
    v: f32(op, 'v', v),
    out: f32(op, 'out', out),
    lse: f32(op, 'lse', lse),
    dq: f32(op, 'dq', dq),
    dk: f32(op, 'dk', dk),
    dv: f32(op, 'dv', dv),
  };
  if (q.size === 0 || d.Tk === 0) return;
  const ctx = ctxOf(dq);
  const G = d.H / d.Hkv;
  const rowCount = d.B * d.H * d.Tq;
  const stats = ctx.scratch(rowCount * 2 * 4);
  const withSeg = (spans: GpuSpan[]) => (seg ? [...spans, seg] : spans);
  ctx.dispatch(
    STATS,
    [s.dout, s.out, s.lse, stats],
    [rowCount, d.Tq, d.H, d.D],
    [strideGroups(ctx, rowCount, WG)],
  );
  const dmax = headDimClass(d.D);
  const dqTiles = chooseTiles(ctx, 'dq', dmax);
  const dqUnits = d.B * d.Hkv * Math.ceil((d.Tq * G) / dqTiles.br);
  ctx.dispatch(
    cached(`dq|${dmax}|${dqTiles.br}|${dqTiles.bc}|${seg !== null}`, () =>
      dqSpec(dmax, dqTiles, seg !== null),
    ),
    withSeg([s.dout, s.q, s.k, s.v, stats, s.dq]),
    dimParams(d, dqTiles, dqUnits, options.scale),
    unitGroups(ctx, dqUnits),
  );
  const kvTiles = chooseTiles(ctx, 'dkv', dmax);
  const kvUnits = d.B * d.Hkv * Math.ceil(d.Tk / kvTiles.bc);
  ctx.dispatch(
    cached(`dkv|${dmax}|${kvTiles.br}|${kvTiles.bc}|${seg !== null}`, () =>
      dkvSpec(dmax, kvTiles, seg !== null),
    ),
    withSeg([s.dout, s.q, s.k, s.v, stats, s.dk, s.dv]),
    dimParams(d, kvTiles, kvUnits, options.scale),
    unitGroups(ctx, kvUnits),
  );
}
