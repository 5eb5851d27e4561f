/**
 * The speed model: FLOP accounting per token (docs/performance.md § FLOP accounting) divided by
 * calibrated rates — GEMM work at a fraction of the FMA peak, attention at its own rate, and
 * memory-bound passes at a bandwidth.
 */
import { hostProcess } from '../io/host.js';
import type { PlanOptions } from './plan.js';
import { parameterCounts, type PlanModel } from './plan-shapes.js';

/** Machine facts the speed model needs. */
export interface MachineModel {
  /** Measured fp32 FMA peak of all threads, FLOP/s (the engine bench's number). */
  readonly peakFlops: number;
  /** Fraction of the peak dense GEMMs reach at these shapes. */
  readonly gemmEfficiency: number;
  /** Fraction of the peak the 4-bit GEMMs (dequantizing into packed panels) reach. */
  readonly gemm4bitEfficiency: number;
  /** Fraction of the peak the skinny LoRA products (one side of size r) reach. */
  readonly loraEfficiency: number;
  /** Fraction of the peak flash attention reaches. */
  readonly attentionEfficiency: number;
  /** Bytes/s of the memory-bound passes (norms, RoPE, SwiGLU, residuals, loss). */
  readonly bandwidth: number;
  readonly totalMemoryBytes: number;
}

/**
 * Defaults for the project's 2-core machine (AMD EPYC, AVX-512) when idle: FMA peak 2 × ≈270
 * GFLOP/s (benchFmaPeak, one thread), efficiencies fitted to `npm run bench:train` on an idle
 * machine (stories15M to Llama-2-7B within 3%; docs/performance.md). Pass measured values for
 * other machines.
 */
export function defaultMachine(overrides: Partial<MachineModel> = {}): MachineModel {
  return {
    peakFlops: 540e9,
    gemmEfficiency: 0.8,
    gemm4bitEfficiency: 0.85,
    loraEfficiency: 0.4,
    attentionEfficiency: 0.4,
    bandwidth: 25e9,
    totalMemoryBytes: hostProcess.totalMemoryBytes(),
    ...overrides,
  };
}

export interface FlopsPerToken {
  /** Forward FLOPs (projections, vocabulary, LoRA, attention). */
  readonly forward: number;
  /** Backward FLOPs: input gradients through frozen weights, LoRA gradients, attention backward. */
  readonly backward: number;
  /** Extra forward of the layers under gradient checkpointing (not model FLOPs). */
  readonly recompute: number;
}

/** FLOPs per token (multiply-add = 2), counting causal attention's actual half of the scores. */
export function flopsPerToken(
  m: PlanModel,
  o: PlanOptions,
): FlopsPerToken & { gemm: number; gemm4bit: number; lora: number; attention: number } {
  const c = parameterCounts(m, o);
  const qDim = m.numHeads * m.headDim;
  const T = o.seqLen;
  const vocab = m.vocabSize * m.hiddenSize;
  const proj = c.projections;
  const loraFwd = 2 * c.lora;
  // Causal attention: scores and P·V over on average T/2 keys, 2 FLOPs per multiply-add.
  const attnFwd = m.numLayers * 2 * 2 * (T / 2) * qDim;
  const forward = 2 * proj + 2 * vocab + loraFwd + attnFwd;
  // Input gradients through every frozen matrix (+ lm_head), LoRA: dB, dt, dA, dx (4 products),
  // attention backward ≈ 2.5× its forward (recomputed scores, dQ, dK, dV).
  const backward = 2 * proj + 2 * vocab + 2 * loraFwd + 2.5 * attnFwd;
  const recompute = o.gradientCheckpointing ? 2 * proj + loraFwd + attnFwd : 0;
  const quantized = o.quantization !== null;
  const projWork = 2 * proj * (o.gradientCheckpointing ? 3 : 2);
  return {
    forward,
    backward,
    recompute,
    gemm: 4 * vocab + (quantized ? 0 : projWork),
    gemm4bit: quantized ? projWork : 0,
    lora: loraFwd * (o.gradientCheckpointing ? 4 : 3),
    attention: attnFwd * (o.gradientCheckpointing ? 4.5 : 3.5),
  };
}

/** Bytes moved per token by the memory-bound passes (reads + writes of activations, f32). */
function memoryBoundBytesPerToken(m: PlanModel, o: PlanOptions): number {
  const d = m.hiddenSize;
  const f = m.intermediateSize;
  const qDim = m.numHeads * m.headDim;
  // Per layer: 2 norms (+ backward), RoPE on q,k (+ inverse), SwiGLU (+ backward), residual adds,
  // roughly 40 d-sized and 8 f-sized passes forward+backward; the loss reads/writes V logits 3×.
  const perLayer = (40 * d + 8 * f + 6 * qDim) * 4 * (o.gradientCheckpointing ? 1.3 : 1);
  return m.numLayers * perLayer + 3 * 2 * m.vocabSize * 4;
}

/** Tokens/s of training `m` with options `o` on `machine`, and the model-FLOP utilisation that implies. */
export function predictSpeed(
  m: PlanModel,
  o: PlanOptions,
  machine: MachineModel,
): { flopsPerToken: FlopsPerToken; tokensPerSecond: number; mfu: number } {
  const flops = flopsPerToken(m, o);
  const p = machine.peakFlops;
  const secondsPerToken =
    flops.gemm / (p * machine.gemmEfficiency) +
    flops.gemm4bit / (p * machine.gemm4bitEfficiency) +
    flops.lora / (p * machine.loraEfficiency) +
    flops.attention / (p * machine.attentionEfficiency) +
    memoryBoundBytesPerToken(m, o) / machine.bandwidth;
  const tokensPerSecond = 1 / secondsPerToken;
  return {
    flopsPerToken: { forward: flops.forward, backward: flops.backward, recompute: flops.recompute },
    tokensPerSecond,
    mfu: ((flops.forward + flops.backward) * tokensPerSecond) / p,
  };
}
