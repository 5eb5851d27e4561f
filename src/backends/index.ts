import type { Backend } from '../tensor/backend.js';
import type { AdapterSummary } from './webgpu/gpu.js';

export type { AdapterSummary } from './webgpu/gpu.js';

export type BackendName = 'ref' | 'cpu' | 'webgpu';
/** What a user may ask for: a backend, or 'auto' (a hardware GPU through WebGPU when present, else cpu). */
export type BackendChoice = BackendName | 'auto';
export const BACKEND_CHOICES = [
  'auto',
  'cpu',
  'webgpu',
  'ref',
] as const satisfies readonly BackendChoice[];

const cache = new Map<BackendName, Backend>();

/**
 * The backend registry. `ref` is pure TypeScript; `cpu` loads the native addon on first use (so
 * code that only needs ref never touches the addon); `webgpu` opens the default GPU adapter (Dawn
 * in Node through the optional `webgpu` package, navigator.gpu in browsers).
 */
export async function getBackend(name: BackendName): Promise<Backend> {
  const hit = cache.get(name);
  if (hit) return hit;
  let backend: Backend;
  switch (name) {
    case 'ref': {
      const { RefBackend } = await import('./ref/index.js');
      backend = new RefBackend();
      break;
    }
    case 'cpu': {
      const { CpuBackend } = await import('./cpu/index.js');
      backend = new CpuBackend();
      break;
    }
    case 'webgpu': {
      const { createWebGpuBackend } = await import('./webgpu/index.js');
      backend = await createWebGpuBackend();
      break;
    }
    default:
      throw new Error(`unknown backend '${String(name)}' (choose ref, cpu or webgpu)`);
  }
  cache.set(name, backend);
  return backend;
}

/**
 * Resolves a user's choice. 'auto' takes WebGPU only on a hardware adapter (a software one, such
 * as lavapipe or SwiftShader, is far slower than the native cpu backend) and otherwise cpu.
 */
export async function resolveBackend(
  choice: BackendChoice,
  options: ResolveOptions = {},
): Promise<Backend> {
  const computeDtype = options.computeDtype ?? 'f32';
  let backend: Backend;
  if (choice !== 'auto') {
    backend =
      computeDtype === 'f16' && choice === 'webgpu' ? await webgpuF16() : await getBackend(choice);
  } else {
    const hit = cache.get('webgpu');
    if (hit && !(hit as { adapter?: { isFallback?: boolean } }).adapter?.isFallback) backend = hit;
    else {
      try {
        const { createWebGpuBackend } = await import('./webgpu/index.js');
        backend = await createWebGpuBackend({ requireHardware: true });
        cache.set('webgpu', backend);
      } catch {
        backend = await getBackend('cpu');
      }
    }
    if (computeDtype === 'f16' && backend.name === 'webgpu') backend = await webgpuF16();
  }
  if (computeDtype === 'f16' && backend.name !== 'webgpu') {
    throw new Error(
      `--compute-dtype f16 needs the webgpu backend (on an adapter with shader-f16); '${backend.name}' computes in f32`,
    );
  }
  return backend;
}

export interface ResolveOptions {
  /** 'f16': the frozen-base 4-bit matmuls run on f16 tiles with f32 accumulation (webgpu with shader-f16). */
  readonly computeDtype?: 'f32' | 'f16';
}

let f16Backend: Promise<Backend> | null = null;

/** A second webgpu backend whose 4-bit matmuls compute in f16 (the f32 one stays as it is). */
function webgpuF16(): Promise<Backend> {
  f16Backend ??= import('./webgpu/index.js').then(({ createWebGpuBackend }) =>
    createWebGpuBackend({ computeDtype: 'f16' }),
  );
  return f16Backend;
}

/** This machine's WebGPU adapters (none without the optional `webgpu` package or a driver). */
export async function listGpuAdapters(): Promise<AdapterSummary[]> {
  const { listAdapters } = await import('./webgpu/gpu.js');
  return listAdapters();
}
