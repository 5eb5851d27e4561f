/**
 * What every model-using command needs: a checkpoint (HF folder, GGUF, llama2.c .bin), its
 * tokenizer (found next to it unless --tokenizer says otherwise), an optional adapter (PEFT folder
 * or GGUF LoRA), built on a backend with or without a 4-bit base.
 */
import { fs } from '../io/host.js';
import { type BackendChoice, type ComputeDtypeChoice, resolveBackend } from '../backends/index.js';
import type { Backend } from '../tensor/backend.js';
import type { BaseQuantization } from '../io/adapter-recipe.js';
import { applyPeftAdapter, type PeftAdapter } from '../io/peft.js';
import { loadLoraAdapter } from '../io/gguf-lora.js';
import { type BuildOptions, buildLlama, LORA_DEFAULTS, type LoraConfig } from '../models/build.js';
import { type Checkpoint, openCheckpoint } from '../io/checkpoint.js';
import type { LlamaModel } from '../models/llama.js';
import { QLORA_DEFAULTS, type Quantize4bitOptions } from '../quant/quantize4bit.js';
import { GGML_QUANT_TYPES } from '../quant/ggml-blocks.js';
import { loadTokenizer, tokenizerPathFor } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/types.js';

export interface LoadOptions {
  readonly model: string;
  readonly tokenizer?: string;
  /** A registered backend's name (default cpu), or a Backend object of your own. */
  readonly backend?: BackendChoice | Backend;
  /** Precision of the 4-bit matmuls (resolveBackend's ResolveOptions.computeDtype); default f32. */
  readonly computeDtype?: ComputeDtypeChoice;
  /** 4-bit base (QLoRA) or full precision (null). */
  readonly quantization?: Quantize4bitOptions | null;
  /** Also store an untied lm_head in 4-bit. */
  readonly quantizeHead?: boolean;
  /** Also store the embedding table in 4-bit. */
  readonly quantizeEmbedding?: boolean;
  /**
   * A GGUF's projections (and untied lm_head) in the file's own quantized blocks, as stored
   * (`--quant keep`: Q4_0, Q8_0, Q4_K, Q5_K, Q6_K; F16/F32 ones stay full precision). Excludes
   * `quantization`.
   */
  readonly keepQuantized?: boolean;
  /** Fresh LoRA adapters to train; what is left out comes from LORA_DEFAULTS (r 16, alpha 32, …). */
  readonly lora?: Partial<LoraConfig> | null;
  /** A trained adapter to apply (PEFT folder, or a GGUF LoRA file). */
  readonly adapter?: string;
  readonly maxPositions?: number;
  readonly onTensor?: BuildOptions['onTensor'];
}

export interface LoadedModel {
  readonly model: LlamaModel;
  readonly tokenizer: Tokenizer;
  readonly checkpoint: Pick<Checkpoint, 'config' | 'source' | 'path' | 'tensorNames'>;
  readonly adapter: PeftAdapter | null;
  /** The 4-bit base as built (null: full precision): what an adapter trained on it records. */
  readonly quantization: BaseQuantization | null;
}

export async function loadModel(o: LoadOptions): Promise<LoadedModel> {
  if (!fs.existsSync(o.model)) throw new Error(`${o.model}: no such file or folder`);
  const backend =
    typeof o.backend === 'object'
      ? o.backend
      : await resolveBackend(o.backend ?? 'cpu', { computeDtype: o.computeDtype });
  if (o.adapter && o.lora)
    throw new Error('cannot both apply an existing adapter and create a new one');
  const ck = openCheckpoint(o.model);
  let model: LlamaModel;
  let adapter: PeftAdapter | null = null;
  try {
    // A PEFT folder, or a GGUF LoRA (whose Q/K rows are mapped back to this model's layout).
    adapter = o.adapter ? loadLoraAdapter(o.adapter, ck.config) : null;
    model = await buildLlama(ck.config, ck, {
      backend,
      quantization: o.quantization ?? null,
      quantizeHead: o.quantizeHead,
      quantizeEmbedding: o.quantizeEmbedding,
      keepQuantized: o.keepQuantized,
      lora: adapter ? adapter.lora : o.lora ? { ...LORA_DEFAULTS, ...o.lora } : null,
      maxPositions: o.maxPositions,
      onTensor: o.onTensor,
    });
  } finally {
    ck.close();
  }
  if (adapter) applyPeftAdapter(model, adapter);
  const tokenizerPath = o.tokenizer ?? tokenizerPathFor(o.model);
  const tokenizer = loadTokenizer(tokenizerPath, { vocabSize: ck.config.vocabSize });
  if (tokenizer.vocabSize > ck.config.vocabSize) {
    throw new Error(
      `tokenizer ${tokenizerPath} has ${tokenizer.vocabSize} tokens but the model only ${ck.config.vocabSize}`,
    );
  }
  return {
    model,
    tokenizer,
    checkpoint: {
      config: ck.config,
      source: ck.source,
      path: ck.path,
      tensorNames: ck.tensorNames,
    },
    adapter,
    quantization: o.keepQuantized
      ? { quantType: 'keep', tensorTypes: keptTensorTypes(ck) }
      : o.quantization
        ? {
            quantType: o.quantization.quantType ?? QLORA_DEFAULTS.quantType,
            blocksize: o.quantization.blocksize ?? QLORA_DEFAULTS.blocksize,
            doubleQuant: o.quantization.doubleQuant ?? QLORA_DEFAULTS.doubleQuant,
            quantizeHead: Boolean(o.quantizeHead),
            quantizeEmbeddings: Boolean(o.quantizeEmbedding),
          }
        : null,
  };
}

/** ggml type name → how many projection / lm_head weights the GGUF stores in it (what --quant keep kept). */
export function keptTensorTypes(ck: Checkpoint): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of ck.tensorNames) {
    if (!/_proj\.weight$|^lm_head\.weight$/.test(name)) continue;
    const t = ck.ggmlTypeOf?.(name) ?? null;
    const key = t ? GGML_QUANT_TYPES[t].name : (ck.storedTypeName?.(name) ?? 'F32');
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}
