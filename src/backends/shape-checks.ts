/**
 * Shape validation every backend applies the same way: the contract is the Backend interface, so
 * its checks live once. Each backend binds them to its own error prefix (`cpu.op: …`, `ref.op: …`).
 */
import type {
  AdamWOptions,
  AttentionOptions,
  CrossEntropyOptions,
  Packed4bitWeight,
} from '../tensor/backend.js';
import { shapeString } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { GGML_QUANT_TYPES, type GgmlWeight } from '../quant/ggml-blocks.js';

export interface ShapeChecks {
  fail(op: string, message: string): never;
  expectShape(op: string, name: string, t: Tensor, shape: readonly number[]): void;
  expectSize(op: string, name: string, t: Tensor, size: number): void;
  expectRank(op: string, name: string, t: Tensor, rank: number): void;
}

export function shapeChecks(backend: string): ShapeChecks {
  const fail = (op: string, message: string): never => {
    throw new Error(`${backend}.${op}: ${message}`);
  };
  return {
    fail,
    expectShape(op, name, t, shape) {
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        fail(op, `${name} has shape ${shapeString(t.shape)}, expected ${shapeString(shape)}`);
      }
    },
    expectSize(op, name, t, size) {
      if (t.size !== size) fail(op, `${name} has ${t.size} elements, expected ${size}`);
    },
    expectRank(op, name, t, rank) {
      if (t.rank !== rank)
        fail(op, `${name} must have rank ${rank}, got shape ${shapeString(t.shape)}`);
    },
  };
}

/** Attention sizes: q [B, Tq, H, D], k/v [B, Tk, Hkv, D]. */
export interface AttentionDims {
  B: number;
  Tq: number;
  Tk: number;
  H: number;
  Hkv: number;
  D: number;
  /** Sliding window in keys, or null for full causal attention. */
  window: number | null;
  /** Attention logit soft-cap, or null. */
  softcap: number | null;
}

/** A soft-cap option: null/undefined for none, else a positive finite number. */
export function softcapOption(
  c: Pick<ShapeChecks, 'fail'>,
  op: string,
  name: string,
  cap: number | null | undefined,
): number | null {
  if (cap === null || cap === undefined) return null;
  if (typeof cap !== 'number' || !Number.isFinite(cap) || cap <= 0)
    c.fail(op, `${name} must be a positive finite number, got ${String(cap)}`);
  return cap;
}

/**
 * The shape rules of Backend.attention / attentionBackward: matching batch and head dim, Tk ≥ Tq,
 * query heads a multiple of kv heads, a finite scale, segment ids [B, Tk] only when Tq == Tk, a
 * positive integer window and a positive finite soft-cap when given.
 * (The segment ids' dtype is checked by the caller, which reads them.)
 */
export function attentionDims(
  c: ShapeChecks,
  op: string,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions,
): AttentionDims {
  c.expectRank(op, 'q', q, 4);
  c.expectRank(op, 'k', k, 4);
  const [B, Tq, H, D] = q.shape as [number, number, number, number];
  const [Bk, Tk, Hkv, Dk] = k.shape as [number, number, number, number];
  if (Bk !== B || Dk !== D)
    c.fail(op, `k [${k.shape.join(', ')}] does not match q [${q.shape.join(', ')}]`);
  c.expectShape(op, 'v', v, k.shape);
  if (D === 0) c.fail(op, 'head dim must be positive');
  if (Tk < Tq) c.fail(op, `Tk (${Tk}) must be ≥ Tq (${Tq})`);
  if (Hkv === 0 || H % Hkv !== 0)
    c.fail(op, `query heads (${H}) must be a multiple of kv heads (${Hkv})`);
  if (!Number.isFinite(options.scale))
    c.fail(op, `scale must be a finite number, got ${options.scale}`);
  if (options.segmentIds) {
    if (Tq !== Tk) c.fail(op, `segment ids need Tq == Tk (got ${Tq} and ${Tk})`);
    c.expectShape(op, 'segmentIds', options.segmentIds, [B, Tk]);
  }
  const w = options.window;
  if (w !== null && w !== undefined && !(Number.isSafeInteger(w) && w > 0))
    c.fail(op, `window must be a positive integer, got ${String(w)}`);
  const softcap = softcapOption(c, op, 'softcap', options.softcap);
  return { B, Tq, Tk, H, Hkv, D, window: w ?? null, softcap };
}

/** Matmul sizes: out[..., M, N] = op(a)[..., M, K] · op(b)[..., K, N]; b is 2-D (shared) or batched like a. */
export interface MatmulDims {
  M: number;
  K: number;
  N: number;
  /** Product of a's batch dims (1 for 2-D). */
  batches: number;
  bBatched: boolean;
}

/** The shape rules of Backend.matmul, with messages that show every operand's shape. */
export function matmulDims(
  c: ShapeChecks,
  op: string,
  a: Tensor,
  b: Tensor,
  out: Tensor,
  transA: boolean,
  transB: boolean,
): MatmulDims {
  if (a.rank < 2 || b.rank < 2 || out.rank < 2) c.fail(op, 'a, b and out need rank ≥ 2');
  const [a0, a1] = a.shape.slice(-2) as [number, number];
  const [b0, b1] = b.shape.slice(-2) as [number, number];
  const M = transA ? a1 : a0;
  const K = transA ? a0 : a1;
  const Kb = transB ? b1 : b0;
  const N = transB ? b0 : b1;
  const batchShape = a.shape.slice(0, -2);
  const expectedOut = [...batchShape, M, N];
  const shapes = `a ${shapeString(a.shape)}${transA ? 'ᵀ' : ''}, b ${shapeString(b.shape)}${transB ? 'ᵀ' : ''}, out ${shapeString(out.shape)}`;
  if (K !== Kb) c.fail(op, `inner dimensions differ: ${shapes}`);
  if (out.rank !== expectedOut.length || out.shape.some((d, i) => d !== expectedOut[i])) {
    c.fail(op, `out must be ${shapeString(expectedOut)}: ${shapes}`);
  }
  const bBatched = b.rank > 2;
  if (bBatched) {
    const bBatch = b.shape.slice(0, -2);
    if (bBatch.length !== batchShape.length || bBatch.some((d, i) => d !== batchShape[i])) {
      c.fail(op, `b must be 2-D or have a's batch dims: ${shapes}`);
    }
  }
  return { M, K, N, batches: batchShape.reduce((p, d) => p * d, 1), bBatched };
}

/** A checked Packed4bitWeight's sizes (nested: the double quantization's, or null). */
export interface Packed4bitDims {
  readonly rows: number;
  readonly cols: number;
  readonly blocksize: number;
  readonly nblocks: number;
  readonly nested: { readonly blocksize: number; readonly offset: number } | null;
}

/**
 * The size rules of a Packed4bitWeight: integer shape and block sizes, and every array as long as
 * the shape needs (packed ceil(n/2), code 16, absmax one per block, nested absmax one per nested
 * block, nested code 256). Dtypes are the caller's to check (what a backend accepts differs).
 */
export function packed4bitDims(c: ShapeChecks, op: string, w: Packed4bitWeight): Packed4bitDims {
  const { rows, cols, blocksize } = w;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0)
    c.fail(op, `invalid weight shape [${rows}, ${cols}]`);
  if (!Number.isInteger(blocksize) || blocksize <= 0) c.fail(op, `invalid blocksize ${blocksize}`);
  const n = rows * cols;
  const nblocks = Math.ceil(n / blocksize);
  c.expectSize(op, 'w.packed', w.packed, Math.ceil(n / 2));
  c.expectSize(op, 'w.code', w.code, 16);
  c.expectSize(op, 'w.absmax', w.absmax, nblocks);
  if (!w.nested) return { rows, cols, blocksize, nblocks, nested: null };
  const { blocksize: nb, offset } = w.nested;
  if (!Number.isInteger(nb) || nb <= 0) c.fail(op, `invalid nested blocksize ${nb}`);
  c.expectSize(op, 'w.nested.absmax', w.nested.absmax, Math.ceil(nblocks / nb));
  c.expectSize(op, 'w.nested.code', w.nested.code, 256);
  if (!Number.isFinite(offset)) c.fail(op, `nested offset must be finite, got ${offset}`);
  return { rows, cols, blocksize, nblocks, nested: { blocksize: nb, offset } };
}

/** Checks a GgmlWeight: a known type, whole blocks per row, and the block bytes' size. */
export function ggmlDims(
  c: ShapeChecks,
  op: string,
  w: GgmlWeight,
): { rows: number; cols: number } {
  const g = (GGML_QUANT_TYPES as Record<string, (typeof GGML_QUANT_TYPES)['q4_0'] | undefined>)[
    w.type
  ];
  if (!g) c.fail(op, `unknown GGUF block type '${w.type}'`);
  const { rows, cols } = w;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols <= 0)
    c.fail(op, `invalid weight shape [${rows}, ${cols}]`);
  if (cols % g.blockElems !== 0)
    c.fail(op, `${g.name} rows of ${cols} values are not whole ${g.blockElems}-value blocks`);
  c.expectSize(op, 'w.blocks', w.blocks, rows * (cols / g.blockElems) * g.blockBytes);
  return { rows, cols };
}

/** The rows n of a matrix t that must be [n, cols] (the activations of the 4-bit matmuls). */
export function matrixRows(
  c: ShapeChecks,
  op: string,
  name: string,
  t: Tensor,
  cols: number,
): number {
  if (t.rank !== 2 || t.shape[1] !== cols)
    c.fail(op, `${name} ${shapeString(t.shape)} must be [n, ${cols}]`);
  return t.shape[0]!;
}

/** Shape checks plus the backend's own aliasing checks (they depend on where storage lives). */
export interface ArgChecks extends ShapeChecks {
  /** Two tensors must not share memory. */
  noAlias(op: string, names: string, a: Tensor, b: Tensor): void;
  /** Two tensors are the same elements or disjoint (a partial overlap would race). */
  sameOrDisjoint(op: string, names: string, a: Tensor, b: Tensor): void;
}

/** Rows of x [n, d] (any rank: the last dimension is d). */
function rowsOf(c: ShapeChecks, op: string, x: Tensor): [number, number] {
  if (x.rank < 1) c.fail(op, 'x must have at least one dimension');
  const d = x.shape[x.rank - 1]!;
  return [d === 0 ? 0 : x.size / d, d];
}

/** The argument rules of Backend.rmsnorm; returns [rows, width]. */
export function rmsnormArgs(
  c: ArgChecks,
  x: Tensor,
  weight: Tensor,
  eps: number,
  out: Tensor,
  rstd: Tensor,
): [number, number] {
  const op = 'rmsnorm';
  if (!Number.isFinite(eps)) c.fail(op, `eps must be a finite number, got ${eps}`);
  if (eps < 0) c.fail(op, `eps must be ≥ 0, got ${eps}`);
  const [n, d] = rowsOf(c, op, x);
  c.expectShape(op, 'weight', weight, [d]);
  c.expectShape(op, 'out', out, x.shape);
  c.expectSize(op, 'rstd', rstd, n);
  c.sameOrDisjoint(op, 'out and x', out, x);
  c.noAlias(op, 'out and weight', out, weight);
  c.noAlias(op, 'rstd and out', rstd, out);
  c.noAlias(op, 'rstd and x', rstd, x);
  return [n, d];
}

/** The argument rules of Backend.rmsnormBackward; returns [rows, width]. */
export function rmsnormBackwardArgs(
  c: ArgChecks,
  dout: Tensor,
  x: Tensor,
  weight: Tensor,
  rstd: Tensor,
  dx: Tensor,
  dweight: Tensor | null,
): [number, number] {
  const op = 'rmsnormBackward';
  const [n, d] = rowsOf(c, op, x);
  c.expectShape(op, 'dout', dout, x.shape);
  c.expectShape(op, 'weight', weight, [d]);
  c.expectSize(op, 'rstd', rstd, n);
  c.expectShape(op, 'dx', dx, x.shape);
  // dx may be dout itself (each element of dout is read before dx overwrites it).
  c.sameOrDisjoint(op, 'dx and dout', dx, dout);
  for (const [name, t] of [
    ['x', x],
    ['weight', weight],
    ['rstd', rstd],
  ] as const)
    c.noAlias(op, `dx and ${name}`, dx, t);
  if (dweight) {
    c.expectShape(op, 'dweight', dweight, [d]);
    for (const [name, t] of [
      ['dout', dout],
      ['x', x],
      ['weight', weight],
      ['rstd', rstd],
      ['dx', dx],
    ] as const) {
      c.noAlias(op, `dweight and ${name}`, dweight, t);
    }
  }
  return [n, d];
}

/**
 * The argument rules of Backend.rope: x [B, T, H, D] (D even), positions [B·T], tables
 * [maxPos, R/2] with R ≤ D the rotated dimensions (partial rotary: the first R of each head rotate,
 * the rest pass through). Returns R/2 as `half`.
 */
export function ropeArgs(
  c: ArgChecks,
  x: Tensor,
  positions: Tensor,
  cos: Tensor,
  sin: Tensor,
  layout: string,
  out: Tensor,
): { B: number; T: number; H: number; D: number; maxPos: number; half: number } {
  const op = 'rope';
  if (layout !== 'half' && layout !== 'interleaved') c.fail(op, `unknown layout '${layout}'`);
  c.expectRank(op, 'x', x, 4);
  const [B, T, H, D] = x.shape as [number, number, number, number];
  if (D % 2 !== 0) c.fail(op, `head dim must be even, got ${D}`);
  c.expectSize(op, 'positions', positions, B * T);
  c.expectRank(op, 'cos', cos, 2);
  const maxPos = cos.shape[0]!;
  const half = cos.shape[1]!;
  if (!(half >= 1 && half <= D / 2)) c.expectShape(op, 'cos', cos, [maxPos, D / 2]);
  c.expectShape(op, 'sin', sin, [maxPos, half]);
  c.expectShape(op, 'out', out, x.shape);
  c.sameOrDisjoint(op, 'out and x', out, x);
  for (const [name, t] of [
    ['positions', positions],
    ['cos', cos],
    ['sin', sin],
  ] as const)
    c.noAlias(op, `out and ${name}`, out, t);
  return { B, T, H, D, maxPos, half };
}

/** The argument rules of Backend.adamw: finite hyper-parameters, a 1-based step, four disjoint tensors of one size. */
export function adamwArgs(
  c: ArgChecks,
  param: Tensor,
  grad: Tensor,
  m: Tensor,
  v: Tensor,
  options: AdamWOptions,
): void {
  const op = 'adamw';
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  for (const [name, value] of Object.entries({ lr, beta1, beta2, eps, weightDecay })) {
    if (!Number.isFinite(value)) c.fail(op, `${name} must be a finite number, got ${value}`);
  }
  if (!Number.isInteger(step) || step < 1) c.fail(op, `step must be an integer ≥ 1, got ${step}`);
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
    c.fail(op, `betas must be in [0, 1), got ${beta1}, ${beta2}`);
  const n = param.size;
  c.expectSize(op, 'grad', grad, n);
  c.expectSize(op, 'm', m, n);
  c.expectSize(op, 'v', v, n);
  const named = [
    ['param', param],
    ['grad', grad],
    ['m', m],
    ['v', v],
  ] as const;
  for (let i = 0; i < named.length; i++) {
    for (let j = i + 1; j < named.length; j++)
      c.noAlias(op, `${named[i]![0]} and ${named[j]![0]}`, named[i]![1], named[j]![1]);
  }
}

/** The output rules of Backend.attentionBackward (inputs are checked by attentionDims). */
export function attentionBackwardArgs(
  c: ArgChecks,
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
): void {
  const op = 'attentionBackward';
  c.expectShape(op, 'dout', dout, q.shape);
  c.expectShape(op, 'out', out, q.shape);
  c.expectShape(op, 'dq', dq, q.shape);
  c.expectShape(op, 'dk', dk, k.shape);
  c.expectShape(op, 'dv', dv, k.shape);
  const inputs = [
    ['dout', dout],
    ['q', q],
    ['k', k],
    ['v', v],
    ['out', out],
    ['lse', lse],
  ] as const;
  const grads = [
    ['dq', dq],
    ['dk', dk],
    ['dv', dv],
  ] as const;
  for (const [gn, g] of grads) for (const [n, t] of inputs) c.noAlias(op, `${gn} and ${n}`, g, t);
  c.noAlias(op, 'dq and dk', dq, dk);
  c.noAlias(op, 'dq and dv', dq, dv);
  c.noAlias(op, 'dk and dv', dk, dv);
}

/**
 * The argument rules of Backend.crossEntropy: an integer ignore index, a finite gradScale, logits
 * [n, V] (V > 0 unless n = 0), labels and losses [n], dlogits like logits (it may be logits itself);
 * returns [n, V]. Labels' dtype and range are checked by the caller, which reads them.
 */
export function crossEntropyArgs(
  c: ArgChecks,
  logits: Tensor,
  labels: Tensor,
  ignoreIndex: number,
  losses: Tensor,
  dlogits: Tensor | null,
  gradScale: number,
  options?: CrossEntropyOptions,
): [number, number, number | null] {
  const op = 'crossEntropy';
  const softcap = softcapOption(c, op, 'softcap', options?.softcap);
  if (!Number.isInteger(ignoreIndex))
    c.fail(op, `ignoreIndex must be an integer, got ${ignoreIndex}`);
  if (!Number.isFinite(gradScale))
    c.fail(op, `gradScale must be a finite number, got ${gradScale}`);
  c.expectRank(op, 'logits', logits, 2);
  const [n, vocab] = logits.shape as [number, number];
  if (vocab === 0 && n > 0) c.fail(op, 'logits have an empty vocabulary');
  c.expectSize(op, 'labels', labels, n);
  c.expectSize(op, 'losses', losses, n);
  c.noAlias(op, 'losses and logits', losses, logits);
  c.noAlias(op, 'losses and labels', losses, labels);
  if (dlogits) {
    c.expectShape(op, 'dlogits', dlogits, logits.shape);
    c.sameOrDisjoint(op, 'dlogits and logits', dlogits, logits);
    c.noAlias(op, 'dlogits and losses', dlogits, losses);
    c.noAlias(op, 'dlogits and labels', dlogits, labels);
  }
  return [n, vocab, softcap];
}

/**
 * The argument rules of an elementwise op whose inputs and outputs all have `inputs[0]`'s element
 * count: every output may be any input itself (each element is read before it is written) but not
 * a partial overlap of one, and outputs are distinct from each other. Returns the element count.
 */
export function elementwiseArgs(
  c: ArgChecks,
  op: string,
  inputs: readonly (readonly [string, Tensor])[],
  outputs: readonly (readonly [string, Tensor])[],
): number {
  const n = inputs[0]![1].size;
  for (const [name, t] of [...inputs.slice(1), ...outputs]) c.expectSize(op, name, t, n);
  outputs.forEach(([name, t], i) => {
    for (const [other, u] of inputs) c.sameOrDisjoint(op, `${name} and ${other}`, t, u);
    for (const [other, u] of outputs.slice(0, i)) c.noAlias(op, `${name} and ${other}`, t, u);
  });
  return n;
}

/**
 * The argument rules of Backend.copyColumns: src [n, a] and dst [n, b] (rank 2, same rows),
 * integer column ranges inside both, disjoint tensors. Returns [n, a, b].
 */
export function copyColumnsArgs(
  c: ArgChecks,
  src: Tensor,
  srcCol: number,
  dst: Tensor,
  dstCol: number,
  width: number,
): [number, number, number] {
  const op = 'copyColumns';
  if (src.dtype !== dst.dtype) c.fail(op, `src is ${src.dtype} but dst is ${dst.dtype}`);
  c.expectRank(op, 'src', src, 2);
  c.expectRank(op, 'dst', dst, 2);
  const [n, a] = src.shape as [number, number];
  const b = dst.shape[1]!;
  if (dst.shape[0] !== n) c.fail(op, `dst has ${dst.shape[0]} rows, src ${n}`);
  for (const [name, v] of [
    ['srcCol', srcCol],
    ['dstCol', dstCol],
    ['width', width],
  ] as const)
    if (!Number.isSafeInteger(v) || v < 0)
      c.fail(op, `${name} must be a non-negative integer, got ${v}`);
  if (srcCol + width > a) c.fail(op, `columns ${srcCol}..${srcCol + width} exceed src's ${a}`);
  if (dstCol + width > b) c.fail(op, `columns ${dstCol}..${dstCol + width} exceed dst's ${b}`);
  c.noAlias(op, 'src and dst', src, dst);
  return [n, a, b];
}
