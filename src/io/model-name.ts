/**
 * The name a trained adapter records for its base model (PEFT's base_model_name_or_path): a Hub id
 * when the model folder knows one, never this machine's path.
 */
import { fs, path } from './host.js';

/** A Hugging Face Hub id: `name` or `owner/name`. */
const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;

/**
 * The base model's name: an HF folder's `_name_or_path` when it is a Hub id (transformers writes it
 * on save_pretrained), else the folder or file name without its extension.
 */
export function modelName(modelPath: string): string {
  const abs = path.resolve(modelPath);
  let folder: string | null = null;
  try {
    if (fs.statSync(abs).isDirectory()) folder = abs;
    else if (path.basename(abs) === 'config.json') folder = path.dirname(abs);
  } catch {
    // not there: fall back to the name as given
  }
  if (folder) {
    try {
      const cfg = JSON.parse(fs.readFileSync(path.join(folder, 'config.json'), 'utf8')) as {
        _name_or_path?: unknown;
      };
      if (typeof cfg._name_or_path === 'string' && HUB_ID.test(cfg._name_or_path))
        return cfg._name_or_path;
    } catch {
      // no or unreadable config.json: the folder name will do
    }
    return path.basename(folder);
  }
  return path.basename(abs).replace(/\.(gguf|bin|safetensors)$/i, '');
}
