// Attention forward + backward on the cpu backend: full causal attention and sliding windows at the
// same shapes (B=1, H=8, Hkv=8 or 2, D=64), so the cost of a window (docs/attention.md § 2: skipped
// tiles, O(T·W)) and the unchanged speed of the full path can be read side by side. Reports the
// median wall time and the median CPU time of all threads per call (CPU time is the steadier figure
// on a shared machine). QLORA_ADDON=path compares another build of the addon with the same script.
//   npm run bench:attention [-- --quick] [-- --reps N]
import { getBackend } from '../src/backends/index.js';
import type { Tensor } from '../src/tensor/tensor.js';

const quick = process.argv.includes('--quick');
const repsAt = process.argv.indexOf('--reps');
const reps = repsAt > 0 ? Number(process.argv[repsAt + 1]) : 7;
const be = await getBackend('cpu');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function random(shape: number[], seed: number): Tensor {
  let x = seed >>> 0 || 1;
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    values[i] = ((x >>> 0) / 2 ** 32) * 2 - 1;
  }
  return be.fromArray(values, shape);
}

interface Row {
  T: number;
  Hkv: number;
  window: number | null;
  wallMs: number;
  cpuMs: number;
}

function measure(T: number, Hkv: number, window: number | null): Row {
  const [B, H, D] = [1, 8, 64];
  const q = random([B, T, H, D], 1);
  const k = random([B, T, Hkv, D], 2);
  const v = random([B, T, Hkv, D], 3);
  const dout = random([B, T, H, D], 4);
  const out = be.zeros([B, T, H, D]);
  const lse = be.zeros([B, H, T]);
  const dq = be.zeros([B, T, H, D]);
  const dk = be.zeros([B, T, Hkv, D]);
  const dv = be.zeros([B, T, Hkv, D]);
  const options = { scale: 1 / Math.sqrt(D), ...(window === null ? {} : { window }) };
  const step = () => {
    be.attention(q, k, v, out, lse, options);
    be.attentionBackward(dout, q, k, v, out, lse, dq, dk, dv, options);
  };
  step();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    step();
    wall.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e3);
  }
  for (const t of [q, k, v, dout, out, lse, dq, dk, dv]) t.dispose();
  return { T, Hkv, window, wallMs: median(wall), cpuMs: median(cpu) };
}

const cases: [number, number, number | null][] = [];
for (const T of quick ? [512, 1024] : [512, 1024, 2048]) {
  for (const Hkv of [8, 2]) {
    cases.push([T, Hkv, null], [T, Hkv, 128]);
    if (!quick) cases.push([T, Hkv, 512]);
  }
}
console.log(`cpu attention forward + backward, B=1 H=8 D=64, median of ${reps}`);
console.log(
  `addon: ${process.env.QLORA_ADDON ?? 'build/Release (default)'}; ${be.describe?.() ?? ''}`,
);
console.log('| T | Hkv | window | wall ms | cpu ms |\n|---|---|---|---|---|');
for (const [T, Hkv, window] of cases) {
  const r = measure(T, Hkv, window);
  console.log(
    `| ${r.T} | ${r.Hkv} | ${r.window ?? 'full'} | ${r.wallMs.toFixed(1)} | ${r.cpuMs.toFixed(1)} |`,
  );
}
