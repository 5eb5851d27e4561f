/**
 * `--model org/name[@revision]` and `--data org/name` on every command: a local path that exists
 * always wins; otherwise a Hub id is resolved through the Hugging Face cache (src/hub/), downloading
 * what is missing with a progress bar on stderr.
 */
import fs from 'node:fs';
import { Option, type Command } from 'commander';
import { parseHubId } from '../hub/repo-id.js';
import {
  pickLocalGguf,
  resolveHubDataset,
  resolveHubModel,
  type HubProgress,
} from '../hub/resolve.js';
import { bar, ProgressLine } from './progress.js';

function megabytes(n: number): string {
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)} MB`;
}

/** A progress bar for one repository's download, drawn on stderr. */
function progressPrinter(): { onProgress: (p: HubProgress) => void; done: () => void } {
  const line = new ProgressLine(process.stderr, 2000);
  const started = Date.now();
  let shown = false;
  return {
    onProgress: (p) => {
      shown = true;
      const s = (Date.now() - started) / 1000;
      const rate = s > 0 ? ` ${megabytes(p.done / s)}/s` : '';
      line.update(
        `downloading ${p.repo} ${bar(p.total > 0 ? p.done / p.total : 1)} ${megabytes(p.done)} / ${megabytes(p.total)}${rate}  ${p.file}`,
        p.done === p.total,
      );
    },
    done: () => {
      if (shown) line.done();
    },
  };
}

/** Whether `spec` names something on this machine (then it is never taken for a Hub id). */
function isLocal(spec: string): boolean {
  return fs.existsSync(spec);
}

/** True when `spec` would be looked up on the Hub (no such local path, and shaped like org/name). */
export function isHubModelId(spec: string): boolean {
  return !isLocal(spec) && parseHubId(spec, 'model') !== null;
}

export interface ModelArgOptions {
  /** --gguf-file: one GGUF file of the repository. */
  readonly ggufFile?: string;
  /** Only the config (qlora plan) or the config and tokenizer (data inspect); default all. */
  readonly parts?: 'all' | 'config' | 'tokenizer';
}

/** A --model value → a local path (unchanged when it is one, or when it cannot be a Hub id). */
export async function localModelPath(spec: string, o: ModelArgOptions = {}): Promise<string> {
  if (isLocal(spec)) {
    if (o.ggufFile !== undefined && fs.statSync(spec).isDirectory()) {
      // A local folder of GGUF files (e.g. a clone of a GGUF repository) takes --gguf-file too.
      return pickLocalGguf(spec, o.ggufFile);
    }
    return spec;
  }
  const ref = parseHubId(spec, 'model');
  if (!ref) return spec;
  const progress = progressPrinter();
  try {
    const r = await resolveHubModel(ref, { ...o, onProgress: progress.onProgress });
    return r.path;
  } finally {
    progress.done();
  }
}

/** A --data value → a local path: a Hub dataset becomes its snapshot folder in the cache. */
export async function localDataPath(spec: string, o: { split?: string } = {}): Promise<string> {
  if (isLocal(spec)) return spec;
  const ref = parseHubId(spec, 'dataset');
  if (!ref) return spec;
  const progress = progressPrinter();
  try {
    const r = await resolveHubDataset(ref, { ...o, onProgress: progress.onProgress });
    return r.path;
  } finally {
    progress.done();
  }
}

export const GGUF_FILE_HELP =
  'with a Hub model id: the one GGUF file of the repository to use, by glob (*Q4_K_M.gguf) or part of its name (Q4_K_M)';

/** --gguf-file, for commands that take --model. */
export function addGgufFileOption(cmd: Command): Command {
  return cmd.addOption(new Option('--gguf-file <pattern>', GGUF_FILE_HELP));
}
