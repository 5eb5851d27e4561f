// Public API of qlora-ts (see docs/architecture.md for the layers).

// tensor and backends
export type { DType, HostArray } from './tensor/dtype.js';
export { Tensor, type DeviceStorage, type HostStorage, type Storage } from './tensor/tensor.js';
export { type Arena, type ArenaChunk, ChunkArena } from './tensor/arena.js';
export type {
  AdamW8bitState,
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
export { ropeTables, type RopeScaling } from './backends/rope-tables.js';

// quantization
export {
  quantize4bit,
  dequantize4bit,
  QLORA_DEFAULTS,
  type Quantize4bitOptions,
  type Quantized4bit,
} from './quant/quantize4bit.js';
export { uploadPacked4bit, disposePacked4bit } from './quant/upload.js';

// modules and models
export { DenseLinear, Linear4bit, LinearGgml, type FrozenLinear } from './nn/linear.js';
export {
  GGML_QUANT_TYPES,
  type GgmlQuantType,
  type GgmlWeight,
  dequantizeGgmlBlocks,
} from './quant/ggml-blocks.js';
export { LoraLinear, type LoraOptions } from './nn/lora.js';
export { Param } from './nn/param.js';
export {
  LlamaModel,
  KvCache,
  PROJECTIONS,
  type ModelBatch,
  type ProjectionName,
  type StepOptions,
} from './models/llama.js';
export type { CausalLM, ModelDims } from './models/causal-lm.js';
export type { ModelFamily } from './models/family.js';
export { FAMILIES, familyOf, tensorTable } from './models/registry.js';
export {
  buildLlama,
  LORA_DEFAULTS,
  type BuildConfig,
  type BuildOptions,
  type LoraConfig,
  type TensorSource,
} from './models/build.js';
export { openCheckpoint, type Checkpoint } from './io/checkpoint.js';
export { loadHfConfig, type LlamaConfig, type ModelConfig } from './io/config.js';
export { syntheticSource } from './models/synthetic.js';

// files
export { loadPeftAdapter, savePeftAdapter, applyPeftAdapter, type PeftAdapter } from './io/peft.js';
export { SafetensorsFile, writeSafetensors } from './io/safetensors.js';
export { readGgufMetadata, GgufReader } from './io/gguf.js';
export { exportGgufLora } from './export/gguf-lora.js';
export { loadGgufLoraAdapter, loadLoraAdapter } from './io/gguf-lora.js';
export { exportGgufModel } from './export/gguf-model.js';
export { convertCheckpoint } from './export/convert.js';

// tokenizers and data
export { loadTokenizer, type Tokenizer } from './tokenizer/index.js';
export {
  loadDataset,
  Batcher,
  ChatTemplate,
  type Batch,
  type DatasetOptions,
  type DatasetRows,
  type LoadedDataset,
} from './data/index.js';

// training and generation
// One call with `qlora train`'s defaults, and the pieces underneath it.
export { train, type TrainCallOptions, type TrainResult, type TrainRun } from './train/run.js';
export { defaultTrainOptions, defaultTrainSettings, type TrainSettings } from './train/settings.js';
export {
  Trainer,
  type BatchSource,
  type EvalMetrics,
  type StepMetrics,
  type TrainEvents,
  type TrainOptions,
  type TrainSummary,
} from './train/trainer.js';
export { AdamW, AdamW8bit, type Optimizer } from './train/optimizer.js';
export { learningRate } from './train/schedule.js';
export { generate, type GenerateOptions, type GenerationResult } from './generate/generate.js';
export { sampleToken, type SamplingOptions } from './generate/sampler.js';

// one call from a path to a ready model + tokenizer (+ adapter)
export { loadModel, type LoadOptions, type LoadedModel } from './load/load-model.js';
export { VERSION } from './version.js';
