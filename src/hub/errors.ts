/** The Hub's refusals as one line a user can act on: which repository, which URL, what to do. */
import type { HubEnv } from './env.js';
import { type HubRepoRef, repoUrl } from './repo-id.js';

const LOGIN = 'set HF_TOKEN to a token with access (or log in with `hf auth login`)';

export function hubError(e: unknown, env: HubEnv, ref: HubRepoRef, file?: string): Error {
  const status = (e as { statusCode?: unknown }).statusCode;
  const url = repoUrl(env.endpoint, ref);
  const what = `${ref.type === 'dataset' ? 'dataset' : 'model'} ${ref.name}`;
  const said =
    e instanceof Error && e.message
      ? ` (the Hub said: ${e.message.split('\n')[0]!.slice(0, 300)})`
      : '';
  const where = file !== undefined ? `${file} of ` : '';
  if (status === 401 || status === 403) {
    const gated =
      status === 401
        ? `${where}${what} needs a login: it is gated or private (or there is no such repository). If it is gated, accept its terms at ${url} and ${LOGIN}.`
        : `${where}${what} is gated and your token has no access yet: request access at ${url} (then wait for approval), or ${LOGIN}.`;
    return new Error(`${gated}${env.token === undefined ? ' No token is set.' : ''}${said}`);
  }
  if (status === 404) {
    return new Error(
      file !== undefined
        ? `${file} is not in ${what} at revision ${ref.revision} (${url})${said}`
        : `no ${what} at revision ${ref.revision} on the Hub (${url})${said}`,
    );
  }
  if (typeof status === 'number')
    return new Error(`${where}${what}: the Hub answered ${status} (${url})${said}`);
  const cause = e instanceof Error ? e.message : String(e);
  return new Error(
    `${what}: cannot reach the Hub at ${env.endpoint} (${cause}); with the files already in the cache, HF_HUB_OFFLINE=1 uses them without asking`,
  );
}
