/**
 * Matrix-product throughput of the webgpu backend in GFLOP/s: fp32 matmul on square sizes and on
 * Llama training shapes (M = 512·4 tokens, K, N ∈ {4096, 11008}), and the fused NF4 matmuls
 * (double-quant absmax, blocksize 64) on the same shapes, forward (x·Wᵀ), input gradient (dy·W)
 * and decode (n = 1), in f32 and — when the adapter has shader-f16 — f16 compute; and the same
 * three products on weights kept in a GGUF's own blocks (`--quant keep`; --ggml picks the types,
 * default q4_k,q8_0; `--ggml none` skips them).
 *
 *   npm run bench:gpu                               # full sweep (a real GPU)
 *   npm run bench:gpu -- --scale 8                  # shapes divided by 8 (a software adapter)
 *   npm run bench:gpu -- --peak-tflops 66.9 --torch bench/results/gpu-torch-matmul.json
 *
 * Timing: sync, N iterations recorded back to back, sync; N grows until a batch takes ≥ --min-ms.
 * --peak-tflops adds a "% of FP32 peak" column; --torch reads bench/torch_matmul.py's output and
 * adds PyTorch's GFLOP/s for the same shapes. Results: bench/results/gpu-latest.{json,md}.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WebGpuBackend } from '../src/backends/webgpu/index.js';
import {
  GGML_QUANT_TYPES,
  type GgmlQuantType,
  type GgmlWeight,
  uploadGgml,
} from '../src/quant/ggml-blocks.js';
import { quantize4bit } from '../src/quant/quantize4bit.js';
import { disposePacked4bit, uploadPacked4bit } from '../src/quant/upload.js';
import type { Packed4bitWeight } from '../src/tensor/backend.js';
import type { Tensor } from '../src/tensor/tensor.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

interface Row {
  readonly group: 'square' | 'train' | 'nf4' | 'ggml';
  readonly op: string;
  readonly M: number;
  readonly N: number;
  readonly K: number;
  readonly compute: 'f32' | 'f16';
  readonly ms: number;
  readonly gflops: number;
  /** For NF4 and GGUF-block rows: the fp32 matmul of the same [M, N, K] (x·Wᵀ), for the ratio. */
  fp32Gflops?: number;
}

/** Seconds per call of `f`: batches of N calls between syncs, N doubled until a batch takes minMs. */
async function time(be: WebGpuBackend, f: () => void, minMs: number): Promise<number> {
  f(); // warm-up: compiles the pipeline
  await be.sync();
  for (let n = 1; ; n *= 2) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) f();
    await be.sync();
    const ms = performance.now() - t0;
    if (ms >= minMs || n >= 1024) return ms / n;
  }
}

/** Deterministic values in [-1, 1) without a big host loop per call. */
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let h = seed >>> 0;
  for (let i = 0; i < n; i++) {
    h = (Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    out[i] = h / 2 ** 31 - 1;
  }
  return out;
}

async function matmulRow(
  be: WebGpuBackend,
  group: Row['group'],
  M: number,
  N: number,
  K: number,
  transB: boolean,
  minMs: number,
): Promise<Row> {
  const a = be.fromArray(values(M * K, 1), [M, K]);
  const b = be.fromArray(values(K * N, 2), transB ? [N, K] : [K, N]);
  const c = be.zeros([M, N]);
  const ms = await time(be, () => be.matmul(a, b, c, { transB }), minMs);
  for (const t of [a, b, c]) t.dispose();
  return {
    group,
    op: transB ? 'matmul x·Wᵀ' : 'matmul A·B',
    M,
    N,
    K,
    compute: 'f32',
    ms,
    gflops: (2 * M * N * K) / ms / 1e6,
  };
}

async function nf4Rows(
  be: WebGpuBackend,
  half: WebGpuBackend | null,
  M: number,
  N: number,
  K: number,
  minMs: number,
  fp32: number,
): Promise<Row[]> {
  // W [N, K] (out × in), quantized on the host once.
  const q = quantize4bit(values(N * K, 3), { quantType: 'nf4', blocksize: 64, doubleQuant: true });
  const rows: Row[] = [];
  for (const b of half ? [be, half] : [be]) {
    const w: Packed4bitWeight = uploadPacked4bit(b, q, N, K);
    const compute = b.computeDtype;
    const run = async (
      op: string,
      n: number,
      make: () => [Tensor, Tensor],
      f: (x: Tensor, y: Tensor) => void,
    ) => {
      const [x, y] = make();
      const ms = await time(b, () => f(x, y), minMs);
      x.dispose();
      y.dispose();
      rows.push({
        group: 'nf4',
        op,
        M: n,
        N,
        K,
        compute,
        ms,
        gflops: (2 * n * N * K) / ms / 1e6,
        ...(n === M ? { fp32Gflops: fp32 } : {}),
      });
    };
    await run(
      'matmul4bit x·Wᵀ',
      M,
      () => [b.fromArray(values(M * K, 4), [M, K]), b.zeros([M, N])],
      (x, y) => b.matmul4bit(x, w, y),
    );
    await run(
      'matmul4bitInputGrad dy·W',
      M,
      () => [b.fromArray(values(M * N, 5), [M, N]), b.zeros([M, K])],
      (x, y) => b.matmul4bitInputGrad(x, w, y),
    );
    await run(
      'matmul4bit decode',
      1,
      () => [b.fromArray(values(K, 6), [1, K]), b.zeros([1, N])],
      (x, y) => b.matmul4bit(x, w, y),
    );
    disposePacked4bit(w);
  }
  return rows;
}

/** Byte offsets of each block's f16 scales (docs/formats.md §5.2). */
const HALVES: Record<GgmlQuantType, number[]> = {
  q4_0: [0],
  q8_0: [0],
  q4_k: [0, 2],
  q5_k: [0, 2],
  q6_k: [208],
};

/**
 * W [N, K] in `type`'s blocks: random bytes (every quant pattern is a valid block) with the f16
 * scales set to 2^-8 so values stay finite. Speed does not depend on the values; encoding real
 * ones on the host would take longer than the bench.
 */
function randomBlocks(type: GgmlQuantType, N: number, K: number): Uint8Array {
  const g = GGML_QUANT_TYPES[type];
  const blocks = Uint8Array.from(values(Math.ceil((N * K) / g.blockElems) * g.blockBytes, 7), (v) =>
    Math.floor((v + 1) * 128),
  );
  for (let b = 0; b < blocks.length; b += g.blockBytes) {
    for (const at of HALVES[type]) {
      blocks[b + at] = 0x00;
      blocks[b + at + 1] = 0x1c; // f16 2^-8
    }
  }
  return blocks;
}

/** The three fused products on a weight kept in GGUF blocks (`--quant keep`), like nf4Rows. */
async function ggmlRows(
  be: WebGpuBackend,
  half: WebGpuBackend | null,
  type: GgmlQuantType,
  M: number,
  N: number,
  K: number,
  minMs: number,
  fp32: number,
): Promise<Row[]> {
  const name = GGML_QUANT_TYPES[type].name;
  if (K % GGML_QUANT_TYPES[type].blockElems !== 0) {
    process.stderr.write(`  (${name} skipped at K = ${K}: not whole blocks)\n`);
    return [];
  }
  const host = { type, rows: N, cols: K, blocks: randomBlocks(type, N, K) };
  const rows: Row[] = [];
  for (const b of half ? [be, half] : [be]) {
    const w: GgmlWeight = uploadGgml(b, host);
    const compute = b.computeDtype;
    const run = async (
      op: string,
      n: number,
      make: () => [Tensor, Tensor],
      f: (x: Tensor, y: Tensor) => void,
    ) => {
      const [x, y] = make();
      const ms = await time(b, () => f(x, y), minMs);
      x.dispose();
      y.dispose();
      rows.push({
        group: 'ggml',
        op,
        M: n,
        N,
        K,
        compute,
        ms,
        gflops: (2 * n * N * K) / ms / 1e6,
        ...(n === M ? { fp32Gflops: fp32 } : {}),
      });
    };
    await run(
      `matmulGgml ${name} x·Wᵀ`,
      M,
      () => [b.fromArray(values(M * K, 4), [M, K]), b.zeros([M, N])],
      (x, y) => b.matmulGgml(x, w, y),
    );
    await run(
      `matmulGgmlInputGrad ${name} dy·W`,
      M,
      () => [b.fromArray(values(M * N, 5), [M, N]), b.zeros([M, K])],
      (x, y) => b.matmulGgmlInputGrad(x, w, y),
    );
    await run(
      `matmulGgml ${name} decode`,
      1,
      () => [b.fromArray(values(K, 6), [1, K]), b.zeros([1, N])],
      (x, y) => b.matmulGgml(x, w, y),
    );
    w.blocks.dispose();
  }
  return rows;
}

/** GFLOP/s with three significant digits (a software adapter does well under 1). */
function fmt(g: number): string {
  return g >= 100 ? g.toFixed(0) : g.toPrecision(3);
}

interface TorchRow {
  readonly M: number;
  readonly N: number;
  readonly K: number;
  readonly dtype: string;
  readonly tflops: number;
}

async function main(): Promise<void> {
  const scale = Number(arg('--scale') ?? 1);
  const minMs = Number(arg('--min-ms') ?? 200);
  const peak = arg('--peak-tflops') ? Number(arg('--peak-tflops')) : null;
  const torchFile = arg('--torch');
  const ggmlArg = arg('--ggml') ?? 'q4_k,q8_0';
  const ggmlTypes = (ggmlArg === 'none' ? [] : ggmlArg.split(',')) as GgmlQuantType[];
  for (const t of ggmlTypes)
    if (!(t in GGML_QUANT_TYPES))
      throw new Error(`--ggml: unknown type '${t}' (${Object.keys(GGML_QUANT_TYPES).join(', ')})`);
  const torch: TorchRow[] =
    torchFile && fs.existsSync(torchFile)
      ? (JSON.parse(fs.readFileSync(torchFile, 'utf8')) as { rows: TorchRow[] }).rows
      : [];
  const { createWebGpuBackend } = await import('../src/backends/webgpu/index.js');
  const be = await createWebGpuBackend();
  const half = be.hasF16 ? await createWebGpuBackend({ computeDtype: 'f16' }) : null;
  const a = be.adapter;
  const device = `${a.description || a.architecture || a.vendor} (${a.vendor}${a.isFallback ? ', software' : ''})`;
  process.stderr.write(
    `webgpu adapter: ${device}${scale !== 1 ? `; shapes divided by ${scale}` : ''}\n`,
  );
  const s = (n: number) => Math.max(1, Math.round(n / scale));
  const rows: Row[] = [];
  const log = (r: Row) =>
    process.stderr.write(
      `  ${r.op} [${r.M}×${r.N}×${r.K}] ${r.compute}: ${fmt(r.gflops)} GFLOP/s\n`,
    );
  for (const n of [1024, 2048, 4096]) {
    const r = await matmulRow(be, 'square', s(n), s(n), s(n), false, minMs);
    log(r);
    rows.push(r);
  }
  const M = s(512 * 4);
  for (const [K, N] of [
    [4096, 4096],
    [4096, 11008],
    [11008, 4096],
    [11008, 11008],
  ] as const) {
    const dense = await matmulRow(be, 'train', M, s(N), s(K), true, minMs);
    log(dense);
    rows.push(dense);
    for (const r of await nf4Rows(be, half, M, s(N), s(K), minMs, dense.gflops)) {
      log(r);
      rows.push(r);
    }
    for (const t of ggmlTypes) {
      for (const r of await ggmlRows(be, half, t, M, s(N), s(K), minMs, dense.gflops)) {
        log(r);
        rows.push(r);
      }
    }
  }
  const torchFor = (r: Row) =>
    torch.find((t) => t.M === r.M && t.N === r.N && t.K === r.K && t.dtype === 'float32');
  const torchBf16 = (r: Row) =>
    torch.find((t) => t.M === r.M && t.N === r.N && t.K === r.K && t.dtype === 'bfloat16');
  fs.mkdirSync(RESULTS, { recursive: true });
  const when = new Date().toISOString();
  fs.writeFileSync(
    path.join(RESULTS, 'gpu-latest.json'),
    `${JSON.stringify({ device, adapter: a, when, scale, peakTflops: peak, rows, torch }, null, 2)}\n`,
  );
  const pct = (g: number) => (peak ? ` ${((g / 1e3 / peak) * 100).toFixed(1)}% |` : '');
  const lines = [
    `# webgpu matrix products — ${device}`,
    '',
    `${when}${scale !== 1 ? `; every shape divided by ${scale}` : ''}. GFLOP/s = 2·M·N·K / time per call (N calls between two syncs).` +
      `${peak ? ` FP32 peak taken as ${peak} TFLOP/s.` : ''}`,
    '',
    `| op | M × N × K | compute | ms | GFLOP/s |${peak ? ' % FP32 peak |' : ''} vs fp32 matmul | PyTorch fp32 / bf16 GFLOP/s |`,
    `|---|---|---|---|---|${peak ? '---|' : ''}---|---|`,
    ...rows.map((r) => {
      const t32 = torchFor(r);
      const t16 = torchBf16(r);
      const tcol =
        t32 || t16
          ? `${t32 ? (t32.tflops * 1e3).toFixed(0) : '–'} / ${t16 ? (t16.tflops * 1e3).toFixed(0) : '–'}`
          : '–';
      const ratio = r.fp32Gflops ? `${((r.gflops / r.fp32Gflops) * 100).toFixed(0)}%` : '–';
      return `| ${r.op} | ${r.M}×${r.N}×${r.K} | ${r.compute} | ${r.ms.toFixed(3)} | ${fmt(r.gflops)} |${pct(r.gflops)} ${ratio} | ${tcol} |`;
    }),
    '',
  ];
  fs.writeFileSync(path.join(RESULTS, 'gpu-latest.md'), lines.join('\n'));
  console.log(lines.join('\n'));
  half?.ctx.device.destroy();
}

await main();
