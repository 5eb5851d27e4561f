/**
 * The one tokenizer interface every source (tokenizer.json, GGUF vocabulary, llama2.c
 * tokenizer.bin) implements, so data preparation, generation and evaluation never care where the
 * vocabulary came from.
 */
export interface Tokenizer {
  readonly vocabSize: number;
  /** Ids of the special tokens, or null when the vocabulary has none. */
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** Every id that ends generation (eos plus e.g. <|eot_id|>, <|im_end|>). */
  readonly eosIds: readonly number[];
  readonly padId: number | null;
  readonly unkId: number | null;
  /** Text of bos/eos, as chat templates need them (e.g. "<s>", "</s>"). */
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** Whether encode(text, {addSpecialTokens: true}) prepends BOS / appends EOS (from the tokenizer config). */
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** The model's Jinja chat template, if its files carry one. */
  readonly chatTemplate: string | null;
  /** The file the chat template came from (tokenizer_config.json, chat_template.jinja, a .gguf), for messages. */
  readonly chatTemplateFile?: string;

  /**
   * Token ids of `text`. addSpecialTokens (default true) adds BOS/EOS as the tokenizer config says;
   * special-token text inside `text` (e.g. "<|im_start|>") maps to its special id.
   */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /** Text of `ids`; skipSpecialTokens (default false) drops control tokens. */
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  /** Vocabulary lookups. */
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /** True for control/special tokens (bos, eos, chat markers). */
  isSpecial(id: number): boolean;
}
