/**
 * Does a training run fit a WebGPU device? Two kinds of limit decide it. Hard ones the adapter
 * reports: every tensor is one GPUBuffer (≤ maxBufferSize), and activations are bound whole by
 * their kernels (≤ maxStorageBufferBindingSize; a browser's SwiftShader adapter binds at most 1 GiB,
 * the WebGPU default is 128 MiB) while weights are bound in row windows. And the memory the run needs in all (the plan's peak without the host
 * runtime), which browsers do not reveal for the GPU: it is checked only against a budget the
 * caller knows (e.g. navigator.deviceMemory for a software adapter that uses system RAM).
 */
import type { PlanModel, TrainingPlan } from './plan.js';
import { formatBytes } from './plan.js';

export interface DeviceLimits {
  readonly maxBufferSize: number;
  readonly maxStorageBufferBindingSize: number;
}

export interface DeviceBuffer {
  readonly what: string;
  readonly bytes: number;
  /**
   * Weights the kernels bind in row windows (matmul operands, embedding tables, 4-bit weights):
   * they need only fit one buffer. Activations are bound whole, so they must fit one binding.
   */
  readonly windowed: boolean;
}

export interface DeviceFit {
  readonly fits: boolean;
  /** Why it does not fit (empty when it does), or what is close. */
  readonly reasons: string[];
  /** The largest single tensors of the run, biggest first. */
  readonly largest: DeviceBuffer[];
  /** What the run keeps on the device at its peak (the plan without the host runtime). */
  readonly deviceBytes: number;
  /** The most one binding can take on this device. */
  readonly bindingLimit: number;
}

/** The run's biggest single tensors (each is one buffer bound whole by some kernel). */
export function largestTensors(m: PlanModel, plan: TrainingPlan): DeviceBuffer[] {
  const o = plan.options;
  const rows = o.batchSize * o.seqLen;
  const q = o.quantization;
  const matrix = (r: number, c: number, quantized: boolean) =>
    quantized ? Math.ceil((r * c) / 2) : r * c * 4;
  const out: DeviceBuffer[] = [
    {
      what: `embedding table ${m.vocabSize} × ${m.hiddenSize} ${o.quantizeEmbedding && q ? '4-bit' : 'f32'}`,
      bytes: matrix(m.vocabSize, m.hiddenSize, Boolean(o.quantizeEmbedding && q)),
      windowed: true,
    },
    {
      what: `logits chunk ${Math.min(o.lossChunkRows, rows)} × ${m.vocabSize} f32`,
      bytes: Math.min(o.lossChunkRows, rows) * m.vocabSize * 4,
      windowed: false,
    },
    {
      what: `MLP activation ${rows} × ${m.intermediateSize} f32`,
      bytes: rows * m.intermediateSize * 4,
      windowed: false,
    },
    {
      what: `4-bit MLP weight ${m.intermediateSize} × ${m.hiddenSize}`,
      bytes: matrix(m.intermediateSize, m.hiddenSize, Boolean(q)),
      windowed: true,
    },
  ];
  if (!m.tieWordEmbeddings) {
    out.push({
      what: `lm_head ${m.vocabSize} × ${m.hiddenSize} ${o.quantizeHead && q ? '4-bit' : 'f32'}`,
      bytes: matrix(m.vocabSize, m.hiddenSize, Boolean(o.quantizeHead && q)),
      windowed: true,
    });
  }
  return out.sort((a, b) => b.bytes - a.bytes);
}

/**
 * Checks a plan against a device's limits and, when known, a memory budget in bytes.
 */
export function deviceFit(
  m: PlanModel,
  plan: TrainingPlan,
  limits: DeviceLimits,
  memoryBudget: number | null = null,
): DeviceFit {
  const bindingLimit = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
  const largest = largestTensors(m, plan);
  const reasons: string[] = [];
  for (const b of largest) {
    // Every tensor is one buffer; only tensors bound whole must also fit one binding.
    const limit = b.windowed ? limits.maxBufferSize : bindingLimit;
    if (b.bytes > limit) {
      const which =
        !b.windowed && limits.maxStorageBufferBindingSize <= limits.maxBufferSize
          ? 'maxStorageBufferBindingSize'
          : 'maxBufferSize';
      reasons.push(
        `the ${b.what} takes ${formatBytes(b.bytes)}, over this GPU's ${which} of ${formatBytes(limit)}`,
      );
    }
  }
  const deviceBytes = plan.peakBytes - plan.memory.runtime;
  if (memoryBudget !== null && deviceBytes > memoryBudget) {
    reasons.push(
      `the run needs ${formatBytes(deviceBytes)} on the GPU, more than the ${formatBytes(memoryBudget)} available`,
    );
  }
  return { fits: reasons.length === 0, reasons, largest, deviceBytes, bindingLimit };
}
