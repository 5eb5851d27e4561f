/**
 * Rotary embedding on WebGPU: one invocation per rotated pair (grid-stride), which reads both
 * elements before writing them, so out may be x; with tables narrower than D/2 (partial rotary)
 * one more per passed-through element, which copies it. Positions outside the cos/sin tables raise a fault
 * (thrown at the next read) and leave their pairs unwritten.
 */
import type { RopeLayout } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { FAULT_WGSL, type KernelSpec } from '../context.js';
import { ropeArgs } from '../../shape-checks.js';
import { args, ctxOf, f32, fail, i32 } from '../checks.js';
import { strideGroups } from '../grid.js';

const WG = 256;

const ROPE: KernelSpec = {
  key: 'rope',
  bindings: [
    { name: 'x', type: 'f32', write: false },
    { name: 'positions', type: 'i32', write: false },
    { name: 'cosT', type: 'f32', write: false },
    { name: 'sinT', type: 'f32', write: false },
    { name: 'out', type: 'f32', write: true },
    { name: 'fault', type: 'atomic<u32>', write: true },
  ],
  params: [
    { name: 'pairs', type: 'u32' },
    { name: 'heads', type: 'u32' },
    { name: 'half', type: 'u32' },
    { name: 'dim', type: 'u32' },
    { name: 'maxPos', type: 'i32' },
    { name: 'interleaved', type: 'u32' },
    { name: 'sign', type: 'f32' },
    { name: 'code', type: 'u32' },
  ],
  source: `const WG = ${WG}u;
${FAULT_WGSL}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  // Per head: half pairs, then dim - 2·half passed-through elements.
  let perHead = P.dim - P.half;
  let perRow = P.heads * perHead;
  for (var i = gid.x; i < P.pairs; i += step) {
    let bt = i / perRow;
    let rem = i - bt * perRow;
    let h = rem / perHead;
    let p = rem - h * perHead;
    let base = (bt * P.heads + h) * P.dim;
    if (p >= P.half) {
      let j = base + P.half + p;
      out[P.off_out + j] = x[P.off_x + j];
      continue;
    }
    let pos = positions[P.off_positions + bt];
    if (pos < 0 || pos >= P.maxPos) {
      raise(P.code, pos, i32(bt));
      continue;
    }
    let c = cosT[P.off_cosT + u32(pos) * P.half + p];
    let s = P.sign * sinT[P.off_sinT + u32(pos) * P.half + p];
    let i0 = select(base + p, base + 2u * p, P.interleaved != 0u);
    let i1 = select(base + p + P.half, base + 2u * p + 1u, P.interleaved != 0u);
    let a = x[P.off_x + i0];
    let bb = x[P.off_x + i1];
    out[P.off_out + i0] = a * c - bb * s;
    out[P.off_out + i1] = bb * c + a * s;
  }
}`,
};

/** x [B, T, H, D] rotated at positions (i32 [B·T]); positions outside the tables raise a fault. */
export function rope(
  x: Tensor,
  positions: Tensor,
  cos: Tensor,
  sin: Tensor,
  layout: RopeLayout,
  inverse: boolean,
  out: Tensor,
): void {
  const op = 'rope';
  const { H, D, maxPos, half } = ropeArgs(args, x, positions, cos, sin, layout, out);
  const spans = [
    f32(op, 'x', x),
    i32(op, 'positions', positions),
    f32(op, 'cos', cos),
    f32(op, 'sin', sin),
    f32(op, 'out', out),
  ];
  // Work items: the rotated pairs and the passed-through elements of every head.
  const pairs = (x.size / D) * (D - half);
  if (pairs === 0) return;
  if (maxPos > 2 ** 31 - 1) fail(op, `cos/sin tables of ${maxPos} positions are too long`);
  const ctx = ctxOf(out);
  const code = ctx.faultCode(
    `rope: position {a} at index {b} is outside the cos/sin tables [0, ${maxPos})`,
  );
  ctx.dispatch(
    ROPE,
    [...spans, ctx.faultSpan()],
    [pairs, H, half, D, maxPos, layout === 'interleaved' ? 1 : 0, inverse ? -1 : 1, code],
    [strideGroups(ctx, pairs, WG)],
  );
}
