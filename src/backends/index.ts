import type { Backend } from '../tensor/backend.js';

export type BackendName = 'ref' | 'cpu';

const cache = new Map<BackendName, Backend>();

/**
 * The backend registry. `ref` is pure TypeScript; `cpu` loads the native addon on first use (so
 * code that only needs ref never touches the addon).
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
    default:
      throw new Error(`unknown backend '${String(name)}' (choose ref or cpu)`);
  }
  cache.set(name, backend);
  return backend;
}
