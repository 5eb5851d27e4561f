/**
 * The training output folder: created level by level with clear errors, checked writable before
 * any work starts, cleaned of temporaries a killed run left, and never silently shared by two runs.
 *
 * Every file the trainer writes goes through a temporary name in this folder and a rename (or is
 * opened with O_NOFOLLOW), so a symlink planted here is replaced, never written through.
 */
import { fs, hostProcess, path } from '../io/host.js';
import type { AdapterRecipe } from '../io/adapter-recipe.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, savePeftAdapter } from '../io/peft.js';
import type { LoraConfig } from '../models/build.js';
import type { CausalLM } from '../models/causal-lm.js';
import { isCompleteCheckpoint } from './checkpoint.js';

/** Files a run writes at the top of its output folder (besides checkpoint-N/ folders). */
export const RUN_FILES = [
  ADAPTER_WEIGHTS,
  ADAPTER_CONFIG,
  'metrics.jsonl',
  'loss.svg',
  'config.yaml',
  'README.md',
] as const;

/** Temporaries of a killed run: checkpoint and adapter staging folders, atomic-write temp files. */
const STALE = [/^\.tmp-checkpoint-/, /^\.tmp-adapter-/, /^\..+\.\d+\.\d+\.tmp$/];
const CHECKPOINT = /^checkpoint-\d+$/;

export class OutputDirError extends Error {}

/**
 * Creates `dir` one level at a time. Node's recursive mkdir never returns for some paths on pseudo
 * file systems (`/proc/x`), so each level is made (or checked) on its own and fails with its path.
 */
export function makeOutputDir(dir: string): string {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  let at = abs;
  for (;;) {
    let st: import('node:fs').Stats | null = null;
    try {
      st = fs.statSync(at);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOTDIR: some ancestor is a file; walking up finds it and says so.
      if (code !== 'ENOENT' && code !== 'ENOTDIR')
        throw new OutputDirError(`output folder ${dir}: cannot use ${at} (${code})`);
    }
    if (st) {
      if (!st.isDirectory())
        throw new OutputDirError(`output folder ${dir}: ${at} is not a folder`);
      break;
    }
    missing.push(at);
    const up = path.dirname(at);
    if (up === at) break;
    at = up;
  }
  for (const level of missing.reverse()) {
    try {
      fs.mkdirSync(level);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST')
        throw new OutputDirError(`output folder ${dir}: cannot create ${level} (${code})`);
    }
  }
  // Writable? Better to know now than after loading a model and an hour of training.
  const probe = path.join(abs, `.tmp-adapter-probe-${hostProcess.pid}`);
  try {
    fs.mkdirSync(probe);
    fs.rmdirSync(probe);
  } catch (e) {
    throw new OutputDirError(
      `output folder ${dir}: cannot write in it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  return abs;
}

/**
 * Removes what a killed run left half-done: staging folders and temp files, checkpoint folders
 * missing a file (a kill while pruning), and adapter weights without their config (a kill between
 * the two renames of the final save; the last checkpoint holds the same weights). Returns the names removed.
 */
export function cleanStaleFiles(dir: string): string[] {
  const removed: string[] = [];
  const names = fs.readdirSync(dir);
  for (const name of names) {
    const full = path.join(dir, name);
    const stale =
      STALE.some((re) => re.test(name)) || (CHECKPOINT.test(name) && !isCompleteCheckpoint(full));
    if (stale) {
      fs.rmSync(full, { recursive: true, force: true });
      removed.push(name);
    }
  }
  if (names.includes(ADAPTER_WEIGHTS) && !names.includes(ADAPTER_CONFIG)) {
    fs.rmSync(path.join(dir, ADAPTER_WEIGHTS), { force: true });
    removed.push(ADAPTER_WEIGHTS);
  }
  return removed;
}

export interface PrepareOptions {
  /** Continuing the run in this folder: its files are kept. */
  readonly resume: boolean;
  /** Replace the run in this folder: its files (and only those) are removed first. */
  readonly overwrite: boolean;
}

/**
 * Makes `dir` ready for a run: created, writable, stale temporaries gone. A folder holding another
 * run is refused unless resuming it or overwriting it, so two runs never mix their checkpoints and
 * metrics. Overwriting removes only the files a run writes (RUN_FILES and checkpoint-N/).
 */
export function prepareOutputDir(dir: string, options: PrepareOptions): { removed: string[] } {
  makeOutputDir(dir);
  const removed = cleanStaleFiles(dir);
  if (options.resume) return { removed };
  const ours = fs
    .readdirSync(dir)
    .filter((n) => (RUN_FILES as readonly string[]).includes(n) || CHECKPOINT.test(n));
  if (options.overwrite) {
    for (const name of ours) {
      fs.rmSync(path.join(dir, name), { recursive: true, force: true });
      removed.push(name);
    }
    return { removed };
  }
  const entries = fs.readdirSync(dir);
  if (entries.length > 0) {
    const shown =
      entries.sort().slice(0, 4).join(', ') +
      (entries.length > 4 ? `, … (${entries.length} entries)` : '');
    throw new OutputDirError(
      `output folder ${dir} is not empty (${shown}): pass --resume to continue the run in it, --overwrite to replace it, or choose another --output`,
    );
  }
  return { removed };
}

/**
 * Opens `file` for appending without following a symlink (O_NOFOLLOW): a link planted in the output
 * folder fails with ELOOP instead of redirecting the write outside it.
 */
export function openAppendNoFollow(file: string): number {
  const c = fs.constants;
  try {
    return fs.openSync(file, c.O_WRONLY | c.O_APPEND | c.O_CREAT | c.O_NOFOLLOW, 0o644);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ELOOP')
      throw new OutputDirError(
        `${file} is a symbolic link; the trainer does not write through links (remove it)`,
      );
    throw e;
  }
}

/**
 * Saves the final adapter at the top of the output folder as a whole: every file is staged in a
 * temporary folder first, then renamed into place with adapter_config.json last. A reader (PEFT,
 * `qlora generate`) needs the config, so it sees the complete new adapter or none; weights left
 * without a config by a kill between renames are removed on the next start (the final checkpoint
 * holds the same weights).
 */
export async function saveFinalAdapter(
  dir: string,
  model: CausalLM,
  lora: LoraConfig,
  baseModel: string | null,
  recipe: AdapterRecipe | null = null,
): Promise<void> {
  const stage = path.join(dir, `.tmp-adapter-${hostProcess.pid}`);
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage);
  try {
    await savePeftAdapter(stage, model, lora, baseModel, recipe);
    fs.rmSync(path.join(dir, ADAPTER_CONFIG), { force: true });
    const names = fs.readdirSync(stage).filter((n) => n !== ADAPTER_CONFIG);
    for (const name of [...names, ADAPTER_CONFIG])
      fs.renameSync(path.join(stage, name), path.join(dir, name));
    syncDir(dir);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/** Makes the renames durable (a no-op where folders cannot be opened for fsync). */
function syncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // some file systems refuse fsync on a folder; the renames are still atomic
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}
