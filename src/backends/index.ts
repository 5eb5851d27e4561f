import type { Backend } from '../tensor/backend.js';

export type BackendName = 'ref' | 'cpu' | 'webgpu';

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
