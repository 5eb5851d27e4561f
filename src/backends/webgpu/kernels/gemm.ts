/**
 * The tiled GEMM shared by matmul and the fused 4-bit matmuls: C = alpha·op(A)·op(B) + beta·C for
 * one window of a (batched) product, generated per variant (transposes, tile shape, B source,
 * compute precision) so each pipeline has no runtime branches on them.
 *
 * Scheme: a workgroup owns a BM×BN tile of C; 256 invocations each own TM×TN outputs in vec4
 * registers. K advances BK at a time: the next A/B tiles are fetched from global memory into
 * registers while the current ones (in workgroup memory, k-major so the inner loop reads vec4s) are
 * multiplied, which hides global latency without double-buffered workgroup memory. An invocation's
 * rows and columns are interleaved in groups of 4 (group g of invocation t sits at (g·threads + t)·4),
 * so a warp's vec4 reads of one k row are consecutive: no bank conflicts.
 *
 * B comes from an f32 matrix, or from a packed 4-bit weight (bitsandbytes layout: element 2i in the
 * high nibble of byte i, absmax per block of flat elements, optionally 8-bit double-quantized):
 * codes are decoded while the B tile is staged, so only the packed bytes cross memory; or from a
 * weight in a GGUF's own blocks (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K; ggml-decode.ts, one variant for all
 * five), decoded element by element straight into the staged tile. With f16
 * compute the staged tiles are f16 (half the workgroup memory traffic) and products of f16
 * operands are accumulated in f32.
 */
import type { KernelBinding, KernelParam, KernelSpec } from '../context.js';
import { GGML_BINDINGS, GGML_DECODE_WGSL, GGML_PARAMS } from './ggml-decode.js';

export interface Tile {
  readonly BM: number;
  readonly BN: number;
  readonly BK: number;
  readonly TM: number;
  readonly TN: number;
}

/** 128×128 tiles (8×8 per invocation) for big products; 64×64 (4×4) when big tiles would leave the GPU idle. */
export const TILES = {
  large: { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8 },
  small: { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4 },
} as const satisfies Record<string, Tile>;
export type TileName = keyof typeof TILES;

/**
 * Where op(B) comes from. 'f32': a matrix. '4bit': a packed weight W [rows, cols] with op(B) = Wᵀ
 * (transB: matmul4bit, x·Wᵀ) or W (inputGrad); `words` reads aligned u32 words of 8 codes (cols and
 * blocksize multiples of 8, packed 4-byte aligned), else code by code.
 */
export type BSource =
  | { readonly kind: 'f32' }
  | { readonly kind: '4bit'; readonly words: boolean }
  | { readonly kind: 'ggml' };

export interface GemmVariant {
  readonly transA: boolean;
  readonly transB: boolean;
  readonly tile: TileName;
  readonly b: BSource;
  readonly f16: boolean;
}

const b = (name: string, type: KernelBinding['type'], write = false): KernelBinding => ({
  name,
  type,
  write,
});
const u = (name: string): KernelParam => ({ name, type: 'u32' });

/**
 * WGSL: the absmax of flat block `blk` of a 4-bit weight. `qabs` is bound as u32 words either way:
 * f32 values (plain), or 8-bit codes (P.nested = 1) dequantized as blockAbsmax does, code ·
 * nested absmax + offset. One pipeline serves both (a uniform branch), so a software adapter
 * compiles half as many variants.
 */
export const ABSMAX_WGSL = `fn absmaxOf(blk: u32) -> f32 {
  if (P.nested == 0u) { return bitcast<f32>(qabs[(P.off_qabs >> 2u) + blk]); }
  let at = P.off_qabs + blk;
  let q = (qabs[at >> 2u] >> ((at & 3u) << 3u)) & 255u;
  return ncode[P.off_ncode + q] * nabs[P.off_nabs + blk / P.nblocksize] + P.noffset;
}`;

/**
 * WGSL: code of flat element g of a packed weight bound as `qw` (u32 words) from byte P.wByte0 on:
 * element 2i in the high nibble of byte i.
 */
export const NIBBLE_WGSL = `fn nibble(g: u32) -> u32 {
  let byte = P.off_qw + (g >> 1u) - P.wByte0;
  return (qw[byte >> 2u] >> (((byte & 3u) << 3u) + select(0u, 4u, (g & 1u) == 0u))) & 15u;
}`;

/** The 4-bit weight's bindings: codes, code table, absmax (as u32 words), nested absmax and code table. */
export const Q4_BINDINGS: readonly KernelBinding[] = [
  b('qw', 'u32'),
  b('qcode', 'f32'),
  b('qabs', 'u32'),
  b('nabs', 'f32'),
  b('ncode', 'f32'),
];

/** Parameters every variant takes, in this order (see matmul.ts: matmul and gemmParams). */
export const GEMM_PARAMS: readonly KernelParam[] = [
  u('M'),
  u('N'),
  u('K'),
  u('lda'),
  u('ldb'),
  u('ldc'),
  u('sA'),
  u('sB'),
  u('sC'),
  u('batch'),
  { name: 'alpha', type: 'f32' },
  { name: 'beta', type: 'f32' },
];
/** Extra parameters of 4-bit variants: W's row length, the window's first W row and first byte, blocksize, double quant (0/1), nested blocksize and offset. */
export const Q4_PARAMS: readonly KernelParam[] = [
  u('cols'),
  u('wRow0'),
  u('wByte0'),
  u('blocksize'),
  u('nested'),
  u('nblocksize'),
  { name: 'noffset', type: 'f32' },
];

export function gemmSpec(v: GemmVariant): KernelSpec {
  const t = TILES[v.tile];
  const bindings: KernelBinding[] = [b('matA', 'f32')];
  if (v.b.kind === 'f32') bindings.push(b('matB', 'f32'));
  else if (v.b.kind === 'ggml') bindings.push(...GGML_BINDINGS);
  else bindings.push(...Q4_BINDINGS);
  bindings.push(b('matC', 'f32', true));
  const params =
    v.b.kind === 'f32'
      ? GEMM_PARAMS
      : [...GEMM_PARAMS, ...(v.b.kind === 'ggml' ? GGML_PARAMS : Q4_PARAMS)];
  const bkey = v.b.kind === '4bit' ? `q4${v.b.words ? 'w' : 'e'}` : v.b.kind;
  return {
    key: `gemm_${v.transA ? 't' : 'n'}${v.transB ? 't' : 'n'}_${v.tile}_${bkey}_${v.f16 ? 'f16' : 'f32'}`,
    bindings,
    params,
    source: source(v, t),
    enables: v.f16 ? ['f16'] : [],
  };
}

function source(v: GemmVariant, t: Tile): string {
  const { BM, BN, BK, TM, TN } = t;
  const WX = BN / TN;
  const WY = BM / TM;
  const WG = WX * WY;
  const S = v.f16 ? 'f16' : 'f32';
  const A_PER = (BM * BK) / WG;
  const B_PER = (BN * BK) / WG;
  if (
    !Number.isInteger(A_PER) ||
    !Number.isInteger(B_PER) ||
    TM % 4 ||
    TN % 4 ||
    BM % 4 ||
    BN % 4
  ) {
    throw new Error(`gemm: bad tile ${JSON.stringify(t)}`);
  }
  const q4 = v.b.kind === '4bit' ? v.b : null;
  const words = q4?.words ?? false;
  // Words of 8 codes per B tile (4-bit word loads), spread over the invocations.
  const W_TOTAL = (BN * BK) / 8;
  const W_PER = Math.ceil(W_TOTAL / WG);
  const lines: string[] = [];
  lines.push(`const BM = ${BM}u; const BN = ${BN}u; const BK = ${BK}u; const WG = ${WG}u;`);
  lines.push(`var<workgroup> As: array<vec4<${S}>, ${(BK * BM) / 4}>;`);
  lines.push(`var<workgroup> Bs: array<vec4<${S}>, ${(BK * BN) / 4}>;`);

  // A element (m, k) of op(A) in batch base `base`, zero outside.
  lines.push(`fn fetchA(base: u32, m: u32, k: u32) -> f32 {
  if (m >= P.M || k >= P.K) { return 0.0; }
  return matA[base + ${v.transA ? 'k * P.lda + m' : 'm * P.lda + k'}];
}`);
  const ggml = v.b.kind === 'ggml';
  if (ggml) {
    // W row n, column k (transB: x·Wᵀ) or row k, column n (dy·W).
    lines.push(GGML_DECODE_WGSL);
    lines.push(`fn fetchB(base: u32, k: u32, n: u32) -> f32 {
  if (k >= P.K || n >= P.N) { return 0.0; }
  return ${v.transB ? 'ggmlAt(n, P.wCol0 + k)' : 'ggmlAt(k, P.wCol0 + n)'};
}`);
  } else if (!q4) {
    lines.push(`fn fetchB(base: u32, k: u32, n: u32) -> f32 {
  if (k >= P.K || n >= P.N) { return 0.0; }
  return matB[base + ${v.transB ? 'n * P.ldb + k' : 'k * P.ldb + n'}];
}`);
  } else {
    lines.push('var<workgroup> codeS: array<f32, 16>;');
    lines.push(ABSMAX_WGSL);
    // Flat index of W element (row r of this window, column c); op(B)[k][n] is W[n][k] (transB) or W[k][n].
    lines.push(`fn flatW(r: u32, c: u32) -> u32 { return (P.wRow0 + r) * P.cols + c; }`);
    lines.push(`fn codeByte(g: u32) -> u32 { return P.off_qw + (g >> 1u) - P.wByte0; }`);
    if (!words) {
      lines.push(NIBBLE_WGSL);
      lines.push(`fn fetchB(base: u32, k: u32, n: u32) -> f32 {
  if (k >= P.K || n >= P.N) { return 0.0; }
  let g = ${v.transB ? 'flatW(n, k)' : 'flatW(k, n)'};
  return codeS[nibble(g)] * absmaxOf(g / P.blocksize);
}`);
    }
  }

  // Tile staging: registers ← global (prefetch), then workgroup memory ← registers.
  const aIdx = (r: number): string => `li + ${r * WG}u`;
  const prefetch: string[] = [];
  const stage: string[] = [];
  for (let r = 0; r < A_PER; r++) {
    const [mm, kk] = v.transA
      ? [`(${aIdx(r)}) % BM`, `(${aIdx(r)}) / BM`]
      : [`(${aIdx(r)}) / BK`, `(${aIdx(r)}) % BK`];
    prefetch.push(`{ let mm = ${mm}; let kk = ${kk}; ra${r} = fetchA(aBase, m0 + mm, k0 + kk); }`);
    stage.push(
      `{ let mm = ${mm}; let kk = ${kk}; As[kk * (BM / 4u) + mm / 4u][mm % 4u] = ${S}(ra${r}); }`,
    );
  }
  if (ggml) {
    // Decoded straight into the tile, in a loop (not prefetched into registers, nor unrolled): one
    // copy of the five-format decoder in the shader keeps compiles short on software adapters
    // (lavapipe took minutes over the prefetched, unrolled form).
    const [kk, nn] = v.transB ? ['i % BK', 'i / BK'] : ['i / BN', 'i % BN'];
    stage.push(`for (var r = 0u; r < ${B_PER}u; r++) {
        let i = li + r * WG; let kk = ${kk}; let nn = ${nn};
        Bs[kk * (BN / 4u) + nn / 4u][nn % 4u] = ${S}(fetchB(0u, kt + kk, n0 + nn));
      }`);
  } else if (!words) {
    for (let r = 0; r < B_PER; r++) {
      const [kk, nn] = v.transB
        ? [`(${aIdx(r)}) % BK`, `(${aIdx(r)}) / BK`]
        : [`(${aIdx(r)}) / BN`, `(${aIdx(r)}) % BN`];
      prefetch.push(
        `{ let kk = ${kk}; let nn = ${nn}; rb${r} = fetchB(bBase, k0 + kk, n0 + nn); }`,
      );
      stage.push(
        `{ let kk = ${kk}; let nn = ${nn}; Bs[kk * (BN / 4u) + nn / 4u][nn % 4u] = ${S}(rb${r}); }`,
      );
    }
  } else {
    // One u32 word = 8 consecutive codes along a W row (op(B)'s k for transB, its n otherwise),
    // one absmax (blocksize is a multiple of 8 and rows start at multiples of 8).
    for (let r = 0; r < W_PER; r++) {
      const wi = `(li + ${r * WG}u)`;
      const [kk, nn] = v.transB
        ? [`(${wi} % (BK / 8u)) * 8u`, `${wi} / (BK / 8u)`]
        : [`${wi} / (BN / 8u)`, `(${wi} % (BN / 8u)) * 8u`];
      const guard = W_TOTAL % WG === 0 && r < W_PER ? '' : `if (${wi} < ${W_TOTAL}u) `;
      const [wr, wc] = v.transB ? ['n0 + nn', 'k0 + kk'] : ['k0 + kk', 'n0 + nn'];
      const inRange = v.transB
        ? '(n0 + nn) < P.N && (k0 + kk) < P.K'
        : '(k0 + kk) < P.K && (n0 + nn) < P.N';
      prefetch.push(`${guard}{ let kk = ${kk}; let nn = ${nn};
        rw${r} = 0u; rs${r} = 0.0;
        if (${inRange}) { let g = flatW(${wr}, ${wc}); rw${r} = qw[codeByte(g) >> 2u]; rs${r} = absmaxOf(g / P.blocksize); } }`);
      const vals = Array.from(
        { length: 8 },
        (_, e) =>
          `${S}(codeS[(rw${r} >> ${8 * (e >> 1) + (e % 2 === 0 ? 4 : 0)}u) & 15u] * rs${r})`,
      );
      const store = v.transB
        ? vals.map((x, e) => `Bs[(kk + ${e}u) * (BN / 4u) + nn / 4u][nn % 4u] = ${x};`).join(' ')
        : `Bs[kk * (BN / 4u) + nn / 4u] = vec4<${S}>(${vals.slice(0, 4).join(', ')}); Bs[kk * (BN / 4u) + nn / 4u + 1u] = vec4<${S}>(${vals.slice(4).join(', ')});`;
      stage.push(`${guard}{ let kk = ${kk}; let nn = ${nn}; ${store} }`);
    }
  }
  const regs: string[] = [];
  for (let r = 0; r < A_PER; r++) regs.push(`var ra${r}: f32;`);
  // (GGUF blocks need no B registers: they are decoded at staging time.)
  if (!words && !ggml) for (let r = 0; r < B_PER; r++) regs.push(`var rb${r}: f32;`);
  else if (words) for (let r = 0; r < W_PER; r++) regs.push(`var rw${r}: u32; var rs${r}: f32;`);

  // Accumulators: row group i (4 rows) × column group j (a vec4 of columns) × row r in the group.
  const GI = TM / 4;
  const GJ = TN / 4;
  const acc: string[] = [];
  const inner: string[] = [];
  for (let i = 0; i < GI; i++) inner.push(`let av${i} = As[kk * (BM / 4u) + ${i * WY}u + ty];`);
  for (let j = 0; j < GJ; j++) inner.push(`let bv${j} = Bs[kk * (BN / 4u) + ${j * WX}u + tx];`);
  for (let i = 0; i < GI; i++) {
    for (let r = 0; r < 4; r++) {
      for (let j = 0; j < GJ; j++) {
        const c = `c${i}_${r}_${j}`;
        acc.push(`var ${c} = vec4<f32>(0.0);`);
        inner.push(
          v.f16
            ? `${c} += vec4<f32>(vec4<f16>(av${i}[${r}]) * bv${j});`
            : `${c} = fma(vec4<f32>(av${i}[${r}]), bv${j}, ${c});`,
        );
      }
    }
  }
  const epilogue: string[] = [];
  for (let i = 0; i < GI; i++) {
    for (let r = 0; r < 4; r++) {
      epilogue.push(`{ let m = m0 + (${i * WY}u + ty) * 4u + ${r}u;
      if (m < P.M) {`);
      for (let j = 0; j < GJ; j++) {
        epilogue.push(`        { let n = n0 + (${j * WX}u + tx) * 4u; let v = c${i}_${r}_${j};
          for (var e = 0u; e < 4u; e++) { if (n + e < P.N) { store(cBase + m * P.ldc + n + e, v[e]); } } }`);
      }
      epilogue.push('      } }');
    }
  }

  lines.push(`fn store(at: u32, v: f32) {
  var r = P.alpha * v;
  // beta = 0 ignores C's old contents (NaN included).
  if (P.beta != 0.0) { r = r + P.beta * matC[at]; }
  matC[at] = r;
}`);
  lines.push(`@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let tx = li % ${WX}u;
  let ty = li / ${WX}u;
  ${q4 ? 'if (li < 16u) { codeS[li] = qcode[P.off_qcode + li]; }\n  workgroupBarrier();' : ''}
  let m0 = wg.y * BM;
  let n0 = wg.x * BN;
  ${regs.join('\n  ')}
  // Grid-stride over batches: z holds at most maxComputeWorkgroupsPerDimension.
  for (var bz = wg.z; bz < P.batch; bz += nwg.z) {
    let aBase = P.off_matA + bz * P.sA;
    let bBase = ${v.b.kind === 'f32' ? 'P.off_matB + bz * P.sB' : '0u'};
    let cBase = P.off_matC + bz * P.sC;
    ${acc.join('\n    ')}
    var k0 = 0u;
    ${prefetch.join('\n    ')}
    for (var kt = 0u; kt < P.K; kt += BK) {
      workgroupBarrier();
      ${stage.join('\n      ')}
      workgroupBarrier();
      k0 = kt + BK;
      if (k0 < P.K) {
        ${prefetch.join('\n        ')}
      }
      for (var kk = 0u; kk < BK; kk++) {
        ${inner.join('\n        ')}
      }
    }
    ${epilogue.join('\n    ')}
  }
}`);
  return lines.join('\n');
}
