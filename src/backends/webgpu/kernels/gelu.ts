/**
 * tanh-approximation GELU and GeGLU (Gemma's gated MLP) on WebGPU: grid-stride loops like the
 * other elementwise kernels. gelu_tanh(x) = x·σ(2z), z = √(2/π)·(x + 0.044715·x³) (see
 * src/backends/ref/gelu.ts), with x clamped to ±10 inside σ and the slope, where σ(2z) is 1 or
 * below 2e-38 in f32 (and the value 0 below -10): that keeps exp's argument in range (WGSL leaves an overflowing exp
 * undefined, and WGSL's tanh is not used for the same reason). Each element is read before it is
 * written, so outputs may be their inputs (the context merges aliased bindings).
 */
import type { Tensor } from '../../../tensor/tensor.js';
import { elementwiseArgs } from '../../shape-checks.js';
import type { KernelSpec } from '../context.js';
import { args, ctxOf, f32 } from '../checks.js';
import { strideGroups } from '../grid.js';
import type { GpuSpan } from '../context.js';

const WG = 256;

const GELU_FNS = `
const WG = ${WG}u;
const SQRT_2_OVER_PI = 0.7978845608028654;
const CUBIC = 0.044715;
fn gateSigmoid(xc: f32) -> f32 {
  let z = SQRT_2_OVER_PI * xc * (1.0 + CUBIC * xc * xc);
  return 1.0 / (1.0 + exp(-2.0 * z));
}
// Below -10, σ < 2e-38 still gives x·σ up to 5 near -FLT_MAX: the exact value there is 0 to f32.
fn gelu(x: f32) -> f32 { return x * select(gateSigmoid(clamp(x, -10.0, 10.0)), 0.0, x < -10.0); }
fn geluSlope(x: f32) -> f32 {
  let xc = clamp(x, -10.0, 10.0);
  let s = gateSigmoid(xc);
  let dz = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * xc * xc);
  return s + xc * 2.0 * s * (1.0 - s) * dz;
}`;

const loop = (body: string): string => `${GELU_FNS}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let step = nwg.x * WG;
  for (var i = gid.x; i < P.n; i += step) {
    ${body}
  }
}`;

const b = (name: string, write = false) => ({ name, type: 'f32' as const, write });
const N = [{ name: 'n', type: 'u32' as const }];

const GELU: KernelSpec = {
  key: 'gelu_tanh',
  bindings: [b('x'), b('out', true)],
  params: N,
  source: loop('out[P.off_out + i] = gelu(x[P.off_x + i]);'),
};

const GELU_BACKWARD: KernelSpec = {
  key: 'gelu_tanh_backward',
  bindings: [b('dout'), b('x'), b('dx', true)],
  params: N,
  source: loop(`let d = dout[P.off_dout + i];
    let s = geluSlope(x[P.off_x + i]);
    dx[P.off_dx + i] = d * s;`),
};

const GEGLU: KernelSpec = {
  key: 'geglu',
  bindings: [b('gate'), b('up'), b('out', true)],
  params: N,
  source: loop(`let g = gelu(gate[P.off_gate + i]);
    let u = up[P.off_up + i];
    out[P.off_out + i] = g * u;`),
};

const GEGLU_BACKWARD: KernelSpec = {
  key: 'geglu_backward',
  bindings: [b('dout'), b('gate'), b('up'), b('dgate', true), b('dup', true)],
  params: N,
  source: loop(`let g = gate[P.off_gate + i];
    let u = up[P.off_up + i];
    let d = dout[P.off_dout + i];
    let value = gelu(g);
    let slope = geluSlope(g);
    dgate[P.off_dgate + i] = d * u * slope;
    dup[P.off_dup + i] = d * value;`),
};

function run(spec: KernelSpec, spans: GpuSpan[], out: Tensor, n: number): void {
  if (n === 0) return;
  const ctx = ctxOf(out);
  ctx.dispatch(spec, spans, [n], [strideGroups(ctx, n, WG)]);
}

export function geluTanh(x: Tensor, out: Tensor): void {
  const spans = [f32('geluTanh', 'x', x), f32('geluTanh', 'out', out)];
  run(GELU, spans, out, elementwiseArgs(args, 'geluTanh', [['x', x]], [['out', out]]));
}

export function geluTanhBackward(dout: Tensor, x: Tensor, dx: Tensor): void {
  const op = 'geluTanhBackward';
  const spans = [f32(op, 'dout', dout), f32(op, 'x', x), f32(op, 'dx', dx)];
  const n = elementwiseArgs(
    args,
    op,
    [
      ['dout', dout],
      ['x', x],
    ],
    [['dx', dx]],
  );
  run(GELU_BACKWARD, spans, dx, n);
}

export function geglu(gate: Tensor, up: Tensor, out: Tensor): void {
  const spans = [f32('geglu', 'gate', gate), f32('geglu', 'up', up), f32('geglu', 'out', out)];
  const n = elementwiseArgs(
    args,
    'geglu',
    [
      ['gate', gate],
      ['up', up],
    ],
    [['out', out]],
  );
  run(GEGLU, spans, out, n);
}

export function gegluBackward(
  dout: Tensor,
  gate: Tensor,
  up: Tensor,
  dgate: Tensor,
  dup: Tensor,
): void {
  const op = 'gegluBackward';
  const spans = [
    f32(op, 'dout', dout),
    f32(op, 'gate', gate),
    f32(op, 'up', up),
    f32(op, 'dgate', dgate),
    f32(op, 'dup', dup),
  ];
  const n = elementwiseArgs(
    args,
    op,
    [
      ['dout', dout],
      ['gate', gate],
      ['up', up],
    ],
    [
      ['dgate', dgate],
      ['dup', dup],
    ],
  );
  run(GEGLU_BACKWARD, spans, dgate, n);
}
