/**
 * Training checkpoints: adapter (PEFT files), optimizer state, and the trainer state (step, data
 * cursor, best eval, seed) in one folder `checkpoint-<step>`, written into a temporary folder and
 * renamed into place, so a crash mid-write never leaves a half checkpoint. Older ones are pruned.
 */
import { fs, hostProcess, path } from '../io/host.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import type { AdapterRecipe } from '../io/adapter-recipe.js';
import {
  ADAPTER_CONFIG,
  ADAPTER_WEIGHTS,
  applyPeftAdapter,
  loadPeftAdapter,
  savePeftAdapter,
} from '../io/peft.js';
import { SafetensorsFile, writeSafetensors } from '../io/safetensors.js';
import type { LoraConfig } from '../models/build.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Optimizer, OptimizerStateArrays } from './optimizer.js';

export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_STATE_FILE = 'trainer_state.json';
/** The adapter weights at the best evaluation so far (--load-best), PEFT key names. */
export const BEST_ADAPTER_FILE = 'best_adapter_model.safetensors';

/** Adapter weights kept on the host: PEFT key → values (shapes are the model's). */
export type HostAdapterWeights = ReadonlyMap<
  string,
  { readonly shape: readonly number[]; readonly values: Float32Array }
>;

export interface TrainerState {
  /** Completed optimizer steps. */
  readonly step: number;
  readonly dataCursor: unknown;
  readonly bestEvalLoss: number | null;
  /** The step of the best evaluation whose weights are kept (--load-best), when they are. */
  readonly bestStep?: number | null;
  readonly evalsWithoutImprovement: number;
  /** Token positions processed (batch × sequence). */
  readonly tokensSeen: number;
  /** Tokens that carried loss (absent in checkpoints from before it was recorded). */
  readonly lossTokensSeen?: number;
  readonly elapsedSeconds: number;
  /** Fingerprint of the options that must not change across a resume. */
  readonly fingerprint: string;
  readonly optimizerKind: string;
}

export function checkpointDir(outputDir: string, step: number): string {
  return path.join(outputDir, `checkpoint-${step}`);
}

export async function saveCheckpoint(
  outputDir: string,
  model: CausalLM,
  lora: LoraConfig,
  baseModel: string | null,
  optimizer: Optimizer,
  state: TrainerState,
  keep: number,
  best: HostAdapterWeights | null = null,
  recipe: AdapterRecipe | null = null,
): Promise<string> {
  const final = checkpointDir(outputDir, state.step);
  const tmp = path.join(outputDir, `.tmp-checkpoint-${state.step}-${hostProcess.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp); // not recursive: the output folder exists (prepareOutputDir), and a planted link here fails
  try {
    await savePeftAdapter(tmp, model, lora, baseModel, recipe);
    const opt = await optimizer.state();
    const tensors = Object.entries(opt.arrays).map(([name, data]) => ({
      name,
      dtype: data instanceof Uint8Array ? 'U8' : 'F32',
      shape: [data.length],
      data:
        data instanceof Uint8Array
          ? data
          : new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    }));
    writeSafetensors(path.join(tmp, OPTIMIZER_FILE), tensors, {
      kind: optimizer.kind,
      steps: String(opt.steps),
    });
    if (best) {
      const bestTensors = [...best].map(([name, t]) => ({
        name,
        dtype: 'F32',
        shape: [...t.shape],
        data: t.values,
      }));
      writeSafetensors(path.join(tmp, BEST_ADAPTER_FILE), bestTensors, {
        step: String(state.bestStep ?? ''),
      });
    }
    const json = new TextEncoder().encode(`${JSON.stringify(state, null, 2)}\n`);
    writeFileAtomic(path.join(tmp, TRAINER_STATE_FILE), (fd) => writeAll(fd, json));
    if (fs.existsSync(final)) retire(outputDir, final);
    fs.renameSync(tmp, final);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  pruneCheckpoints(outputDir, keep);
  return final;
}

/** Checkpoint folders in outputDir, oldest first. */
export function listCheckpoints(outputDir: string): { step: number; dir: string }[] {
  if (!fs.existsSync(outputDir)) return [];
  return fs
    .readdirSync(outputDir)
    .map((name) => /^checkpoint-(\d+)$/.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ step: Number(m[1]), dir: path.join(outputDir, m[0]) }))
    .filter((c) => isCompleteCheckpoint(c.dir))
    .sort((a, b) => a.step - b.step);
}

/** The files every checkpoint holds; a folder missing one is the remains of a killed prune, never listed. */
const CHECKPOINT_FILES = [ADAPTER_WEIGHTS, ADAPTER_CONFIG, OPTIMIZER_FILE, TRAINER_STATE_FILE];

export function isCompleteCheckpoint(dir: string): boolean {
  try {
    return CHECKPOINT_FILES.every((f) => fs.lstatSync(path.join(dir, f)).isFile());
  } catch {
    return false;
  }
}

/**
 * Removes a checkpoint folder without ever leaving a half-deleted one under its listed name: it is
 * first renamed to a temporary name (atomic), then deleted; a kill in between leaves a temporary
 * that the next start cleans.
 */
function retire(outputDir: string, dir: string): void {
  const doomed = path.join(
    outputDir,
    `.tmp-checkpoint-removing-${path.basename(dir)}-${hostProcess.pid}`,
  );
  fs.rmSync(doomed, { recursive: true, force: true });
  fs.renameSync(dir, doomed);
  fs.rmSync(doomed, { recursive: true, force: true });
}

function pruneCheckpoints(outputDir: string, keep: number): void {
  if (keep <= 0) return;
  const all = listCheckpoints(outputDir);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) retire(outputDir, c.dir);
}

/** The best-evaluation weights a checkpoint kept (--load-best), or null when it kept none. */
export function loadBestAdapter(dir: string): HostAdapterWeights | null {
  const file = path.join(dir, BEST_ADAPTER_FILE);
  if (!fs.existsSync(file)) return null;
  const f = SafetensorsFile.open(file);
  try {
    const out = new Map<string, { shape: number[]; values: Float32Array }>();
    for (const [name, info] of f.tensors)
      out.set(name, {
        shape: [...info.shape],
        values: new Float32Array(f.readRaw(name).slice().buffer),
      });
    return out;
  } finally {
    f.close();
  }
}

/** The trainer state of a checkpoint folder (read before anything is loaded, to check the options). */
export function readTrainerState(dir: string): TrainerState {
  const statePath = path.join(dir, TRAINER_STATE_FILE);
  if (!fs.existsSync(statePath))
    throw new Error(`${dir}: not a checkpoint (no ${TRAINER_STATE_FILE})`);
  try {
    return JSON.parse(fs.readFileSync(statePath, 'utf8')) as TrainerState;
  } catch (e) {
    throw new Error(`${statePath}: invalid JSON: ${(e as Error).message}`);
  }
}

/** Restores model adapter weights and optimizer state from a checkpoint folder; returns the trainer state. */
export function loadCheckpoint(dir: string, model: CausalLM, optimizer: Optimizer): TrainerState {
  const state = readTrainerState(dir);
  if (state.optimizerKind !== optimizer.kind) {
    throw new Error(
      `${dir}: checkpoint was written by optimizer '${state.optimizerKind}', this run uses '${optimizer.kind}'`,
    );
  }
  applyPeftAdapter(model, loadPeftAdapter(dir));
  const file = SafetensorsFile.open(path.join(dir, OPTIMIZER_FILE));
  try {
    const arrays: OptimizerStateArrays = {};
    for (const [name, info] of file.tensors) {
      const raw = file.readRaw(name);
      arrays[name] =
        info.dtype === 'U8' ? Uint8Array.from(raw) : new Float32Array(raw.slice().buffer);
    }
    optimizer.restore(Number(file.metadata.steps ?? state.step), arrays);
  } finally {
    file.close();
  }
  return state;
}
