/**
 * The plan of a run on a GPU backend: what it keeps on the device (device-fit.ts: the buffers, the
 * binding limits) and a speed estimate from the model FLOPs at a GEMM rate measured on that
 * adapter now (no device constants: a short matmul probe that grows until it is long enough to
 * time). The rate is that of the backend's plain f32 matmul, so the estimate is an upper bound for
 * kernels that run below it (attention, the loss, small LoRA products).
 */
import type { Backend } from '../tensor/backend.js';
import { type DeviceFit, type DeviceLimits, deviceFit } from './device-fit.js';
import { flopsPerToken, formatBytes, type PlanModel, type TrainingPlan } from './plan.js';

export interface DevicePlan {
  readonly device: string;
  readonly fit: DeviceFit;
  /** f32 GEMM rate measured on the adapter, FLOP/s. */
  readonly gemmFlops: number;
  /** Training tokens/s at that rate (an upper bound). */
  readonly tokensPerSecond: number;
}

/** GEMM FLOP/s of `be`: n×n×n products, n doubling from 256 until one takes ≥ 20 ms (or n = 2048). */
export async function measureGemmRate(be: Backend & { sync?(): Promise<void> }): Promise<number> {
  const settle = async (t: { read(): Promise<unknown> }): Promise<void> => {
    if (be.sync) await be.sync();
    else await t.read();
  };
  let rate = 0;
  for (let n = 256; n <= 2048; n *= 2) {
    const a = be.zeros([n, n]);
    const b = be.zeros([n, n]);
    const c = be.zeros([n, n]);
    try {
      be.matmul(a, b, c);
      await settle(c); // pipelines compile on first use: not timed
      const runs = 3;
      const start = performance.now();
      for (let i = 0; i < runs; i++) be.matmul(a, b, c);
      await settle(c);
      const seconds = (performance.now() - start) / 1000 / runs;
      rate = (2 * n * n * n) / seconds;
      if (seconds >= 0.02) break;
    } finally {
      for (const t of [a, b, c]) t.dispose();
    }
  }
  return rate;
}

export async function planOnDevice(
  m: PlanModel,
  plan: TrainingPlan,
  be: Backend & { sync?(): Promise<void> },
  limits: DeviceLimits,
  device: string,
): Promise<DevicePlan> {
  const fit = deviceFit(m, plan, limits);
  const gemmFlops = await measureGemmRate(be);
  const f = flopsPerToken(m, plan.options);
  return { device, fit, gemmFlops, tokensPerSecond: gemmFlops / (f.forward + f.backward) };
}

export function formatDevicePlan(p: DevicePlan): string[] {
  const lines = [
    `on ${p.device}:`,
    `  ${'device memory'.padEnd(17)} ${formatBytes(p.fit.deviceBytes).padStart(11)}   at peak (weights, adapters, optimizer, activations)`,
    `  ${'largest tensor'.padEnd(17)} ${formatBytes(p.fit.largest[0]!.bytes).padStart(11)}   ${p.fit.largest[0]!.what} (weights are bound in windows; one binding holds ${formatBytes(p.fit.bindingLimit)})`,
    `  ${'speed'.padEnd(17)} ${p.tokensPerSecond.toFixed(p.tokensPerSecond < 10 ? 2 : 0).padStart(7)} tok/s   at most: model FLOPs at the measured f32 GEMM rate of ${(p.gemmFlops / 1e9).toFixed(1)} GFLOP/s`,
  ];
  if (p.fit.fits)
    lines.push(
      "  fits this GPU's buffer and binding limits (the adapter does not report its total memory)",
    );
  else for (const r of p.fit.reasons) lines.push(`  does not fit: ${r}`);
  return lines;
}
