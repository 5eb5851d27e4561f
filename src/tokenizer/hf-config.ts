/**
 * Readers for the loosely typed Hugging Face side files next to tokenizer.json:
 * tokenizer_config.json (special tokens, add_bos/add_eos flags, chat template) and
 * generation_config.json (eos ids). Field shapes vary between model repos and transformers
 * versions, so every reader accepts all spellings seen in the wild and ignores the rest.
 */

export type JsonObject = Record<string, unknown>;

/** A special token in tokenizer_config.json: either "<s>" or {"content": "<s>", ...}. */
export function specialTokenText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (
    value !== null &&
    typeof value === 'object' &&
    typeof (value as JsonObject).content === 'string'
  ) {
    return (value as JsonObject).content as string;
  }
  return null;
}

export function optionalBoolean(value: unknown): boolean | undefined {
  return typeof value === 'boolean' ? value : undefined;
}

/**
 * The chat template: a string, or a list of {name, template} (transformers picks "default"), or
 * (older exports) an object keyed by name.
 */
export function chatTemplateOf(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.filter(
      (t): t is { name: string; template: string } =>
        t !== null &&
        typeof t === 'object' &&
        typeof t.name === 'string' &&
        typeof t.template === 'string',
    );
    return named.find((t) => t.name === 'default')?.template ?? null;
  }
  if (value !== null && typeof value === 'object') {
    const def = (value as JsonObject).default;
    return typeof def === 'string' ? def : null;
  }
  return null;
}

/** generation_config.json eos_token_id: a number or a list of numbers. */
export function idList(value: unknown): number[] {
  if (typeof value === 'number' && Number.isInteger(value)) return [value];
  if (Array.isArray(value))
    return value.filter((v): v is number => typeof v === 'number' && Number.isInteger(v));
  return [];
}

/** The additional_special_tokens list (strings or {content} objects). */
export function additionalSpecialTokens(config: JsonObject): string[] {
  const list = config.additional_special_tokens;
  if (!Array.isArray(list)) return [];
  return list.map(specialTokenText).filter((t): t is string => t !== null);
}

/**
 * Texts of tokens that end a turn in common chat formats. llama.cpp marks the same texts as
 * end-of-generation when a vocabulary has them (llama-vocab.cpp, special_eog_ids), because many
 * configs list only the base-model eos while the chat template ends turns with these.
 */
export const END_OF_TURN_TOKENS: readonly string[] = [
  '<|eot_id|>',
  '<|im_end|>',
  '<|end|>',
  '<end_of_turn>',
  '<|endoftext|>',
  '<|eom_id|>',
  '<EOT>',
  '<｜end▁of▁sentence｜>',
];
