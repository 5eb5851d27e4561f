/**
 * The models a server offers: one loaded base, under its own name, and any number of LoRA adapters
 * over it, each under a name of its own. An adapter is read and put on the backend the first time a
 * request names it (a LoraView: only its A and B are new, the base is shared), and stays loaded.
 * Each model's chat template: the server's --chat-template, else the one the adapter was trained
 * with (its chat_template.jinja), else the tokenizer's own.
 */
import { ChatTemplate } from '../data/chat-template.js';
import { loadLoraAdapter } from '../io/gguf-lora.js';
import { readAdapterRecipe } from '../io/adapter-recipe.js';
import type { LlamaConfig } from '../io/config.js';
import { applyPeftAdapter } from '../io/peft.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { LlamaModel } from '../models/llama.js';
import { loraView } from '../models/lora-view.js';
import type { Tokenizer } from '../tokenizer/types.js';

export interface ServedModel {
  readonly name: string;
  readonly model: CausalLM;
  readonly tokenizer: Tokenizer;
  /** null: the model has no chat template, so chat requests are refused. */
  readonly chat: ChatTemplate | null;
  /** Tokens of context (the model's maximum positions). */
  readonly contextLength: number;
  /** The adapter's path, or null for the base. */
  readonly adapter: string | null;
}

export interface AdapterSpec {
  readonly name: string;
  readonly path: string;
}

export interface RegistryOptions {
  /** The base as loaded (without LoRA layers). */
  readonly base: LlamaModel;
  readonly baseName: string;
  readonly config: LlamaConfig;
  readonly tokenizer: Tokenizer;
  readonly adapters: readonly AdapterSpec[];
  /** --chat-template for every model: Jinja source and where it came from. */
  readonly chatTemplate?: { readonly source: string; readonly name: string } | null;
}

export class ModelRegistry {
  private readonly loaded = new Map<string, ServedModel>();
  private readonly specs = new Map<string, AdapterSpec>();

  constructor(private readonly o: RegistryOptions) {
    for (const a of o.adapters) {
      if (a.name === o.baseName || this.specs.has(a.name))
        throw new Error(`model name '${a.name}' is given twice (the base is '${o.baseName}')`);
      this.specs.set(a.name, a);
    }
    this.loaded.set(o.baseName, {
      name: o.baseName,
      model: o.base,
      tokenizer: o.tokenizer,
      chat: this.chatTemplate(null),
      contextLength: o.config.maxPositionEmbeddings,
      adapter: null,
    });
  }

  /** Every model name, the base first. */
  names(): string[] {
    return [this.o.baseName, ...this.specs.keys()];
  }

  has(name: string): boolean {
    return this.loaded.has(name) || this.specs.has(name);
  }

  /** The model of that name, loading an adapter on first use; undefined for an unknown name. */
  get(name: string): ServedModel | undefined {
    const ready = this.loaded.get(name);
    if (ready) return ready;
    const spec = this.specs.get(name);
    if (!spec) return undefined;
    const adapter = loadLoraAdapter(spec.path, this.o.config);
    const view = loraView(this.o.base, adapter.lora);
    try {
      applyPeftAdapter(view, adapter);
    } catch (e) {
      view.dispose();
      throw e;
    }
    const served: ServedModel = {
      name,
      model: view,
      tokenizer: this.o.tokenizer,
      chat: this.chatTemplate(spec.path),
      contextLength: this.o.config.maxPositionEmbeddings,
      adapter: spec.path,
    };
    this.loaded.set(name, served);
    return served;
  }

  private chatTemplate(adapterPath: string | null): ChatTemplate | null {
    const t = this.o.tokenizer;
    const fromAdapter = adapterPath ? (readAdapterRecipe(adapterPath)?.chatTemplate ?? null) : null;
    const chosen = this.o.chatTemplate ?? null;
    const source = chosen?.source ?? fromAdapter ?? t.chatTemplate;
    if (!source) return null;
    const file = chosen
      ? chosen.name
      : fromAdapter
        ? `${adapterPath}/chat_template.jinja`
        : t.chatTemplateFile;
    return new ChatTemplate(source, {
      bosToken: t.bosToken,
      eosToken: t.eosToken,
      ...(file !== undefined ? { file } : {}),
    });
  }

  /** Frees the adapters' weights and the base. */
  dispose(): void {
    for (const m of this.loaded.values()) if (m.adapter !== null) m.model.dispose();
    this.o.base.dispose();
    this.loaded.clear();
  }
}
