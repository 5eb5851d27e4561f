import type { Backend } from '../tensor/backend.js';
import type { AdapterSummary } from './webgpu/gpu.js';

export type { AdapterSummary } from './webgpu/gpu.js';

export type BackendName = 'ref' | 'cpu' | 'webgpu';
/** What a user may ask for: a backend, or 'auto' (a hardware GPU through WebGPU when present, else cpu). */
export type BackendChoice = BackendName | 'auto';
export const BACKEND_CHOICES = ['auto', 'cpu', 'webgpu', 'ref'] as const satisfies readonly BackendChoice[];

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
export async function resolveBackend(choice: BackendChoice): Promise<Backend> {
  if (choice !== 'auto') return getBackend(choice);
  const hit = cache.get('webgpu');
  if (hit && !(hit as { adapter?: { isFallback?: boolean } }).adapter?.isFallback) return hit;
  try {
    const { createWebGpuBackend } = await import('./webgpu/index.js');
    const backend = await createWebGpuBackend({ requireHardware: true });
    cache.set('webgpu', backend);
    return backend;
  } catch {
    return getBackend('cpu');
  }
}

/** This machine's WebGPU adapters (none without the optional `webgpu` package or a driver). */
export async function listGpuAdapters(): Promise<AdapterSummary[]> {
  const { listAdapters } = await import('./webgpu/gpu.js');
  return listAdapters();
}
