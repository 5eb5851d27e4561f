/**
 * The speed plan, measured on the machine that runs: the kernel calls of one real training step
 * (recorded by the memory planner, plan-kernels.ts) are each timed on the run's backend at their
 * own shapes, and a step takes their sum plus the JavaScript the recorded step ran between them.
 * Nothing is a machine constant: no peak, efficiency or bandwidth is assumed. Distinct calls are
 * few (a layer's calls repeat in every layer) and their timings are kept per machine and build
 * (kernel-times.ts), so a plan times a shape once. `npm run bench:train` reports how far the plan
 * is from the measured speed per shape.
 */
import { computeDtypeOf, measuresItself } from '../backends/capabilities.js';
import type { Backend } from '../tensor/backend.js';
import { cpuModel, KernelTimes } from './kernel-times.js';
import type { PlanOptions } from './plan.js';
import { type KernelCall, kernelSignature, timeKernel } from './plan-kernels.js';
import { parameterCounts, type PlanModel } from './plan-shapes.js';

export interface FlopsPerToken {
  /** Forward FLOPs (projections, vocabulary, LoRA, attention). */
  readonly forward: number;
  /** Backward FLOPs: input gradients through frozen weights, LoRA gradients, attention backward. */
  readonly backward: number;
  /** Extra forward of the layers under gradient checkpointing (not model FLOPs). */
  readonly recompute: number;
}

/** FLOPs per token (multiply-add = 2), counting causal attention's actual half of the scores. */
export function flopsPerToken(m: PlanModel, o: PlanOptions): FlopsPerToken {
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
  return { forward, backward, recompute };
}

/** Where a step's time goes, by kind of kernel. */
export interface StepSplit {
  readonly kind: string;
  readonly seconds: number;
}

export interface SpeedPlan {
  readonly tokensPerSecond: number;
  /** Seconds of one micro-batch step (forward, loss, backward, clipping, optimizer). */
  readonly stepSeconds: number;
  /** Of those, the JavaScript between kernels (measured when the step was recorded, not cached). */
  readonly hostSeconds: number;
  readonly flopsPerToken: FlopsPerToken;
  /** Model-FLOP utilisation against the measured f32 FMA peak, where the backend measures it. */
  readonly mfu: number | null;
  readonly peakFlops: number | null;
  /** Step time by kind of kernel (and 'host (JavaScript)' between kernels), largest first. */
  readonly split: readonly StepSplit[];
  /** Kernel calls per step, distinct ones, and how many were timed now (the rest came from the cache). */
  readonly kernels: {
    readonly calls: number;
    readonly distinct: number;
    readonly timedNow: number;
  };
  /** Seconds spent timing kernels for this plan. */
  readonly timingSeconds: number;
  /** The timings file (null: not kept). */
  readonly cacheFile: string | null;
  /** The backend timed, as it describes itself. */
  readonly backend: string;
}

export interface SpeedOptions {
  /** Timings to use and extend (default: this machine's file, kernel-times.ts). */
  readonly times?: KernelTimes;
  /** Stop timing after this many seconds and report the speed as unmeasured (default 60). */
  readonly budgetSeconds?: number;
  /** Bytes the argument copies of one timed call may hold (timeKernel's maxBytes). */
  readonly timingBytes?: number;
}

const KINDS: readonly (readonly [RegExp, string])[] = [
  [
    /^(matmul4bit|matmul4bitInputGrad|dequantize4bit|embedding4bit|matmulGgml|matmulGgmlInputGrad|dequantizeGgml)$/,
    '4-bit matmuls',
  ],
  [/^matmul$/, 'matmuls'],
  [/^attention/, 'attention'],
  [/^crossEntropy$/, 'loss'],
  [/^adamw/, 'optimizer'],
];

/** The split's entry for the JavaScript a step runs between kernels. */
const HOST_KIND = 'host (JavaScript)';

function kindOf(op: string): string {
  return KINDS.find(([re]) => re.test(op))?.[1] ?? 'norms, rope, elementwise';
}

/** The FMA peak (FLOP/s), measured once per machine and build (kept with the timings). */
function fmaPeak(be: Backend, times: KernelTimes): number | null {
  if (!measuresItself(be)) return null;
  // Kept as the seconds one GFLOP takes at the peak, beside the kernels' seconds.
  const key = '#fma-peak-f32';
  const cached = times.get(key);
  if (cached !== undefined && cached > 0) return 1e9 / cached;
  const peak = be.measureFmaPeak('f32');
  times.set(key, 1e9 / peak);
  return peak;
}

/** Bumped when timeKernel measures differently (5: arguments cycle through up to 64 MiB of copies, each warmed first). */
const TIMING_METHOD = 5;

/** The timings this machine keeps for `be`. */
export function kernelTimesFor(be: Backend): KernelTimes {
  return KernelTimes.open({
    cpu: cpuModel(),
    backend: be.describe?.() ?? be.name,
    computeDtype: computeDtypeOf(be),
    build: measuresItself(be) ? be.buildId : '',
    // How kernels are timed (timeKernel): timings taken another way are not mixed in.
    timing: TIMING_METHOD,
  });
}

/** One recorded training step (measureTrainingMemory): its kernel calls, host time and tokens. */
export interface RecordedStep {
  readonly stepKernels: readonly KernelCall[];
  /** Seconds of JavaScript between the kernels (recordKernels). */
  readonly stepHostSeconds: number;
  readonly stepTokens: number;
}

/**
 * Tokens/s of training `m` with options `o` on `be`: the recorded `step`'s calls timed on `be`,
 * plus its host time. Returns why not instead when there is nothing to time or the timing would
 * take longer than the budget.
 */
export async function predictSpeed(
  m: PlanModel,
  o: PlanOptions,
  step: RecordedStep,
  be: Backend,
  options: SpeedOptions = {},
): Promise<SpeedPlan | { readonly unmeasured: string }> {
  const { stepKernels: calls, stepTokens: tokens } = step;
  if (calls.length === 0) return { unmeasured: 'nothing is trained (rank 0)' };
  const times = options.times ?? kernelTimesFor(be);
  const budget = options.budgetSeconds ?? 60;
  const bySignature = new Map<string, { call: KernelCall; count: number }>();
  for (const call of calls) {
    const sig = kernelSignature(call);
    const entry = bySignature.get(sig);
    if (entry) entry.count++;
    else bySignature.set(sig, { call, count: 1 });
  }
  const start = performance.now();
  let timedNow = 0;
  let stepSeconds = 0;
  const split = new Map<string, number>();
  try {
    for (const [sig, { call, count }] of bySignature) {
      let seconds = times.get(sig);
      if (seconds === undefined) {
        if ((performance.now() - start) / 1000 > budget)
          return {
            unmeasured: `timing this step's kernels on ${be.describe?.() ?? be.name} took more than ${budget} s`,
          };
        seconds = await timeKernel(be, call, { maxBytes: options.timingBytes });
        times.set(sig, seconds);
        timedNow++;
      }
      stepSeconds += seconds * count;
      const kind = kindOf(call.op);
      split.set(kind, (split.get(kind) ?? 0) + seconds * count);
    }
    if (step.stepHostSeconds > 0) {
      stepSeconds += step.stepHostSeconds;
      split.set(HOST_KIND, step.stepHostSeconds);
    }
    const peakFlops = fmaPeak(be, times);
    const flops = flopsPerToken(m, o);
    const tokensPerSecond = tokens / stepSeconds;
    return {
      tokensPerSecond,
      stepSeconds,
      hostSeconds: step.stepHostSeconds,
      flopsPerToken: {
        forward: flops.forward,
        backward: flops.backward,
        recompute: flops.recompute,
      },
      mfu: peakFlops ? ((flops.forward + flops.backward) * tokensPerSecond) / peakFlops : null,
      peakFlops,
      split: [...split]
        .map(([kind, seconds]) => ({ kind, seconds }))
        .sort((a, b) => b.seconds - a.seconds),
      kernels: { calls: calls.length, distinct: bySignature.size, timedNow },
      timingSeconds: (performance.now() - start) / 1000,
      cacheFile: times.file,
      backend: be.describe?.() ?? be.name,
    };
  } finally {
    times.save();
  }
}
