import path from 'node:path';
import { isHubModelId, localDataPath, localModelPath } from './hub-args.js';
import type { Command } from 'commander';
import { generate } from '../generate/generate.js';
import { modelName } from '../io/model-name.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Tokenizer } from '../tokenizer/types.js';
import { train } from '../train/run.js';
import { modelCard, writeRecipe } from './recipe.js';
import { formatBytes, formatCount } from './options.js';
import { ProgressLine, bar, duration } from './progress.js';
import { resolveTrainConfig, type TrainConfig } from './train-config.js';
import { addTrainOptions, trainSettings } from './train-options.js';

export function registerTrainCommand(program: Command): void {
  const cmd = program
    .command('train')
    .description(
      'QLoRA fine-tuning: quantize the base to 4-bit, attach LoRA adapters, train them on your data.\nWith no --model and --data it runs the bundled demo (stories260K on a tiny-shakespeare excerpt).',
    );
  addTrainOptions(cmd);
  cmd.action(async (flags: Record<string, unknown>) => {
    const { values, fileKeys, demo, source } = trainSettings(cmd, flags);
    if (!demo && values.output === undefined)
      throw new Error('--output is required (the folder for the adapter and checkpoints)');
    if (!demo && (values.model === undefined || values.data === undefined))
      throw new Error('give both --model and --data (or neither, for the demo)');
    const config = resolveTrainConfig(values, source, fileKeys);
    await runTraining(config, demo);
  });
}

async function sample(
  model: CausalLM,
  tokenizer: Tokenizer,
  prompt: string,
  tokens: number,
): Promise<string> {
  const arena = model.backend.createArena(1 << 20, 'sample');
  try {
    let ids = tokenizer.encode(prompt, { addSpecialTokens: false });
    if (tokenizer.bosId !== null) ids = [tokenizer.bosId, ...ids];
    const r = await generate(model, tokenizer, ids, arena, { maxTokens: tokens, temperature: 0 });
    return prompt + r.text;
  } finally {
    arena.dispose();
  }
}

export async function runTraining(config: TrainConfig, demo: boolean): Promise<void> {
  const log = (s: string) => process.stderr.write(`${s}\n`);
  if (demo)
    log(
      `qlora train: no --model/--data given, running the demo: ${path.basename(config.model)} on ${path.basename(config.data)} → ${config.output}/`,
    );
  const {
    model: modelArg,
    data: dataArg,
    output,
    samplePrompt,
    sampleTokens,
    split,
    ggufFile,
    ...settings
  } = config;
  // A Hub id becomes its snapshot in the Hugging Face cache (downloaded when missing): the model
  // and the data, before the plan, so a gated model or a missing split stops the run here.
  const hubModel = isHubModelId(modelArg);
  const modelPath = await localModelPath(modelArg, { ggufFile });
  const dataPath = await localDataPath(dataArg, { split });
  const baseName = hubModel ? modelArg.split('@')[0]! : modelName(modelPath);
  const sampling = samplePrompt !== undefined && sampleTokens > 0;
  const progress = new ProgressLine();
  let maxSteps = 1;
  let result;
  try {
    // The library's train(): the same run, with progress lines and samples around it.
    result = await train({
      ...settings,
      model: modelPath,
      data: dataPath,
      output,
      ...(split !== undefined ? { split } : {}),
      baseModelName: baseName,
      // A Hub model is recorded by its id (found again through the cache on any machine), except
      // one GGUF file of a repository, which is recorded by its path.
      baseModelPath: hubModel && ggufFile === undefined ? modelArg : path.resolve(modelPath),
      modelLabel: hubModel ? modelArg : path.basename(path.resolve(modelArg)),
      onLog: log,
      onStart: async (run) => {
        maxSteps = run.maxSteps;
        if (sampling)
          log(
            `\n--- sample before training ---\n${await sample(run.model.model, run.tokenizer, samplePrompt, sampleTokens)}\n`,
          );
      },
      onStep: (m) => {
        const eta = ((maxSteps - m.step) * m.elapsedSeconds) / Math.max(m.step, 1);
        progress.update(
          `step ${m.step}/${maxSteps} ${bar(m.step / maxSteps)} ${m.epoch !== undefined ? `epoch ${m.epoch.toFixed(2)} ` : ''}loss ${m.loss.toFixed(4)} lr ${m.lr.toExponential(2)} ${Math.round(m.tokensPerSecond)} tok/s ETA ${duration(eta)}${m.skipped ? ' (skipped: non-finite)' : ''}`,
          m.step === maxSteps,
        );
      },
      onEval: (m) =>
        progress.log(
          `eval @ step ${m.step}: loss ${m.evalLoss.toFixed(4)}, perplexity ${m.perplexity.toFixed(2)}`,
        ),
      onCheckpoint: (dir) => progress.log(`checkpoint: ${dir}`),
      onResume: (dir, step) => progress.log(`resumed from ${dir} at step ${step}`),
      onLoadBest: (step, loss) =>
        progress.log(
          `--load-best: the final adapter holds the weights of step ${step ?? '?'} (lowest eval loss ${loss?.toFixed(4) ?? 'n/a'})`,
        ),
      onEnd: async (run) => {
        progress.done();
        if (sampling)
          log(
            `\n--- sample after training ---\n${await sample(run.model.model, run.tokenizer, samplePrompt, sampleTokens)}\n`,
          );
      },
    });
  } catch (err) {
    progress.done();
    throw err;
  }
  const summary = result;
  log(
    `done (${stopReason(summary.stoppedBy, config.maxSteps, config.epochs)}): ${summary.steps} steps, ${formatCount(summary.tokensSeen)} tokens (${formatCount(summary.lossTokensSeen)} with loss) in ${duration(summary.seconds)}` +
      `${summary.seconds > 0 ? `, ${Math.round(summary.tokensSeen / summary.seconds)} tok/s` : ''}; ` +
      `final train loss ${summary.finalTrainLoss?.toFixed(4) ?? 'n/a'}, eval loss ${summary.finalEvalLoss !== null ? `${summary.finalEvalLoss.toFixed(4)} (step ${summary.finalEvalStep})` : 'n/a'}; peak memory ${formatBytes(summary.peakRssBytes)}`,
  );
  // The recipe and a model card, next to the adapter.
  writeRecipe(
    config.output,
    config,
    modelCard({
      config,
      baseName,
      format: summary.format,
      trainExamples: summary.trainExamples,
      validExamples: summary.validExamples,
      steps: summary.steps,
      tokens: summary.tokensSeen,
      lossTokens: summary.lossTokensSeen,
      finalTrainLoss: summary.finalTrainLoss,
      finalEvalLoss: summary.finalEvalLoss,
      finalEvalStep: summary.finalEvalStep,
      bestStep: summary.bestStep,
      bestEvalLoss: summary.bestEvalLoss,
      stoppedBy: summary.stoppedBy,
    }),
  );
  if (config.loadBest && summary.bestStep !== null)
    log(
      `best: step ${summary.bestStep}, eval loss ${summary.bestEvalLoss?.toFixed(4)}; the adapter below holds its weights (checkpoint-${summary.steps} holds the last step's)`,
    );
  log(
    `adapter: ${summary.adapterPath} (+ adapter_config.json), metrics: ${summary.metricsPath}, curve: ${path.join(config.output, 'loss.svg')}, recipe: ${path.join(config.output, 'config.yaml')}, model card: ${path.join(config.output, 'README.md')}`,
  );
  if (summary.stoppedBy === 'interrupt') process.exitCode = 130;
}

/** Why the run ended, in the words the user chose: the epochs asked for, or the step budget. */
function stopReason(
  stoppedBy: 'max-steps' | 'early-stopping' | 'interrupt',
  maxSteps: number | undefined,
  epochs: number | undefined,
): string {
  if (stoppedBy !== 'max-steps') return stoppedBy;
  if (maxSteps !== undefined) return 'max steps';
  const n = epochs ?? 1;
  return `${n} epoch${n === 1 ? '' : 's'}`;
}
