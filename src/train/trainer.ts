/**
 * The QLoRA training loop: gradient accumulation, clipping, schedules, AdamW (fp32 or 8-bit),
 * periodic evaluation with optional early stopping, atomic checkpoints with bit-identical resume,
 * NaN/Inf detection, and a clean stop on Ctrl-C (a resumable checkpoint is written first).
 */
import { fs, hostProcess, path } from '../io/host.js';
import type { Arena } from '../tensor/arena.js';
import type { Tensor } from '../tensor/tensor.js';
import type { LoraConfig } from '../models/build.js';
import type { CausalLM, ModelBatch } from '../models/causal-lm.js';
import { mix32 } from '../tensor/rng.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import type { AdapterRecipe } from '../io/adapter-recipe.js';
import {
  type HostAdapterWeights,
  type TrainerState,
  checkpointDir,
  loadBestAdapter,
  listCheckpoints,
  loadCheckpoint,
  readTrainerState,
  saveCheckpoint,
} from './checkpoint.js';
import { ADAMW_DEFAULTS, AdamW, AdamW8bit, type Optimizer } from './optimizer.js';
import { openAppendNoFollow, prepareOutputDir, saveFinalAdapter } from './output-dir.js';
import { lossCurveSvg } from './plot.js';
import { type ScheduleKind, learningRate } from './schedule.js';

/** Where batches come from; the cursor is saved in checkpoints so a resumed run sees the same data. */
export interface BatchSource {
  next(): ModelBatch;
  /** A JSON-serializable position in the data stream. */
  cursor(): unknown;
  restore(cursor: unknown): void;
  /** Optional: where the stream is, in epochs (1.5 = half-way through the second pass); logged as `epoch`. */
  epoch?(): number;
}

export interface TrainOptions {
  readonly outputDir: string;
  readonly maxSteps: number;
  readonly lr: number;
  readonly schedule: ScheduleKind;
  readonly warmupSteps: number;
  readonly gradAccum: number;
  /** 0 disables clipping. */
  readonly maxGradNorm: number;
  readonly weightDecay: number;
  readonly optimizer: 'adamw' | 'adamw8bit';
  readonly seed: number;
  readonly gradientCheckpointing: boolean;
  readonly lossChunkRows: number;
  /** 0 = only at the end. */
  readonly evalEvery: number;
  /** 0 = only at the end. */
  readonly saveEvery: number;
  readonly keepCheckpoints: number;
  /** Stop after this many evaluations without improvement (0 = off). */
  readonly earlyStoppingPatience: number;
  /** What to do when the loss or gradient is NaN/Inf. */
  readonly onNonFinite: 'stop' | 'skip';
  /** With onNonFinite 'skip': stop after this many skipped steps in a row (default 5). */
  readonly maxConsecutiveSkips?: number;
  /** With onNonFinite 'skip': stop after this many skipped steps in all (default 10% of maxSteps, at least 5). */
  readonly maxSkippedSteps?: number;
  /** Resume from the newest checkpoint in outputDir (or this folder). */
  readonly resume: boolean | string;
  /**
   * Make the final adapter the one with the lowest evaluation loss (Hugging Face's
   * load_best_model_at_end). Its weights are copied to the host at each improvement and kept in
   * checkpoints, so a resumed run still knows them.
   */
  readonly loadBest?: boolean;
  /** Replace the run already in outputDir (its files are removed first); without it a non-empty folder is refused. */
  readonly overwrite?: boolean;
  readonly baseModel: string | null;
  /** Saved with every adapter (qlora_config.json): the base quantization and data recipe inference should reuse. */
  readonly recipe?: AdapterRecipe | null;
  /**
   * Initial sizes of the step and layer arenas (plan.arenaBytes from src/train/plan.ts): arenas
   * created at their peak size never grow, so no freed chunks linger in the heap. Default 1 MiB each.
   */
  readonly arenaBytes?: { readonly step: number; readonly layer: number };
}

export interface StepMetrics {
  readonly step: number;
  /** Position in the data, in epochs, when the batch source knows it. */
  readonly epoch?: number;
  readonly loss: number;
  readonly lr: number;
  readonly gradNorm: number;
  /** Every token position the step processed (batch × sequence, over all micro-batches), as `qlora plan` counts. */
  readonly tokens: number;
  /** Of those, the tokens that carry loss. */
  readonly lossTokens: number;
  /** Processed tokens per second of this step. */
  readonly tokensPerSecond: number;
  readonly elapsedSeconds: number;
  readonly skipped?: boolean;
}

export interface EvalMetrics {
  readonly step: number;
  readonly epoch?: number;
  readonly evalLoss: number;
  readonly perplexity: number;
  /** Loss tokens scored. */
  readonly tokens: number;
}

export interface TrainEvents {
  onStep?(m: StepMetrics): void;
  onEval?(m: EvalMetrics): void;
  onCheckpoint?(dir: string, step: number): void;
  onResume?(dir: string, step: number): void;
  /** --load-best put the weights of the best evaluation (at `step`, null when unknown) back in the model. */
  onLoadBest?(step: number | null, evalLoss: number | null): void;
}

export interface TrainSummary {
  readonly steps: number;
  /** Token positions processed over the whole run (resumed runs included). */
  readonly tokensSeen: number;
  /** Of those, tokens that carried loss. */
  readonly lossTokensSeen: number;
  readonly seconds: number;
  readonly finalTrainLoss: number | null;
  /** The latest evaluation (this process or, after a resume, the run's record) and its step. */
  readonly finalEvalLoss: number | null;
  readonly finalEvalStep: number | null;
  readonly stoppedBy: 'max-steps' | 'early-stopping' | 'interrupt';
  /** With loadBest: the step whose weights the final adapter holds, and its eval loss (null without evaluations). */
  readonly bestStep: number | null;
  readonly bestEvalLoss: number | null;
  readonly peakRssBytes: number;
  readonly adapterDir: string;
}

export class NonFiniteError extends Error {}

export interface ArenaStats {
  /** Bytes the arena holds from the backend. */
  readonly capacity: number;
  /** The most it has had in use at once. */
  readonly peakBytes: number;
}

export const DEFAULT_MAX_CONSECUTIVE_SKIPS = 5;

/** The total skip budget: 10% of the run, at least 5 steps. */
export function defaultMaxSkippedSteps(maxSteps: number): number {
  return Math.max(5, Math.ceil(0.1 * maxSteps));
}

/**
 * Options that must match for a resume to continue the same run. maxSteps (and with it a warm-up
 * given as a ratio) may change — extending a run is common; then the schedule moves, so the result
 * is no longer bit-identical to a single run of the new length.
 */
/** The option names a user knows (the CLI flags) for each fingerprint field. */
const FINGERPRINT_NAMES: Record<string, string> = {
  lr: 'lr',
  schedule: 'schedule',
  accum: 'grad-accum',
  clip: 'max-grad-norm',
  wd: 'weight-decay',
  opt: 'optimizer',
  seed: 'seed',
  r: 'rank',
  alpha: 'alpha',
  dropout: 'dropout',
  targets: 'targets',
  layers: 'layers',
  rslora: 'rslora',
};

/** Each option that differs between a checkpoint's fingerprint and this run's, by name: "--lr 0.001 (checkpoint: 0.0002)". */
export function fingerprintDiff(saved: string, now: string): string {
  let a: Record<string, unknown>;
  let b: Record<string, unknown>;
  try {
    a = JSON.parse(saved) as Record<string, unknown>;
    b = JSON.parse(now) as Record<string, unknown>;
  } catch {
    return "the checkpoint's options are unreadable";
  }
  const show = (v: unknown) =>
    v === undefined ? 'unset' : Array.isArray(v) ? v.join(',') : String(v);
  const diffs = [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `--${FINGERPRINT_NAMES[k] ?? k} ${show(b[k])} (checkpoint: ${show(a[k])})`);
  return diffs.length > 0 ? diffs.join(', ') : 'the options are recorded differently';
}

function fingerprint(o: TrainOptions, lora: LoraConfig): string {
  return JSON.stringify({
    lr: o.lr,
    schedule: o.schedule,
    accum: o.gradAccum,
    clip: o.maxGradNorm,
    wd: o.weightDecay,
    opt: o.optimizer,
    seed: o.seed,
    r: lora.r,
    alpha: lora.alpha,
    dropout: lora.dropout,
    targets: lora.targets,
    layers: lora.layers,
    rslora: lora.useRslora,
  });
}

export class Trainer {
  private readonly arena: Arena;
  private readonly layerArena: Arena;
  /**
   * One step's statistics on the backend: the loss sum of each micro-batch, then the squared
   * gradient norm — read back together, once per optimizer step.
   */
  private readonly stepStats: Tensor;
  /** Evaluation's running loss sum and the current batch's, read back once per evaluation. */
  private readonly evalStats: Tensor;
  private interrupted = false;

  /** The adapters' configuration, as the model was built with it (a model without adapters can only be evaluated). */
  get lora(): LoraConfig {
    if (!this.model.lora)
      throw new Error(
        'the model has no LoRA adapters to train: build or load it with a LoRA config (loadModel({ lora }))',
      );
    return this.model.lora;
  }

  constructor(
    readonly model: CausalLM,
    readonly options: TrainOptions,
    readonly train: BatchSource,
    readonly evalBatches: (() => Iterable<ModelBatch>) | null,
    readonly events: TrainEvents = {},
  ) {
    const be = model.backend;
    this.arena = be.createArena(options.arenaBytes?.step ?? 1 << 20, 'step');
    this.layerArena = be.createArena(options.arenaBytes?.layer ?? 1 << 20, 'layer');
    this.stepStats = be.zeros([options.gradAccum + 1], model.dtype);
    this.evalStats = be.zeros([2], model.dtype);
  }

  /** Asks the loop to stop after the current step (it checkpoints first). */
  interrupt(): void {
    this.interrupted = true;
  }

  /** The optimizer of this run's options over the model's LoRA parameters (run() makes its own). */
  createOptimizer(): Optimizer {
    const hyper = { ...ADAMW_DEFAULTS, weightDecay: this.options.weightDecay };
    const params = this.model.parameters();
    return this.options.optimizer === 'adamw8bit'
      ? new AdamW8bit(params, hyper)
      : new AdamW(params, hyper);
  }

  /** Mean loss over the evaluation batches (no dropout, no gradients). */
  async evaluate(): Promise<{ loss: number; tokens: number } | null> {
    if (!this.evalBatches) return null;
    const be = this.model.backend;
    const total = this.evalStats.rows(0, 1);
    const batchSum = this.evalStats.rows(1, 2);
    be.fill(total, 0);
    let tokens = 0;
    for (const batch of this.evalBatches()) {
      this.arena.reset();
      const r = await this.model.lossAndGradientsInto(
        batch,
        this.arena,
        this.layerArena,
        {
          training: false,
          stepSeed: 0,
          gradientCheckpointing: false,
          lossChunkRows: this.options.lossChunkRows,
          gradScale: 1,
        },
        false,
        batchSum,
      );
      be.sum(batchSum, total, true);
      tokens += r.tokens;
    }
    this.arena.reset();
    const sum = (await this.evalStats.read())[0]!;
    return tokens > 0 ? { loss: sum / tokens, tokens } : null;
  }

  /** The adapter weights copied to the host (async reads: a device backend maps its buffers). */
  private async hostWeights(): Promise<HostAdapterWeights> {
    const out = new Map<string, { shape: readonly number[]; values: Float32Array }>();
    for (const p of this.model.parameters())
      out.set(p.name, {
        shape: [...p.value.shape],
        values: Float32Array.from(await p.value.read()),
      });
    return out;
  }

  /** The squared global gradient norm into the last element of stepStats (on the backend). */
  private queueGradNormSquared(): void {
    const be = this.model.backend;
    const out = this.stepStats.rows(this.options.gradAccum, this.options.gradAccum + 1);
    let first = true;
    for (const p of this.model.parameters()) {
      be.sumOfSquares(p.grad!, out, !first);
      first = false;
    }
    if (first) be.fill(out, 0);
  }

  /** The step and layer arenas: bytes reserved, and the most ever in use (the memory planner reads these). */
  arenaStats(): { step: ArenaStats; layer: ArenaStats } {
    const stats = (a: Arena): ArenaStats => ({ capacity: a.capacity, peakBytes: a.peakBytes });
    return { step: stats(this.arena), layer: stats(this.layerArena) };
  }

  /**
   * The gradients of optimizer step `step` (0-based): zeroes them, runs forward and backward on
   * gradAccum micro-batches, and reads back the step's mean loss and global gradient norm in one
   * transfer (kernels are queued: a device backend runs them asynchronously until then).
   */
  async computeGradients(
    step: number,
  ): Promise<{ loss: number; gradNorm: number; tokens: number; lossTokens: number }> {
    const o = this.options;
    for (const p of this.model.parameters()) p.zeroGrad();
    const lossTokensPerMicro: number[] = [];
    let tokens = 0;
    for (let micro = 0; micro < o.gradAccum; micro++) {
      const batch = this.train.next();
      this.arena.reset();
      const r = await this.model.lossAndGradientsInto(
        batch,
        this.arena,
        this.layerArena,
        {
          training: true,
          stepSeed: mix32((mix32(o.seed >>> 0) + step * o.gradAccum + micro) >>> 0),
          gradientCheckpointing: o.gradientCheckpointing,
          lossChunkRows: o.lossChunkRows,
          gradScale: 1 / o.gradAccum,
        },
        true,
        this.stepStats.rows(micro, micro + 1),
      );
      lossTokensPerMicro.push(r.tokens);
      tokens += batch.batchSize * batch.seqLen;
    }
    this.arena.reset();
    this.queueGradNormSquared();
    const stats = await this.stepStats.read();
    let lossSum = 0;
    lossTokensPerMicro.forEach((t, micro) => {
      lossSum += t > 0 ? stats[micro]! / t : 0;
    });
    return {
      loss: lossSum / o.gradAccum,
      gradNorm: Math.sqrt(stats[o.gradAccum]!),
      tokens,
      lossTokens: lossTokensPerMicro.reduce((a, b) => a + b, 0),
    };
  }

  /** Clips the gradients to maxGradNorm (given their norm) and applies one optimizer update at `lr`. */
  update(optimizer: Optimizer, gradNorm: number, lr: number): void {
    const o = this.options;
    if (o.maxGradNorm > 0 && gradNorm > o.maxGradNorm) {
      const scale = o.maxGradNorm / (gradNorm + 1e-6);
      for (const p of this.model.parameters()) this.model.backend.scale(p.grad!, scale, p.grad!);
    }
    optimizer.step(lr);
  }

  async run(): Promise<TrainSummary> {
    const o = this.options;
    const params = this.model.parameters();
    if (params.length === 0) throw new Error('the model has no trainable (LoRA) parameters');
    prepareOutputDir(o.outputDir, { resume: Boolean(o.resume), overwrite: o.overwrite ?? false });
    const optimizer = this.createOptimizer();
    const fp = fingerprint(o, this.lora);
    let step = 0;
    let tokensSeen = 0;
    let lossTokensSeen = 0;
    let elapsedBefore = 0;
    let bestEval: number | null = null;
    let evalsWithoutImprovement = 0;
    let best: HostAdapterWeights | null = null;
    let bestStep: number | null = null;
    if (o.resume) {
      const dir =
        typeof o.resume === 'string' ? o.resume : listCheckpoints(o.outputDir).at(-1)?.dir;
      if (!dir) throw new Error(`--resume: no checkpoint in ${o.outputDir}`);
      const saved = readTrainerState(dir);
      if (saved.fingerprint !== fp) {
        throw new Error(
          `${dir}: checkpoint was written with different training options; resume needs the same options: ${fingerprintDiff(saved.fingerprint, fp)}`,
        );
      }
      const state = loadCheckpoint(dir, this.model, optimizer);
      step = state.step;
      tokensSeen = state.tokensSeen;
      lossTokensSeen = state.lossTokensSeen ?? 0;
      elapsedBefore = state.elapsedSeconds;
      bestEval = state.bestEvalLoss;
      if (o.loadBest) {
        best = loadBestAdapter(dir);
        bestStep = best ? (state.bestStep ?? null) : null;
        // A checkpoint without kept weights (the run had no --load-best): the best so far is unknown, start afresh.
        if (!best) bestEval = null;
      }
      evalsWithoutImprovement = state.evalsWithoutImprovement;
      this.train.restore(state.dataCursor);
      this.events.onResume?.(dir, step);
    }
    const metricsPath = path.join(o.outputDir, 'metrics.jsonl');
    const history = readHistory(metricsPath, step);
    // The curve is redrawn at every evaluation (watch it during a long run) and at the end.
    const writeCurve = () =>
      writeText(
        path.join(o.outputDir, 'loss.svg'),
        lossCurveSvg(
          [
            { label: 'train loss', color: '#1f77b4', points: history.train },
            { label: 'eval loss', color: '#d62728', points: history.eval },
          ],
          'QLoRA training loss',
          { x: 'step', y: 'loss (nats/token)' },
        ),
      );
    // Appends never follow a symlink planted in the output folder (readHistory replaced the file).
    const metricsFd = openAppendNoFollow(metricsPath);
    const log = (record: object) =>
      writeAll(metricsFd, new TextEncoder().encode(`${JSON.stringify(record)}\n`));

    const offInterrupt = hostProcess.onInterrupt(() => this.interrupt());
    const t0 = performance.now();
    const elapsed = () => elapsedBefore + (performance.now() - t0) / 1000;
    // The data position after the last finished step: a step that fails midway has taken batches
    // that a checkpoint of the step before must not skip. A copy, so a source may mutate its cursor.
    const snapshot = (c: unknown): unknown => (c === undefined ? c : JSON.parse(JSON.stringify(c)));
    let cursorAfterStep = snapshot(this.train.cursor());
    // True while the optimizer is changing the weights: they are then neither the last step's nor the next's.
    let updating = false;
    let lastCheckpointStep = step;
    const state = (): TrainerState => ({
      step,
      dataCursor: cursorAfterStep,
      bestEvalLoss: bestEval,
      bestStep,
      evalsWithoutImprovement,
      tokensSeen,
      lossTokensSeen,
      elapsedSeconds: elapsed(),
      fingerprint: fp,
      optimizerKind: optimizer.kind,
    });
    const checkpoint = async () => {
      const dir = await saveCheckpoint(
        o.outputDir,
        this.model,
        this.lora,
        o.baseModel,
        optimizer,
        state(),
        o.keepCheckpoints,
        best,
        o.recipe ?? null,
      );
      lastCheckpointStep = step;
      this.events.onCheckpoint?.(dir, step);
    };
    /** After an error: save the last finished step so `--resume` loses nothing; says what happened in the error. */
    const checkpointAfterError = async (e: unknown) => {
      if (!(e instanceof Error)) return;
      let note: string;
      if (updating) {
        note = `no checkpoint written: the error came while the optimizer was updating the weights${lastCheckpointStep > 0 ? `; the newest checkpoint is step ${lastCheckpointStep}` : ''}`;
      } else if (step === 0 || step === lastCheckpointStep) {
        note =
          step === 0
            ? 'no step had finished, nothing to checkpoint'
            : `checkpoint-${step} holds the last finished step; continue with --resume`;
      } else {
        try {
          await checkpoint();
          note = `saved a checkpoint of the last finished step (${step}) in ${checkpointDir(o.outputDir, step)}; continue with --resume`;
        } catch (saveError) {
          note = `could not save a checkpoint of step ${step} either: ${(saveError as Error).message}`;
        }
      }
      e.message = `${e.message} (${note})`;
    };
    const maxConsecutiveSkips = o.maxConsecutiveSkips ?? DEFAULT_MAX_CONSECUTIVE_SKIPS;
    const maxSkippedSteps = o.maxSkippedSteps ?? defaultMaxSkippedSteps(o.maxSteps);
    let consecutiveSkips = 0;
    let skippedSteps = 0;
    let stoppedBy: TrainSummary['stoppedBy'] = 'max-steps';
    let lastTrainLoss: number | null = null;
    // The latest evaluation so far: after a resume, the run's record holds it.
    let lastEval: number | null = history.eval.at(-1)?.[1] ?? null;
    let lastEvalStep: number | null = history.eval.at(-1)?.[0] ?? null;
    const epochNow = () => (this.train.epoch ? { epoch: round6(this.train.epoch()) } : {});
    const runEval = async () => {
      const ev = await this.evaluate();
      if (!ev) return false;
      // A non-finite validation loss means the adapter (or the base) produces NaN/Inf: saving it
      // and exiting 0 would hand the user a broken adapter.
      if (!Number.isFinite(ev.loss)) {
        throw new NonFiniteError(
          `evaluation at step ${step}: loss ${ev.loss} is not finite: the adapter produces NaN/Inf; stopping`,
        );
      }
      lastEval = ev.loss;
      lastEvalStep = step;
      const m: EvalMetrics = {
        step,
        ...epochNow(),
        evalLoss: ev.loss,
        perplexity: Math.exp(ev.loss),
        tokens: ev.tokens,
      };
      // Hugging Face Trainer's log_history names, so tools that read those logs read this one.
      log({
        step,
        ...epochNow(),
        eval_loss: ev.loss,
        eval_perplexity: m.perplexity,
        eval_tokens: ev.tokens,
      });
      history.eval.push([step, ev.loss]);
      writeCurve();
      this.events.onEval?.(m);
      if (bestEval === null || ev.loss < bestEval - 1e-12) {
        bestEval = ev.loss;
        if (o.loadBest) {
          best = await this.hostWeights();
          bestStep = step;
        }
        evalsWithoutImprovement = 0;
      } else {
        evalsWithoutImprovement++;
      }
      return o.earlyStoppingPatience > 0 && evalsWithoutImprovement >= o.earlyStoppingPatience;
    };

    try {
      // A baseline before the first step, so the eval curve starts where training starts.
      if (step === 0 && o.evalEvery > 0) await runEval();
      while (step < o.maxSteps) {
        const stepStart = performance.now();
        const { loss, gradNorm, tokens, lossTokens } = await this.computeGradients(step);
        const lr = learningRate(step, {
          kind: o.schedule,
          lr: o.lr,
          warmupSteps: o.warmupSteps,
          totalSteps: o.maxSteps,
        });
        let skipped = false;
        if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
          const what = Number.isFinite(loss) ? `gradient norm ${gradNorm}` : `loss ${loss}`;
          if (o.onNonFinite === 'stop') {
            throw new NonFiniteError(
              `step ${step + 1}: ${what} is not finite; stopping: lower --lr, or use --skip-nonfinite to skip such steps`,
            );
          }
          skipped = true;
          consecutiveSkips++;
          skippedSteps++;
          // Skipping is for a rare bad batch; a run where it keeps happening has diverged.
          if (consecutiveSkips >= maxConsecutiveSkips || skippedSteps >= maxSkippedSteps) {
            const which =
              consecutiveSkips >= maxConsecutiveSkips
                ? `${consecutiveSkips} steps in a row were skipped (limit ${maxConsecutiveSkips})`
                : `${skippedSteps} steps were skipped in all (limit ${maxSkippedSteps})`;
            throw new NonFiniteError(
              `step ${step + 1}: ${what} is not finite and ${which}: training has diverged; stopping: lower --lr`,
            );
          }
        } else {
          consecutiveSkips = 0;
          updating = true;
          this.update(optimizer, gradNorm, lr);
        }
        step++;
        updating = false;
        cursorAfterStep = snapshot(this.train.cursor());
        tokensSeen += tokens;
        lossTokensSeen += lossTokens;
        lastTrainLoss = skipped ? lastTrainLoss : loss;
        const seconds = (performance.now() - stepStart) / 1000;
        const m: StepMetrics = {
          step,
          ...epochNow(),
          loss,
          lr,
          gradNorm,
          tokens,
          lossTokens,
          tokensPerSecond: tokens / seconds,
          elapsedSeconds: elapsed(),
          ...(skipped ? { skipped } : {}),
        };
        log({
          step,
          ...epochNow(),
          loss,
          grad_norm: gradNorm,
          learning_rate: lr,
          num_input_tokens_seen: tokensSeen,
          num_loss_tokens_seen: lossTokensSeen,
          tokens_per_second: m.tokensPerSecond,
          elapsed_seconds: m.elapsedSeconds,
          ...(skipped ? { skipped } : {}),
        });
        if (!skipped) history.train.push([step, loss]);
        this.events.onStep?.(m);
        let stop = false;
        if (o.evalEvery > 0 && step % o.evalEvery === 0 && step < o.maxSteps)
          stop = await runEval();
        if (o.saveEvery > 0 && step % o.saveEvery === 0 && step < o.maxSteps) await checkpoint();
        if (stop) {
          stoppedBy = 'early-stopping';
          break;
        }
        // Let pending events run (Ctrl-C arrives as one): host backends resolve reads at once, so
        // without this yield a CPU-bound loop would never see the signal.
        await hostProcess.yieldToEvents();
        if (this.interrupted) {
          stoppedBy = 'interrupt';
          break;
        }
      }
      // A run that ends (or is stopped) evaluates where it stands, so its summary is current;
      // early stopping has just evaluated.
      if (stoppedBy !== 'early-stopping' && lastEvalStep !== step) await runEval();
      await checkpoint();
    } catch (e) {
      await checkpointAfterError(e);
      throw e;
    } finally {
      fs.closeSync(metricsFd);
      offInterrupt();
    }
    // --load-best: the final checkpoint above holds the last step (a resume continues the run);
    // the model, and so the final adapter, take the best evaluation's weights.
    if (o.loadBest && best && bestStep !== step) {
      for (const p of params) {
        const kept = best.get(p.name);
        if (!kept) throw new Error(`--load-best: the kept best weights have no ${p.name}`);
        p.value.write(kept.values);
      }
      this.events.onLoadBest?.(bestStep, bestEval);
    }
    // The final adapter sits at the top of the output folder, ready for PEFT / qlora generate.
    await saveFinalAdapter(o.outputDir, this.model, this.lora, o.baseModel, o.recipe ?? null);
    writeCurve();
    optimizer.dispose();
    return {
      steps: step,
      tokensSeen,
      lossTokensSeen,
      seconds: elapsed(),
      finalTrainLoss: lastTrainLoss,
      finalEvalLoss: lastEval,
      finalEvalStep: lastEvalStep,
      stoppedBy,
      bestStep: o.loadBest ? bestStep : null,
      bestEvalLoss: o.loadBest ? bestEval : null,
      peakRssBytes: hostProcess.peakRssBytes(),
      adapterDir: o.outputDir,
    };
  }

  dispose(): void {
    this.arena.dispose();
    this.layerArena.dispose();
    this.stepStats.dispose();
    this.evalStats.dispose();
  }
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/** Writes a text file through a temp file + rename in its folder: a symlink at `file` is replaced, never followed. */
function writeText(file: string, text: string): void {
  const bytes = new TextEncoder().encode(text);
  writeFileAtomic(file, (fd) => writeAll(fd, bytes));
}

/** Loss history from an earlier (resumed) run's metrics file, up to `step`. */
function readHistory(
  metricsPath: string,
  step: number,
): { train: [number, number][]; eval: [number, number][] } {
  const out = { train: [] as [number, number][], eval: [] as [number, number][] };
  // A symlink in its place is not ours to read or write: drop it (the file starts anew).
  if (fs.lstatSync(metricsPath, { throwIfNoEntry: false })?.isSymbolicLink())
    fs.rmSync(metricsPath);
  if (step === 0 || !fs.existsSync(metricsPath)) {
    if (step === 0) fs.rmSync(metricsPath, { force: true });
    return out;
  }
  const kept: string[] = [];
  for (const line of fs.readFileSync(metricsPath, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as {
        type?: string;
        step: number;
        loss?: number;
        eval_loss?: number;
        evalLoss?: number;
        skipped?: boolean;
      };
      if (r.step > step) continue; // steps after the checkpoint are redone
      kept.push(line);
      // HF names; `type`/`evalLoss` are the records of runs from before them.
      if (r.loss !== undefined && !r.skipped) out.train.push([r.step, r.loss]);
      const evalLoss = r.eval_loss ?? r.evalLoss;
      if (evalLoss !== undefined) out.eval.push([r.step, evalLoss]);
    } catch {
      // a torn last line from a killed run: drop it
    }
  }
  writeText(metricsPath, kept.length ? `${kept.join('\n')}\n` : '');
  return out;
}
