// GGUF-block training bench (`npm run bench:gguf`, `-- --quick`; issue 17.3): the frozen-base
// products of `--quant keep` (forward y = x·Wᵀ and input gradient dx = dy·W) on a 7B model's layer
// shapes, for Q4_K, Q6_K and Q8_0 blocks beside NF4 (double quant, block 64), in fp32 and bf16
// compute, and the memory plan of QLoRA on a Q4_K 7B shape beside NF4 and Q8_0. Writes
// bench/results/gguf-latest.md. Rates are wall GFLOP/s and per CPU-second (robust to a shared machine);
// the machine, its load and the thread count are printed with them. Nothing here is asserted.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBackend } from '../src/backends/index.js';
import type { CpuBackend } from '../src/backends/cpu/index.js';
import { bf16Available } from '../src/backends/cpu/native.js';
import { type GgmlQuantType, uploadGgml } from '../src/quant/ggml-blocks.js';
import { quantize4bit, uploadPacked4bit, disposePacked4bit } from '../src/quant/index.js';
import { planTraining } from '../src/train/plan.js';
import { resolvePlanModel } from '../src/train/plan-shapes.js';
import { randomGgmlWeight } from '../test/ggml-support.js';
import type { Tensor } from '../src/tensor/tensor.js';

const quick = process.argv.includes('--quick');
const be = (await getBackend('cpu')) as CpuBackend;
const bf = bf16Available() ? be.withComputeDtype('bf16') : null;
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const load0 = os.loadavg();

function timeBoth(fn: () => void, minSeconds = quick ? 0.3 : 1): { wall: number; cpu: number } {
  fn();
  const wall: number[] = [];
  const cpu: number[] = [];
  let total = 0;
  while (wall.length < 3 || (total < minSeconds && wall.length < 9)) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    fn();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    wall.push(dt);
    cpu.push((c.user + c.system) / 1e6);
    total += dt;
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  return { wall: med(wall), cpu: med(cpu) };
}

function randomTensor(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    v[i] = s / 2147483648 - 1;
  }
  return be.fromArray(v, shape);
}

const M = quick ? 256 : 512;
const shapes: [N: number, K: number][] = quick
  ? [
      [4096, 4096],
      [11008, 4096],
    ]
  : [
      [4096, 4096],
      [11008, 4096],
      [4096, 11008],
    ];
const kinds: ('nf4' | GgmlQuantType)[] = ['nf4', 'q4_k', 'q6_k', 'q8_0'];

interface Row {
  kind: string;
  N: number;
  K: number;
  fwd: number;
  fwdCpu: number;
  grad: number;
  gradCpu: number;
  fwdBf16: number | null;
  gradBf16: number | null;
}
const rows: Row[] = [];
for (const [N, K] of shapes) {
  const x = randomTensor([M, K], 1);
  const y = randomTensor([M, N], 2);
  const flops = 2 * M * N * K;
  for (const kind of kinds) {
    let fwd: (b: typeof be | NonNullable<typeof bf>) => void;
    let grad: (b: typeof be | NonNullable<typeof bf>) => void;
    let release: () => void;
    if (kind === 'nf4') {
      const values = new Float32Array(N * K).map((_, i) => Math.sin(i * 0.37) * 0.02);
      const w = uploadPacked4bit(
        be,
        quantize4bit(values, { quantType: 'nf4', blocksize: 64, doubleQuant: true }),
        N,
        K,
      );
      fwd = (b) => b.matmul4bit(x, w, y);
      grad = (b) => b.matmul4bitInputGrad(y, w, x);
      release = () => disposePacked4bit(w);
    } else {
      const w = uploadGgml(be, randomGgmlWeight(kind, N, K, 3));
      fwd = (b) => b.matmulGgml(x, w, y);
      grad = (b) => b.matmulGgmlInputGrad(y, w, x);
      release = () => w.blocks.dispose();
    }
    const f = timeBoth(() => fwd(be));
    const g = timeBoth(() => grad(be));
    const fb = bf ? timeBoth(() => fwd(bf)) : null;
    const gb = bf ? timeBoth(() => grad(bf)) : null;
    release();
    const row: Row = {
      kind: kind.toUpperCase(),
      N,
      K,
      fwd: flops / f.wall / 1e9,
      fwdCpu: flops / f.cpu / 1e9,
      grad: flops / g.wall / 1e9,
      gradCpu: flops / g.cpu / 1e9,
      fwdBf16: fb ? flops / fb.wall / 1e9 : null,
      gradBf16: gb ? flops / gb.wall / 1e9 : null,
    };
    rows.push(row);
    log(
      `M=${M} N=${N} K=${K} ${row.kind}: forward ${row.fwd.toFixed(1)} (bf16 ${row.fwdBf16?.toFixed(1) ?? 'n/a'}), input grad ${row.grad.toFixed(1)} (bf16 ${row.gradBf16?.toFixed(1) ?? 'n/a'}) GFLOP/s`,
    );
  }
  x.dispose();
  y.dispose();
}

// The memory plan of QLoRA on a 7B shape (counting backend: nothing is allocated), per base.
const model = resolvePlanModel('llama2-7b').config;
const planOpts = { seqLen: 512, batchSize: 1, gradientCheckpointing: true, rank: 16 };
const plans = [
  // Speed: the step's kernels timed on this backend (f32 compute), as `qlora plan` does.
  ['NF4 + double quant', await planTraining(model, planOpts, { backend: be })],
  [
    'Q4_K kept',
    await planTraining(
      model,
      { ...planOpts, quantization: null, keptGguf: 'q4_k' },
      { backend: be },
    ),
  ],
  [
    'Q8_0 kept',
    await planTraining(
      model,
      { ...planOpts, quantization: null, keptGguf: 'q8_0' },
      { backend: be },
    ),
  ],
] as const;
const gib = (b: number) => (b / 2 ** 30).toFixed(2);

const load1 = os.loadavg();
const cpu = os.cpus()[0]?.model ?? 'unknown';
const lines = [
  `# GGUF-block (--quant keep) bench${quick ? ' — quick' : ''}`,
  '',
  `Machine: ${cpu}, ${os.cpus().length} logical CPUs, addon ${be.simd}, ${be.threads} threads; bf16 ${bf ? 'available (AVX512_BF16)' : 'unavailable'}.`,
  `Load average (1/5/15 min) at start ${load0.map((l) => l.toFixed(2)).join(' / ')}, at end ${load1.map((l) => l.toFixed(2)).join(' / ')}. Command: \`nice -n 10 npm run bench:gguf${quick ? ' -- --quick' : ''}\`.`,
  '',
  `Frozen-base products at Llama-2-7B layer shapes, M = ${M} tokens: forward y[M, N] = x[M, K]·Wᵀ and input gradient dx[M, K] = dy[M, N]·W. GFLOP/s = 2·M·N·K / median wall seconds; "per CPU-s" divides by this process's CPU seconds instead (what a shared machine does not inflate). NF4 is double-quantized, block 64; the GGUF blocks are random valid blocks (speed does not depend on the values).`,
  '',
  '| weights | N | K | forward GFLOP/s | per CPU-s | bf16 forward | input grad GFLOP/s | per CPU-s | bf16 input grad |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.kind} | ${r.N} | ${r.K} | ${r.fwd.toFixed(1)} | ${r.fwdCpu.toFixed(1)} | ${r.fwdBf16?.toFixed(1) ?? 'n/a'} | ${r.grad.toFixed(1)} | ${r.gradCpu.toFixed(1)} | ${r.gradBf16?.toFixed(1) ?? 'n/a'} |`,
  ),
  '',
  `Memory plan, QLoRA on the llama2-7b shape (batch 1 × seq 512, r 16 on every projection, AdamW, gradient checkpointing; \`qlora plan -m llama2-7b --seq-len 512 --batch-size 1 --gradient-checkpointing [--quant keep]\` gives the Q4_K row):`,
  '',
  '| base | base weights GiB | projection bits/param | predicted peak GiB | predicted tok/s (kernels timed here, f32) |',
  '|---|---|---|---|---|',
  ...plans.map(
    ([name, p]) =>
      `| ${name} | ${gib(p.memory.baseWeights)} | ${p.projectionBitsPerParam.toFixed(3)} | ${gib(p.peakBytes)} | ${'tokensPerSecond' in p.speed ? p.speed.tokensPerSecond.toFixed(1) : `not measured: ${p.speed.unmeasured}`} |`,
  ),
  '',
];
const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'gguf-latest.md');
fs.writeFileSync(out, lines.join('\n'));
process.stdout.write(lines.join('\n'));
