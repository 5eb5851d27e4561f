/** The plan as text: the lines `qlora plan` and `qlora train` print, and the byte/count formats. */
import { formatBytes, formatCount } from '../tensor/units.js';
import type { TrainingPlan } from './plan.js';

export { formatBytes };

/** The plan as the lines `qlora plan` and `qlora train` print. */
export function formatPlan(plan: TrainingPlan, label = 'model'): string[] {
  const o = plan.options;
  const m = plan.memory;
  const q = o.quantization
    ? `4-bit, blocksize ${o.quantization.blocksize}${o.quantization.doubleQuant ? ', double quant' : ''}`
    : o.keptGguf
      ? `GGUF blocks as stored${typeof o.keptGguf === 'string' ? ` (${o.keptGguf.toUpperCase()})` : ''}`
      : 'f32';
  const rows: [string, number, string][] = [
    [
      'base weights',
      m.baseWeights,
      `${formatCount(plan.params.base)} params, ${plan.baseBitsPerParam.toFixed(2)} bits/param (projections ${plan.projectionBitsPerParam.toFixed(2)})`,
    ],
    ['adapters', m.adapters, `${formatCount(plan.params.lora)} LoRA params`],
    ['gradients', m.gradients, 'f32'],
    ['optimizer states', m.optimizerStates, o.optimizer],
    [
      'activations',
      m.activations,
      o.gradientCheckpointing
        ? 'layer inputs (checkpoints), loss buffers'
        : 'all layer tapes, loss buffers',
    ],
    ['workspace', m.workspace, "one layer's temporaries, kernel scratch"],
    ['runtime', m.runtime, 'Node.js, V8 heap, addon'],
  ];
  const lines = [
    `plan for ${label}: batch ${o.batchSize} × seq ${o.seqLen}, LoRA r=${o.rank} on ${o.targets === 'all-linear' ? 'all linear layers' : o.targets.join(',')}, ` +
      `${o.optimizer}, base ${q}, gradient checkpointing ${o.gradientCheckpointing ? 'on' : 'off'}`,
    ...rows.map(
      ([name, bytes, note]) => `  ${name.padEnd(17)} ${formatBytes(bytes).padStart(11)}   ${note}`,
    ),
    `  ${'predicted peak'.padEnd(17)} ${formatBytes(plan.peakBytes).padStart(11)}   of ${formatBytes(plan.totalMemoryBytes)} RAM`,
    speedLine(plan),
  ];
  for (const w of plan.warnings) lines.push(`  warning: ${w}`);
  return lines;
}

/** The speed row: tokens/s from the step's kernels timed on the run's backend, or why not. */
function speedLine(plan: TrainingPlan): string {
  const label = `  ${'predicted speed'.padEnd(17)}`;
  const s = plan.speed;
  if ('unmeasured' in s) return `${label}       –         not measured: ${s.unmeasured}`;
  const f = plan.flopsPerToken;
  const gflop = `${((f.forward + f.backward) / 1e9).toFixed(2)} GFLOP/token${f.recompute ? ` + ${(f.recompute / 1e9).toFixed(2)} recompute` : ''}`;
  const mfu =
    s.mfu !== null && s.peakFlops !== null
      ? `, ${(s.mfu * 100).toFixed(0)}% of the ${(s.peakFlops / 1e9).toFixed(0)} GFLOP/s FMA peak`
      : '';
  const top = s.split
    .slice(0, 3)
    .map((k) => `${k.kind} ${((k.seconds / s.stepSeconds) * 100).toFixed(0)}%`)
    .join(', ');
  return (
    `${label} ${s.tokensPerSecond.toFixed(s.tokensPerSecond < 10 ? 2 : 0).padStart(7)} tok/s   ` +
    `(${gflop}${mfu}; this step's ${s.kernels.distinct} distinct kernels timed on ${s.backend}` +
    `${s.kernels.timedNow < s.kernels.distinct ? `, ${s.kernels.distinct - s.kernels.timedNow} from earlier timings` : ''}: ${top})`
  );
}
