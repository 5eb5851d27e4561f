/**
 * `--chat-template FILE|NAME`: a built-in template by name (builtin-chat-templates.ts), a Jinja file,
 * or a tokenizer_config.json whose chat_template is taken.
 */
import { fs } from '../io/host.js';
import { chatTemplateOf } from '../tokenizer/hf-config.js';
import { BUILTIN_CHAT_TEMPLATES, builtinChatTemplate } from './builtin-chat-templates.js';
import { DatasetError } from './errors.js';

export interface ResolvedChatTemplate {
  /** The built-in's name, or the file as given. */
  readonly name: string;
  readonly source: string;
}

/** Largest template file read (real ones are a few KiB; this bounds a wrong path to a big file). */
const MAX_TEMPLATE_BYTES = 1 << 20;

export function resolveChatTemplate(spec: string): ResolvedChatTemplate {
  const builtin = builtinChatTemplate(spec);
  // A file of that name wins over a built-in, so `--chat-template chatml` in a folder holding a file "chatml" reads it.
  if (fs.existsSync(spec) && fs.statSync(spec).isFile()) {
    const size = fs.statSync(spec).size;
    if (size > MAX_TEMPLATE_BYTES)
      throw new DatasetError(
        `${spec}: ${size} bytes is too large for a chat template (at most ${MAX_TEMPLATE_BYTES})`,
      );
    const text = fs.readFileSync(spec, 'utf8');
    if (!spec.endsWith('.json')) return { name: spec, source: text };
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new DatasetError(`${spec}: invalid JSON: ${(e as Error).message}`);
    }
    const template = chatTemplateOf((parsed as { chat_template?: unknown } | null)?.chat_template);
    if (template === null) throw new DatasetError(`${spec}: no chat_template in this JSON file`);
    return { name: spec, source: template };
  }
  if (builtin !== null) return builtin;
  throw new DatasetError(
    `--chat-template: '${spec}' is neither a file nor a built-in template (${Object.keys(BUILTIN_CHAT_TEMPLATES).join(', ')})`,
  );
}
