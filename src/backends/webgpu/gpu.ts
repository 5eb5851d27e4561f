/**
 * Finding a WebGPU implementation and a device on it. In browsers that is `navigator.gpu`; in Node
 * it is Dawn through the optional `webgpu` npm package (prebuilt `dawn.node` inside the package,
 * which needs a Vulkan/Metal/D3D12 driver at run time — docs/webgpu.md says how to get a software
 * one without a GPU).
 */

export interface AdapterSummary {
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  /** A software or fallback adapter (lavapipe, SwiftShader): correct, slow. */
  readonly isFallback: boolean;
  readonly features: readonly string[];
  readonly limits: Readonly<Record<string, number>>;
}

export interface GpuDeviceHandle {
  readonly device: GPUDevice;
  readonly adapter: AdapterSummary;
  /** Features this device was created with (a subset of the adapter's). */
  readonly features: ReadonlySet<string>;
}

export interface OpenDeviceOptions {
  /** 'high-performance' (default) or 'low-power'. */
  readonly powerPreference?: GPUPowerPreference;
  /** Refuse fallback (software) adapters: what `--backend auto` wants. */
  readonly requireHardware?: boolean;
  /** Request `shader-f16` when the adapter has it (default true). */
  readonly f16?: boolean;
}

/** The limits worth raising to the adapter's maximum: big weights and big workgroups need them. */
const RAISED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBuffersPerShaderStage',
] as const;

let gpuPromise: Promise<GPU | null> | null = null;

/** The WebGPU entry point, or null when this platform has none (no package, no driver is not checked here). */
export function getGpu(): Promise<GPU | null> {
  gpuPromise ??= loadGpu();
  return gpuPromise;
}

async function loadGpu(): Promise<GPU | null> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (typeof process === 'undefined' || !process.versions?.node) return null;
  try {
    // A variable specifier keeps bundlers from pulling the Node package into browser builds.
    const specifier = 'webgpu';
    const mod = (await import(specifier)) as { create(flags: string[]): GPU; globals: object };
    // Dawn's classes (GPUBufferUsage, GPUMapMode, ...) become globals, as in a browser.
    Object.assign(globalThis, mod.globals);
    return mod.create([]);
  } catch {
    return null;
  }
}

export function summarizeAdapter(adapter: GPUAdapter): AdapterSummary {
  const info = adapter.info;
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === 'number') limits[key] = v;
  }
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    description: info.description,
    isFallback: Boolean((info as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    features: [...adapter.features].sort(),
    limits,
  };
}

/** Every adapter the platform offers (high-performance and low-power may differ), for `qlora info --devices`. */
export async function listAdapters(): Promise<AdapterSummary[]> {
  const gpu = await getGpu();
  if (!gpu) return [];
  const seen = new Set<string>();
  const out: AdapterSummary[] = [];
  for (const powerPreference of ['high-performance', 'low-power'] as const) {
    const adapter = await gpu.requestAdapter({ powerPreference });
    if (!adapter) continue;
    const s = summarizeAdapter(adapter);
    const key = `${s.vendor}|${s.architecture}|${s.description}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(s);
  }
  return out;
}

/** Opens a device with the adapter's largest limits; throws a message that says what is missing. */
export async function openDevice(options: OpenDeviceOptions = {}): Promise<GpuDeviceHandle> {
  const gpu = await getGpu();
  if (!gpu) {
    throw new Error(
      'webgpu: no WebGPU implementation here (in Node, install the optional "webgpu" package: npm install webgpu)',
    );
  }
  const adapter = await gpu.requestAdapter({
    powerPreference: options.powerPreference ?? 'high-performance',
  });
  if (!adapter) {
    throw new Error(
      'webgpu: no GPU adapter found (no Vulkan/Metal/D3D12 driver? docs/webgpu.md shows how to install a software adapter)',
    );
  }
  const summary = summarizeAdapter(adapter);
  if (options.requireHardware && summary.isFallback) {
    throw new Error(`webgpu: only a software adapter is available (${summary.description})`);
  }
  const requiredLimits: Record<string, number> = {};
  for (const key of RAISED_LIMITS) {
    const v = summary.limits[key];
    if (v !== undefined) requiredLimits[key] = v;
  }
  const features: GPUFeatureName[] = [];
  if ((options.f16 ?? true) && adapter.features.has('shader-f16')) features.push('shader-f16');
  if (adapter.features.has('subgroups')) features.push('subgroups' as GPUFeatureName);
  if (adapter.features.has('timestamp-query')) features.push('timestamp-query');
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  return { device, adapter: summary, features: new Set(features) };
}
