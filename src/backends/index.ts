import type { Backend, ComputeDtype } from '../tensor/backend.js';
import { computeDtypeOf, hasComputeDtypes } from './capabilities.js';
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
  if (computeDtype === 'bf16' || computeDtype === 'auto') {
    return withComputeDtype(await resolveBackend(choice), computeDtype);
  }
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
      `--compute-dtype f16 needs the webgpu backend (on an adapter with shader-f16); '${backend.name}' computes in ${dtypesOf(backend)}`,
    );
  }
  return backend;
}

/** The precisions `be` can compute its 4-bit matmuls in here, for messages. */
function dtypesOf(be: Backend): string {
  if (!hasComputeDtypes(be)) return computeDtypeOf(be);
  const list = be.computeDtypes;
  return (list.includes('f32') ? ['f32', ...list.filter((d) => d !== 'f32')] : list).join(' or ');
}

/**
 * `be` computing in `dtype` ('auto': the backend's fastest here, e.g. bf16 on a cpu with
 * AVX512_BF16, else what it computes in now). Asked of the backend (capabilities.ts), not its name.
 */
export function withComputeDtype(be: Backend, dtype: ComputeDtype | 'auto'): Backend {
  if (dtype === 'auto')
    return hasComputeDtypes(be) ? be.withComputeDtype(be.computeDtypes[0]!) : be;
  if (computeDtypeOf(be) === dtype) return be;
  if (!hasComputeDtypes(be) || !be.computeDtypes.includes(dtype)) {
    const hint =
      dtype === 'bf16'
        ? 'cpu on a CPU with AVX512_BF16 (AMD Zen 4+, Intel Cooper Lake / Sapphire Rapids+) and an AVX-512 build of the addon'
        : 'webgpu on an adapter with shader-f16';
    throw new Error(
      `--compute-dtype ${dtype} needs ${hint}; '${be.name}'${be.describe ? ` (${be.describe()})` : ''} computes in ${dtypesOf(be)}`,
    );
  }
  return be.withComputeDtype(dtype);
}

/** `--compute-dtype`: a precision, or 'auto' (the backend's fastest here). */
export type ComputeDtypeChoice = ComputeDtype | 'auto';
export const COMPUTE_DTYPE_CHOICES = [
  'auto',
  'bf16',
  'f32',
  'f16',
] as const satisfies readonly ComputeDtypeChoice[];

export interface ResolveOptions {
  /**
   * Precision of the frozen-base 4-bit matmuls (default 'f32': exact parity with the ref backend).
   * 'bf16': cpu with AVX512_BF16; 'f16': webgpu with shader-f16; both accumulate in f32. 'auto':
   * the backend's fastest here (the CLI's default).
   */
  readonly computeDtype?: ComputeDtypeChoice;
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
