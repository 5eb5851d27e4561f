/**
 * What an adapter was trained on, beyond what PEFT's adapter_config.json can say: how the base was
 * quantized (an adapter learns to correct the 4-bit base it saw, so inference should run on the same
 * base), and how rows became prompts (format, columns, prompt template, chat template), so inference
 * over a dataset renders prompts exactly as training did.
 *
 * It is a file of its own, `qlora_config.json`, beside adapter_config.json: older PEFT releases pass
 * every key of adapter_config.json to LoraConfig(**kwargs) and fail on keys they do not know, so
 * nothing is added there. The chat template in use is saved as `chat_template.jinja`, the file name
 * transformers itself uses, so Hugging Face tools pick it up too.
 */
import { fs, path } from './host.js';
import { z } from 'zod';
import { VERSION } from '../version.js';
import { writeAll, writeFileAtomic } from './atomic-write.js';

export const RECIPE_FILE = 'qlora_config.json';
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

/** A bitsandbytes-layout 4-bit base (NF4/FP4) quantized at load. */
export interface Bnb4bitBase {
  readonly quantType: 'nf4' | 'fp4';
  readonly blocksize: number;
  readonly doubleQuant: boolean;
  readonly quantizeHead: boolean;
  readonly quantizeEmbeddings: boolean;
}

/**
 * A GGUF base trained on as stored (`--quant keep`): its projections (and an untied lm_head) stay in
 * the file's own blocks, so the adapter is tuned to the weights llama.cpp serves.
 */
export interface GgufKeptBase {
  readonly quantType: 'keep';
  /** ggml type name → how many projection / lm_head weights the file stores in it (F16/F32 ones included, full precision). */
  readonly tensorTypes: Readonly<Record<string, number>>;
}

/** The base an adapter was trained on; null in AdapterRecipe.quantization = a full-precision base. */
export type BaseQuantization = Bnb4bitBase | GgufKeptBase;

/** How dataset rows became training text. */
export interface DataRecipe {
  readonly format: 'text' | 'completion' | 'alpaca' | 'chat';
  /** target field → source column (--columns). */
  readonly columns: Readonly<Record<string, string>> | null;
  /** --template, as text. */
  readonly template: string | null;
  /** --chat-template as given (a built-in name or a file), or null for the model's own. */
  readonly chatTemplateName: string | null;
  readonly trainOnPrompt: boolean;
  readonly seqLen: number;
}

export interface AdapterRecipe {
  /** The base model as a local path (adapter_config.json may carry a Hub name instead). */
  readonly baseModelPath: string | null;
  readonly quantization: BaseQuantization | null;
  readonly data: DataRecipe | null;
  /** The chat template used in training (written as chat_template.jinja), when rows were chats or one was given. */
  readonly chatTemplate: string | null;
}

const fileSchema = z
  .object({
    qlora_ts_version: z.string(),
    base_model_path: z.string().nullable(),
    // Named as transformers' BitsAndBytesConfig names them, plus the two parts bitsandbytes has no key for.
    quantization_config: z
      .discriminatedUnion('quant_method', [
        z.object({
          quant_method: z.literal('bitsandbytes'),
          load_in_4bit: z.literal(true),
          bnb_4bit_quant_type: z.enum(['nf4', 'fp4']),
          bnb_4bit_use_double_quant: z.boolean(),
          blocksize: z.number().int().min(2),
          quantize_lm_head: z.boolean(),
          quantize_embeddings: z.boolean(),
        }),
        // The GGUF's own quantization, kept as stored (--quant keep).
        z.object({
          quant_method: z.literal('gguf'),
          kept_as_stored: z.literal(true),
          tensor_types: z.record(z.string(), z.number().int().nonnegative()),
        }),
      ])
      .nullable(),
    data: z
      .object({
        format: z.enum(['text', 'completion', 'alpaca', 'chat']),
        columns: z.record(z.string(), z.string()).nullable(),
        template: z.string().nullable(),
        chat_template: z.string().nullable(),
        train_on_prompt: z.boolean(),
        seq_len: z.number().int().positive(),
      })
      .nullable(),
  })
  .passthrough();

function toJson(r: AdapterRecipe): Record<string, unknown> {
  const q = r.quantization;
  const d = r.data;
  return {
    qlora_ts_version: VERSION,
    base_model_path: r.baseModelPath,
    quantization_config: !q
      ? null
      : q.quantType === 'keep'
        ? { quant_method: 'gguf', kept_as_stored: true, tensor_types: { ...q.tensorTypes } }
        : {
            quant_method: 'bitsandbytes',
            load_in_4bit: true,
            bnb_4bit_quant_type: q.quantType,
            bnb_4bit_use_double_quant: q.doubleQuant,
            blocksize: q.blocksize,
            quantize_lm_head: q.quantizeHead,
            quantize_embeddings: q.quantizeEmbeddings,
          },
    data: d
      ? {
          format: d.format,
          columns: d.columns ? { ...d.columns } : null,
          template: d.template,
          chat_template: d.chatTemplateName,
          train_on_prompt: d.trainOnPrompt,
          seq_len: d.seqLen,
        }
      : null,
  };
}

/** Writes qlora_config.json (and chat_template.jinja when there is one) into an adapter folder, atomically. */
export function writeAdapterRecipe(dir: string, recipe: AdapterRecipe): void {
  const json = new TextEncoder().encode(`${JSON.stringify(toJson(recipe), null, 2)}\n`);
  writeFileAtomic(path.join(dir, RECIPE_FILE), (fd) => writeAll(fd, json));
  const templateFile = path.join(dir, CHAT_TEMPLATE_FILE);
  if (recipe.chatTemplate !== null) {
    const text = new TextEncoder().encode(recipe.chatTemplate);
    writeFileAtomic(templateFile, (fd) => writeAll(fd, text));
  } else fs.rmSync(templateFile, { force: true });
}

/**
 * Reads the recipe saved with an adapter folder; null for anything that has none (a PEFT adapter
 * trained elsewhere, a GGUF LoRA file). A malformed file is an error naming the file and the field.
 */
export function readAdapterRecipe(adapterPath: string): AdapterRecipe | null {
  if (!fs.existsSync(adapterPath) || !fs.statSync(adapterPath).isDirectory()) return null;
  const file = path.join(adapterPath, RECIPE_FILE);
  if (!fs.existsSync(file)) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: invalid JSON: ${(e as Error).message}`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${file}: ${issue.path.join('.') || 'file'}: ${issue.message}`);
  }
  const j = parsed.data;
  const q = j.quantization_config;
  const d = j.data;
  const templateFile = path.join(adapterPath, CHAT_TEMPLATE_FILE);
  return {
    baseModelPath: j.base_model_path,
    quantization: !q
      ? null
      : q.quant_method === 'gguf'
        ? { quantType: 'keep', tensorTypes: q.tensor_types }
        : {
            quantType: q.bnb_4bit_quant_type,
            blocksize: q.blocksize,
            doubleQuant: q.bnb_4bit_use_double_quant,
            quantizeHead: q.quantize_lm_head,
            quantizeEmbeddings: q.quantize_embeddings,
          },
    data: d
      ? {
          format: d.format,
          columns: d.columns,
          template: d.template,
          chatTemplateName: d.chat_template,
          trainOnPrompt: d.train_on_prompt,
          seqLen: d.seq_len,
        }
      : null,
    chatTemplate: fs.existsSync(templateFile) ? fs.readFileSync(templateFile, 'utf8') : null,
  };
}

/** One line naming a 4-bit base, e.g. "NF4, block 64, double quant, 4-bit lm_head". */
export function describeBase(q: BaseQuantization | null): string {
  if (!q) return 'full precision (f32)';
  if (q.quantType === 'keep') {
    const types = Object.entries(q.tensorTypes)
      .map(([t, n]) => `${t} ×${n}`)
      .join(', ');
    return `the GGUF's own quantization as stored${types ? ` (${types})` : ''}`;
  }
  const parts = [q.quantType.toUpperCase(), `block ${q.blocksize}`];
  if (q.doubleQuant) parts.push('double quant');
  if (q.quantizeHead) parts.push('4-bit lm_head');
  if (q.quantizeEmbeddings) parts.push('4-bit embeddings');
  return parts.join(', ');
}
