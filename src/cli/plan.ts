/**
 * `qlora plan --model M [training options]`: predicted peak memory (broken down) and tokens/s of a
 * QLoRA run, from the model's shape alone (nothing is loaded), with a warning when it won't fit.
 */
import type { Command } from 'commander';
import { PROJECTIONS, type ProjectionName } from '../models/llama.js';
import { NAMED_SHAPES, type PlanOptions, PLAN_DEFAULTS, printTrainingPlan, resolvePlanModel } from '../train/plan.js';

function positiveInt(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a positive integer, got '${v}'`);
    return n;
  };
}

/** --targets: 'all-linear' or a comma list of projection names. */
export function parseTargets(v: string): PlanOptions['targets'] {
  if (v === 'all-linear' || v === 'all') return 'all-linear';
  const names = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!(PROJECTIONS as readonly string[]).includes(n)) {
      throw new Error(`unknown LoRA target '${n}' (choose from ${PROJECTIONS.join(', ')} or all-linear)`);
    }
  }
  if (names.length === 0) throw new Error('--targets is empty');
  return names as ProjectionName[];
}

interface PlanCliOptions {
  model: string;
  seqLen: number;
  batchSize: number;
  rank: number;
  targets: PlanOptions['targets'];
  gradCheckpointing: boolean;
  optimizer: string;
  lossChunkRows: number;
  quant: string;
  loraDropout: string;
  quantizeHead?: boolean;
  quantizeEmbeddings?: boolean;
}

export function registerPlanCommand(program: Command): void {
  program
    .command('plan')
    .description('predict the peak memory and speed of QLoRA training (nothing is loaded)')
    .requiredOption('-m, --model <model>', `model folder / .gguf / .bin, or a shape: ${NAMED_SHAPES.join(', ')}`)
    .option('--seq-len <n>', 'tokens per sequence', positiveInt('--seq-len'), PLAN_DEFAULTS.seqLen)
    .option('--batch-size <n>', 'sequences per micro-batch', positiveInt('--batch-size'), PLAN_DEFAULTS.batchSize)
    .option('-r, --rank <n>', 'LoRA rank', positiveInt('--rank'), PLAN_DEFAULTS.rank)
    .option('--targets <list>', 'LoRA targets: all-linear or q_proj,k_proj,...', parseTargets, PLAN_DEFAULTS.targets)
    .option('--grad-checkpointing', 'recompute layer activations in backward (default)', true)
    .option('--no-grad-checkpointing', 'keep every layer\'s activations')
    .option('--optimizer <kind>', 'adamw or adamw8bit', PLAN_DEFAULTS.optimizer)
    .option('--loss-chunk-rows <n>', 'rows of logits alive at once', positiveInt('--loss-chunk-rows'), PLAN_DEFAULTS.lossChunkRows)
    .option('--quant <kind>', 'base weights: nf4 (double quant), nf4-nodq, or f32', 'nf4')
    .option('--lora-dropout <p>', 'LoRA dropout (> 0 keeps dropped-out input copies)', '0')
    .option('--quantize-head', 'an untied lm_head in 4-bit too (train --quantize-head)')
    .option('--quantize-embeddings', 'the embedding table in 4-bit too (train --quantize-embeddings)')
    .action((o: PlanCliOptions) => {
      if (o.optimizer !== 'adamw' && o.optimizer !== 'adamw8bit') throw new Error(`--optimizer must be adamw or adamw8bit, got '${o.optimizer}'`);
      const quantization = { nf4: { blocksize: 64, doubleQuant: true }, 'nf4-nodq': { blocksize: 64, doubleQuant: false }, f32: null }[o.quant];
      if (quantization === undefined) throw new Error(`--quant must be nf4, nf4-nodq or f32, got '${o.quant}'`);
      const loraDropout = Number(o.loraDropout);
      if (!(loraDropout >= 0 && loraDropout < 1)) throw new Error(`--lora-dropout must be in [0, 1), got '${o.loraDropout}'`);
      const { config, label } = resolvePlanModel(o.model);
      const plan = printTrainingPlan(config, {
        seqLen: o.seqLen, batchSize: o.batchSize, rank: o.rank, targets: o.targets, gradientCheckpointing: o.gradCheckpointing,
        optimizer: o.optimizer, lossChunkRows: o.lossChunkRows, quantization, loraDropout, quantizeHead: o.quantizeHead ?? false, quantizeEmbedding: o.quantizeEmbeddings ?? false,
      }, label);
      if (!plan.fits) process.exitCode = 2;
    });
}
