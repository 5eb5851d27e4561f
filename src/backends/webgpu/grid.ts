/**
 * Workgroup grids. One dimension holds at most maxComputeWorkgroupsPerDimension (65,535 by
 * default) workgroups, so large 1-D problems use grid-stride loops over a capped grid, and
 * row-parallel kernels spread rows over x and y.
 */
import type { GpuContext } from './context.js';

/** Workgroups for a grid-stride loop over n items, `perGroup` items per workgroup per pass. */
export function strideGroups(ctx: GpuContext, n: number, perGroup: number): number {
  return Math.max(1, Math.min(Math.ceil(n / perGroup), ctx.maxWorkgroups, 4096));
}

/** [x, y] workgroups covering `count` independent units (one unit per workgroup). */
export function unitGroups(ctx: GpuContext, count: number): [number, number] {
  if (count <= ctx.maxWorkgroups) return [count, 1];
  const x = ctx.maxWorkgroups;
  return [x, Math.ceil(count / x)];
}

/** WGSL: the unit index of a workgroup laid out by unitGroups (needs @builtin(num_workgroups) nwg). */
export const UNIT_INDEX =
  'fn unitIndex(wg: vec3u, nwg: vec3u) -> u32 { return wg.y * nwg.x + wg.x; }';

/** WGSL: grid-stride start and step for one invocation (needs gid and nwg builtins and WG). */
export const STRIDE = `
fn strideStart(gid: vec3u) -> u32 { return gid.x; }
fn strideStep(nwg: vec3u) -> u32 { return nwg.x * WG; }`;
