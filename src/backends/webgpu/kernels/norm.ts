/**
 * RMSNorm on WebGPU. Forward and the input gradient run one workgroup per row (a tree reduction of
 * the row's sum of squares or dot product, then an elementwise pass). The weight gradient sums over
 * all rows, deterministically and without float atomics: row chunks write per-column partials to
 * ctx.scratch, then one pass adds each column's partials in chunk order onto dweight.
 */
import type { Tensor } from '../../../tensor/tensor.js';
import type { KernelSpec } from '../context.js';
import { rmsnormArgs, rmsnormBackwardArgs } from '../../shape-checks.js';
import { args, ctxOf, f32, fail } from '../checks.js';
import { UNIT_INDEX, unitGroups } from '../grid.js';

const WG = 256;
const b = (name: string, write = false) => ({ name, type: 'f32' as const, write });

/** WGSL: tree-sum of `red` (one value per invocation) into red[0]; every invocation must call it. */
const TREE_SUM = `
var<workgroup> red: array<f32, WG>;
fn treeSum(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var w = WG / 2u; w > 0u; w = w / 2u) {
    if (t < w) { red[t] += red[t + w]; }
    workgroupBarrier();
  }
  return red[0];
}`;

const RMSNORM: KernelSpec = {
  key: 'rmsnorm',
  bindings: [b('x'), b('weight'), b('out', true), b('rstd', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'd', type: 'u32' },
    { name: 'eps', type: 'f32' },
  ],
  source: `const WG = ${WG}u;
${UNIT_INDEX}
${TREE_SUM}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = unitIndex(wg, nwg);
  if (row >= P.n) { return; }
  let t = lid.x;
  let base = row * P.d;
  var s = 0.0;
  for (var j = t; j < P.d; j += WG) {
    let v = x[P.off_x + base + j];
    s = fma(v, v, s);
  }
  // Every invocation has read its elements of x before any writes (out may be x).
  let r = 1.0 / sqrt(treeSum(t, s) / f32(P.d) + P.eps);
  for (var j = t; j < P.d; j += WG) {
    out[P.off_out + base + j] = x[P.off_x + base + j] * r * weight[P.off_weight + j];
  }
  if (t == 0u) { rstd[P.off_rstd + row] = r; }
}`,
};

/** dx = r·w·g − (r³/d)·x·Σ w·g·x per row (dx may be dout: each invocation reads its own elements first). */
const RMSNORM_DX: KernelSpec = {
  key: 'rmsnorm_dx',
  bindings: [b('dout'), b('x'), b('weight'), b('rstd'), b('dx', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'd', type: 'u32' },
  ],
  source: `const WG = ${WG}u;
${UNIT_INDEX}
${TREE_SUM}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = unitIndex(wg, nwg);
  if (row >= P.n) { return; }
  let t = lid.x;
  let base = row * P.d;
  var s = 0.0;
  for (var j = t; j < P.d; j += WG) {
    s = fma(weight[P.off_weight + j] * dout[P.off_dout + base + j], x[P.off_x + base + j], s);
  }
  let dot = treeSum(t, s);
  let r = rstd[P.off_rstd + row];
  let c = r * r * r * dot / f32(P.d);
  for (var j = t; j < P.d; j += WG) {
    let g = dout[P.off_dout + base + j];
    dx[P.off_dx + base + j] = r * weight[P.off_weight + j] * g - c * x[P.off_x + base + j];
  }
}`,
};

/** partial[c, j] = Σ over rows of chunk c of g·x·r (rows in order); grid [column groups, chunks]. */
const RMSNORM_DW_PARTIAL: KernelSpec = {
  key: 'rmsnorm_dw_partial',
  bindings: [b('dout'), b('x'), b('rstd'), b('partial', true)],
  params: [
    { name: 'n', type: 'u32' },
    { name: 'd', type: 'u32' },
    { name: 'chunk', type: 'u32' },
  ],
  source: `const WG = ${WG}u;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wg: vec3u) {
  let j = wg.x * WG + lid.x;
  if (j >= P.d) { return; }
  let first = wg.y * P.chunk;
  let last = min(first + P.chunk, P.n);
  var s = 0.0;
  for (var row = first; row < last; row++) {
    let i = row * P.d + j;
    s = fma(dout[P.off_dout + i] * x[P.off_x + i], rstd[P.off_rstd + row], s);
  }
  partial[P.off_partial + wg.y * P.d + j] = s;
}`,
};

const RMSNORM_DW_FINAL: KernelSpec = {
  key: 'rmsnorm_dw_final',
  bindings: [b('partial'), b('dweight', true)],
  params: [
    { name: 'd', type: 'u32' },
    { name: 'chunks', type: 'u32' },
  ],
  source: `const WG = ${WG}u;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= P.d) { return; }
  var s = 0.0;
  for (var c = 0u; c < P.chunks; c++) { s += partial[P.off_partial + c * P.d + j]; }
  dweight[P.off_dweight + j] += s;
}`,
};

export function rmsnorm(x: Tensor, weight: Tensor, eps: number, out: Tensor, rstd: Tensor): void {
  const op = 'rmsnorm';
  const [n, d] = rmsnormArgs(args, x, weight, eps, out, rstd);
  const spans = [
    f32(op, 'x', x),
    f32(op, 'weight', weight),
    f32(op, 'out', out),
    f32(op, 'rstd', rstd),
  ];
  if (n === 0) return;
  const ctx = ctxOf(out);
  ctx.dispatch(RMSNORM, spans, [n, d, eps], unitGroups(ctx, n));
}

/** Row chunks for the weight gradient: enough partials to fill a GPU, few enough to sum quickly. */
const MAX_CHUNKS = 256;
const MIN_ROWS_PER_CHUNK = 16;

export function rmsnormBackward(
  dout: Tensor,
  x: Tensor,
  weight: Tensor,
  rstd: Tensor,
  dx: Tensor,
  dweight: Tensor | null,
): void {
  const op = 'rmsnormBackward';
  const [n, d] = rmsnormBackwardArgs(args, dout, x, weight, rstd, dx, dweight);
  const g = f32(op, 'dout', dout);
  const xs = f32(op, 'x', x);
  const w = f32(op, 'weight', weight);
  const r = f32(op, 'rstd', rstd);
  const dxs = f32(op, 'dx', dx);
  const dws = dweight ? f32(op, 'dweight', dweight) : null;
  if (n === 0) return;
  const ctx = ctxOf(dx);
  if (dws) {
    // Before dx: dx may overwrite dout, which the weight gradient reads.
    const chunks = Math.min(MAX_CHUNKS, Math.ceil(n / MIN_ROWS_PER_CHUNK));
    const chunk = Math.ceil(n / chunks);
    const used = Math.ceil(n / chunk);
    const partial = ctx.scratch(used * d * 4);
    const columnGroups = Math.ceil(d / WG);
    if (columnGroups > ctx.maxWorkgroups) fail(op, `d = ${d} is too wide for this adapter's grid`);
    ctx.dispatch(RMSNORM_DW_PARTIAL, [g, xs, r, partial], [n, d, chunk], [columnGroups, used]);
    ctx.dispatch(RMSNORM_DW_FINAL, [partial, dws], [d, used], [columnGroups]);
  }
  ctx.dispatch(RMSNORM_DX, [g, xs, w, r, dxs], [n, d], unitGroups(ctx, n));
}
