// Public API of qlora-ts.
export type { DType, HostArray } from './tensor/dtype.js';
export { Tensor } from './tensor/tensor.js';
export type { Arena } from './tensor/arena.js';
export type {
  AdamWOptions,
  AttentionOptions,
  Backend,
  MatmulOptions,
  MemoryStats,
  NestedAbsmax,
  Packed4bitWeight,
  RopeLayout,
} from './tensor/backend.js';
export { getBackend, type BackendName } from './backends/index.js';
export { VERSION } from './version.js';
