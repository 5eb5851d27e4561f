/**
 * Where the Hugging Face Hub is and what we may do with it, read from the environment variables
 * Python's huggingface_hub reads, with its defaults, so both tools share one cache and one login.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface HubEnv {
  /** https://huggingface.co unless HF_ENDPOINT says otherwise (a mirror, or a test server); no trailing slash. */
  readonly endpoint: string;
  /** The cache folder holding `models--org--name/` and `datasets--org--name/`. */
  readonly cacheDir: string;
  /** Bearer token for gated and private repositories, when one is set. */
  readonly token: string | undefined;
  /** HF_HUB_OFFLINE: use the cache only; never make a request. */
  readonly offline: boolean;
}

const TRUE = new Set(['1', 'on', 'yes', 'true']);

/** $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HOME) return env.HF_HOME;
  const xdg = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(xdg, 'huggingface');
}

/**
 * The token as huggingface_hub finds it: HF_TOKEN, then the older HUGGING_FACE_HUB_TOKEN, then the
 * file the HF CLI's login writes ($HF_TOKEN_PATH, default $HF_HOME/token).
 */
export function hubToken(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const direct = env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  if (direct !== undefined && direct.trim() !== '') return direct.trim();
  const file = env.HF_TOKEN_PATH || path.join(hfHome(env), 'token');
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    return text === '' ? undefined : text;
  } catch {
    return undefined;
  }
}

export function hubEnv(env: NodeJS.ProcessEnv = process.env): HubEnv {
  const cacheDir = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE || path.join(hfHome(env), 'hub');
  return {
    endpoint: (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
    cacheDir: path.resolve(cacheDir),
    token: hubToken(env),
    offline: TRUE.has((env.HF_HUB_OFFLINE ?? '').trim().toLowerCase()),
  };
}
