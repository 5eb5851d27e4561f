/**
 * `qlora plan [train's options]`: predicted peak memory (broken down) and tokens/s of the training
 * run those options describe, from the model's shape alone (nothing is loaded), with a warning when
 * it won't fit. It takes train's flags, defaults and --config file (train-options.ts), so swapping
 * `train` for `plan` in a command line predicts that run; --model may also name a shape.
 */
import { type Command, Option } from 'commander';
import { type AdapterSummary, resolveBackend } from '../backends/index.js';
import type { Backend } from '../tensor/backend.js';
import { formatDevicePlan, planOnDevice } from '../train/device-plan.js';
import { keptGgufTypes, NAMED_SHAPES, printTrainingPlan, resolvePlanModel } from '../train/plan.js';
import path from 'node:path';
import { isHubModelId, localModelPath } from './hub-args.js';
import { intOption } from './options.js';
import { resolveTrainConfig } from './train-config.js';
import { LOSS_CHUNK_ROWS, planOptionsOf } from '../train/settings.js';
import { addTrainOptions, trainSettings } from './train-options.js';

export function registerPlanCommand(program: Command): void {
  const cmd = program
    .command('plan')
    .description(
      `predict the peak memory and speed of a training run (train's options; nothing is loaded). --model may also be a shape: ${NAMED_SHAPES.join(', ')}`,
    );
  addTrainOptions(cmd);
  cmd
    .addOption(
      new Option('--loss-chunk-rows <n>', 'rows of logits alive at once')
        .hideHelp()
        .argParser(intOption('--loss-chunk-rows', 1)),
    )
    .addOption(
      new Option(
        '--no-speed',
        "memory only: time no kernels (this machine's speed says nothing of another's)",
      ),
    )
    // plan's earlier names for train's --gradient-checkpointing.
    .addOption(new Option('--grad-checkpointing').hideHelp())
    .addOption(new Option('--no-grad-checkpointing').hideHelp());
  cmd.action(async (flags: Record<string, unknown>) => {
    const { lossChunkRows, gradCheckpointing, speed, ...trainFlags } = flags;
    const { values, fileKeys, source } = trainSettings(cmd, trainFlags);
    if (cmd.getOptionValueSource('gradCheckpointing') === 'cli')
      values.gradientCheckpointing = gradCheckpointing;
    // The data and the output folder do not change the memory of a run: plan needs only the model.
    const config = resolveTrainConfig({ data: '-', output: '-', ...values }, source, fileKeys);
    // A Hub model needs only its config.json (or, with --gguf-file, its GGUF file) to be planned.
    let spec = config.model;
    if (isHubModelId(spec)) {
      const local = await localModelPath(
        spec,
        config.ggufFile !== undefined ? { ggufFile: config.ggufFile } : { parts: 'config' },
      );
      spec = config.ggufFile !== undefined ? local : path.join(local, 'config.json');
    }
    const planned = resolvePlanModel(spec);
    const model = planned.config;
    const label = spec === config.model ? planned.label : config.model;
    // The run's backend: the step's kernels are timed on it (plan-speed.ts).
    const be = await resolveBackend(config.backend, { computeDtype: config.computeDtype });
    const options = planOptionsOf(
      config,
      typeof lossChunkRows === 'number' ? lossChunkRows : LOSS_CHUNK_ROWS,
    );
    // --quant keep: a GGUF file's own block types; a named shape or HF config is planned as Q4_K.
    const keptGguf =
      config.quant === 'keep' && /\.gguf$/i.test(spec) ? keptGgufTypes(spec) : options.keptGguf;
    if (config.quant === 'keep' && !/\.gguf$/i.test(spec))
      console.log('(--quant keep on a shape: every projection planned as Q4_K)');
    const plan = await printTrainingPlan(model, { ...options, keptGguf }, label, console.log, {
      backend: be,
      ...(speed === false ? { noSpeed: 'not timed (--no-speed)' } : {}),
    });
    if (config.backend === 'webgpu' || config.backend === 'auto') {
      // On a GPU, also its buffers against the adapter's limits.
      const gpu = be as Backend & { adapter?: AdapterSummary; sync?(): Promise<void> };
      if (gpu.adapter) {
        const limits = {
          maxBufferSize: gpu.adapter.limits.maxBufferSize ?? 0,
          maxStorageBufferBindingSize: gpu.adapter.limits.maxStorageBufferBindingSize ?? 0,
        };
        const device = await planOnDevice(
          model,
          plan,
          gpu,
          limits,
          `webgpu: ${be.describe?.() ?? gpu.adapter.description}`,
        );
        for (const line of formatDevicePlan(device)) console.log(line);
        if (!device.fit.fits) process.exitCode = 2;
        return;
      }
      console.log(
        `(--backend auto: no hardware GPU adapter here, so the run would use ${be.name}; the plan above is for it)`,
      );
    }
    if (!plan.fits) process.exitCode = 2;
  });
}
