/**
 * `--format ollama`: a folder Ollama can `ollama create` from — the merged model as one GGUF
 * (model.gguf, the same export as --format gguf) and a Modelfile whose TEMPLATE, stop parameters
 * and SYSTEM come from the model's chat template (ollama-template.ts). A merged GGUF rather than a
 * GGUF LoRA with an ADAPTER line: recent Ollama releases are reported to refuse ADAPTER lines.
 */
import { fs, path } from '../io/host.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import { type OllamaChatFormat, modelfileText, ollamaChatFormat } from './ollama-template.js';

export const OLLAMA_MODEL_FILE = 'model.gguf';
export const MODELFILE = 'Modelfile';

/**
 * Checks the output folder before anything is written: absent, empty, or an earlier Ollama export
 * (only its two files) — never a folder holding something else, which an export would mix into.
 */
export function checkOllamaFolder(dir: string): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory())
    throw new Error(`${dir}: exists and is not a folder (--format ollama writes a folder)`);
  const other = fs.readdirSync(dir).filter((f) => f !== OLLAMA_MODEL_FILE && f !== MODELFILE);
  if (other.length > 0)
    throw new Error(
      `${dir}: the folder holds other files (${other.slice(0, 3).join(', ')}${other.length > 3 ? ', …' : ''}); give an empty or new folder`,
    );
}

/**
 * The chat format for the Modelfile, derived before the (long) GGUF export so a template that
 * cannot be expressed fails first. null when the model has no chat template.
 */
export function ollamaFormatFor(
  chatTemplate: string | null,
  tokens: { bosToken: string | null; eosToken: string | null },
  templateOrigin: string,
): OllamaChatFormat | null {
  if (chatTemplate === null) return null;
  try {
    return ollamaChatFormat(chatTemplate, tokens);
  } catch (e) {
    throw new Error(
      `${templateOrigin}: cannot express this chat template as an Ollama TEMPLATE: ${(e as Error).message} (pass --chat-template NAME for one of the built-in formats)`,
      { cause: e },
    );
  }
}

/** Writes the Modelfile (atomically) into `dir`, beside model.gguf. */
export function writeModelfile(dir: string, format: OllamaChatFormat | null): string {
  const file = path.join(dir, MODELFILE);
  const text = new TextEncoder().encode(modelfileText(OLLAMA_MODEL_FILE, format));
  writeFileAtomic(file, (fd) => writeAll(fd, text));
  return file;
}
