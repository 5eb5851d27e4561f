/** What `qlora info --devices` and `qlora backends` print about this machine's compute devices. */
import { getBackend, listGpuAdapters } from '../backends/index.js';
import { formatBytes } from './options.js';

const SHOWN_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const;

export async function describeDevices(): Promise<string[]> {
  const lines: string[] = [];
  for (const name of ['cpu', 'ref'] as const) {
    const be = await getBackend(name);
    lines.push(`${name.padEnd(8)}${be.describe?.() ?? ''}`);
  }
  const adapters = await listGpuAdapters();
  if (adapters.length === 0) {
    lines.push(
      'webgpu  no adapter (in Node: the optional "webgpu" package and a Vulkan/Metal/D3D12 driver; docs/webgpu.md)',
    );
    return lines;
  }
  adapters.forEach((a, i) => {
    const kind = a.isFallback
      ? 'software adapter: correct but slow; --backend auto uses cpu'
      : 'hardware adapter';
    lines.push(
      `webgpu  [${i}] ${a.description || a.architecture || a.vendor} (${a.vendor}${a.architecture ? `, ${a.architecture}` : ''}; ${kind})`,
    );
    lines.push(`          features: ${a.features.join(', ') || 'none'}`);
    for (const key of SHOWN_LIMITS) {
      const v = a.limits[key];
      if (v === undefined) continue;
      lines.push(
        `          ${key}: ${key.startsWith('maxBuffer') || key.startsWith('maxStorageBufferBinding') || key.endsWith('StorageSize') ? formatBytes(v) : String(v)}`,
      );
    }
  });
  return lines;
}
