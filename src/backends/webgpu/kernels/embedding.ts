/**
 * Embedding lookup and its gradient on the GPU. Tables larger than one binding (a 32000×4096 f32
 * table is 500 MiB) run in windows of whole rows, one dispatch each. Ids out of range raise a fault
 * (kernels cannot throw; the next read does).
 *
 * The backward pass is deterministic without float atomics: invocation (column c, vocabulary slice
 * p) walks the ids in order and adds row i of dout into its own rows of dtable, so every element of
 * dtable receives its contributions in position order — the order ref and cpu use.
 */
import type { Tensor } from '../../../tensor/tensor.js';
import { FAULT_WGSL, type GpuContext, type KernelSpec } from '../context.js';
import { ctxOf, expectRank, expectShape, f32, i32, noAlias } from '../checks.js';
import { strideGroups } from '../grid.js';
import { subSpan, windowLimits } from './matmul.js';

const WG = 256;
const u = (name: string) => ({ name, type: 'u32' as const });

const EMBEDDING: KernelSpec = {
  key: 'embedding',
  bindings: [
    { name: 'ids', type: 'i32', write: false },
    { name: 'table', type: 'f32', write: false },
    { name: 'out', type: 'f32', write: true },
    { name: 'fault', type: 'atomic<u32>', write: true },
  ],
  params: [u('n'), u('d'), u('vocab'), u('r0'), u('r1'), u('code')],
  source: `const WG = ${WG}u;
${FAULT_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let total = P.n * P.d;
  for (var e = gid.x; e < total; e += nwg.x * WG) {
    let i = e / P.d;
    let c = e % P.d;
    let id = ids[P.off_ids + i];
    if (id < 0 || u32(id) >= P.vocab) {
      if (c == 0u) { raise(P.code, id, i32(i)); }
      continue;
    }
    let r = u32(id);
    if (r >= P.r0 && r < P.r1) { out[P.off_out + e] = table[P.off_table + (r - P.r0) * P.d + c]; }
  }
}`,
};

/** Invocation (c, p): column c of the rows of slice p ([r0 + p·slice, …)), ids walked in order. */
const EMBEDDING_BACKWARD: KernelSpec = {
  key: 'embedding_backward',
  bindings: [
    { name: 'ids', type: 'i32', write: false },
    { name: 'dout', type: 'f32', write: false },
    { name: 'dtable', type: 'f32', write: true },
    { name: 'fault', type: 'atomic<u32>', write: true },
  ],
  params: [u('n'), u('d'), u('vocab'), u('r0'), u('r1'), u('slice'), u('code')],
  source: `const WG = ${WG}u;
${FAULT_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  let lo = P.r0 + gid.y * P.slice;
  let hi = min(P.r1, lo + P.slice);
  if (c >= P.d) { return; }
  let reporter = c == 0u && gid.y == 0u;
  for (var i = 0u; i < P.n; i++) {
    let id = ids[P.off_ids + i];
    if (id < 0 || u32(id) >= P.vocab) {
      if (reporter) { raise(P.code, id, i32(i)); }
      continue;
    }
    let r = u32(id);
    if (r >= lo && r < hi) {
      let at = P.off_dtable + (r - P.r0) * P.d + c;
      dtable[at] = dtable[at] + dout[P.off_dout + i * P.d + c];
    }
  }
}`,
};

/** Rows of a [vocab, d] f32 table per window so that a window fits one binding. */
function rowsPerWindow(ctx: GpuContext, vocab: number, d: number): number {
  const cap = windowLimits(ctx).maxBinding - ctx.bindAlign;
  return Math.max(1, Math.min(vocab, Math.floor(cap / (4 * Math.max(1, d)))));
}

function idFault(ctx: GpuContext, op: string, vocab: number): number {
  return ctx.faultCode(`${op}: id {a} at position {b} is outside [0, ${vocab})`);
}

/** out[n, d] = table[ids[n], :]; ids out of range fault (thrown at the next read). */
export function embedding(ids: Tensor, table: Tensor, out: Tensor): void {
  const op = 'embedding';
  const is = i32(op, 'ids', ids);
  const ts = f32(op, 'table', table);
  const os = f32(op, 'out', out);
  expectRank(op, 'table', table, 2);
  const [vocab, d] = table.shape as [number, number];
  expectShape(op, 'out', out, [ids.size, d]);
  noAlias(op, 'out and table', out, table);
  const total = ids.size * d;
  if (total === 0) return;
  const ctx = ctxOf(out);
  const code = idFault(ctx, op, vocab);
  const step = rowsPerWindow(ctx, vocab, d);
  for (let r0 = 0; r0 < Math.max(vocab, 1); r0 += step) {
    const r1 = Math.min(vocab, r0 + step);
    ctx.dispatch(
      EMBEDDING,
      [is, subSpan(ts, r0 * d, (r1 - r0) * d), os, ctx.faultSpan()],
      [ids.size, d, vocab, r0, r1, code],
      [strideGroups(ctx, total, WG)],
    );
  }
}

/** dtable[ids[i], :] += dout[i, :], deterministically (contributions added in position order). */
export function embeddingBackward(ids: Tensor, dout: Tensor, dtable: Tensor): void {
  const op = 'embeddingBackward';
  const is = i32(op, 'ids', ids);
  const ds = f32(op, 'dout', dout);
  const ts = f32(op, 'dtable', dtable);
  expectRank(op, 'dtable', dtable, 2);
  const [vocab, d] = dtable.shape as [number, number];
  expectShape(op, 'dout', dout, [ids.size, d]);
  noAlias(op, 'dtable and dout', dtable, dout);
  if (ids.size === 0 || d === 0) return;
  const ctx = ctxOf(dtable);
  const code = idFault(ctx, op, vocab);
  const step = rowsPerWindow(ctx, vocab, d);
  const columnGroups = Math.ceil(d / WG);
  for (let r0 = 0; r0 < Math.max(vocab, 1); r0 += step) {
    const r1 = Math.min(vocab, r0 + step);
    // Enough vocabulary slices for ~64K invocations: d alone (4096) would leave a big GPU idle.
    const slices = Math.max(
      1,
      Math.min(r1 - r0, Math.ceil(65536 / (columnGroups * WG)), ctx.maxWorkgroups),
    );
    const slice = Math.ceil(Math.max(1, r1 - r0) / slices);
    ctx.dispatch(
      EMBEDDING_BACKWARD,
      [is, ds, subSpan(ts, r0 * d, (r1 - r0) * d), ctx.faultSpan()],
      [ids.size, d, vocab, r0, r1, slice, code],
      [columnGroups, Math.ceil(Math.max(1, r1 - r0) / slice)],
    );
  }
}
