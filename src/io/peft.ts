/**
 * Hugging Face PEFT LoRA adapter files (docs/formats.md §7): `adapter_config.json` and
 * `adapter_model.safetensors` with PEFT's exact key names
 * (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` [r, in], `lora_B` [out, r]).
 */
import { fs, path } from './host.js';
import { z } from 'zod';
import type { LoraConfig } from '../models/build.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { ProjectionName } from '../models/family.js';
import { FAMILIES, familyOf, familyTargets } from '../models/registry.js';
import { type AdapterRecipe, writeAdapterRecipe } from './adapter-recipe.js';
import { writeAll, writeFileAtomic } from './atomic-write.js';
import { SafetensorsFile, writeSafetensors } from './safetensors.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

const adapterConfigSchema = z.object({
  peft_type: z.literal('LORA', {
    message: 'only LoRA adapters are supported (peft_type must be "LORA")',
  }),
  r: z.number().int().positive(),
  lora_alpha: z.number().positive(),
  lora_dropout: z.number().min(0).lt(1).default(0),
  target_modules: z
    .union([z.array(z.string()), z.string()])
    .nullable()
    .default(null),
  use_rslora: z.boolean().default(false),
  use_dora: z.boolean().default(false),
  fan_in_fan_out: z.boolean().default(false),
  bias: z.string().default('none'),
  layers_to_transform: z
    .union([z.array(z.number().int()), z.number().int()])
    .nullable()
    .default(null),
  init_lora_weights: z.union([z.boolean(), z.string()]).default(true),
  rank_pattern: z.record(z.string(), z.number()).nullable().default({}),
  alpha_pattern: z.record(z.string(), z.number()).nullable().default({}),
  modules_to_save: z.array(z.string()).nullable().default(null),
  base_model_name_or_path: z.string().nullable().default(null),
  task_type: z.string().nullable().default('CAUSAL_LM'),
});

export type AdapterConfigJson = z.infer<typeof adapterConfigSchema>;

export interface PeftAdapter {
  readonly dir: string;
  readonly config: AdapterConfigJson;
  /** The LoRA settings to build a model with. */
  readonly lora: LoraConfig;
  /** PEFT key → values. */
  readonly tensors: Map<string, { shape: number[]; values: Float32Array }>;
}

/** The adapter_config.json we write: a conservative key set that older PEFT releases also accept. */
export function adapterConfigJson(
  lora: LoraConfig,
  baseModel: string | null,
  architecture = 'llama',
): Record<string, unknown> {
  // target_modules are the HF module names of the family (models/families/), as PEFT lists them.
  // Roles a family fuses name its fused module (q_proj → qkv_proj on Phi-3).
  const family = familyOf(architecture);
  const roles = familyTargets(architecture, lora.targets);
  const targets = [
    ...new Set([...roles].map((r) => family.projections.find((p) => p.name === r)?.peft ?? r)),
  ];
  const config: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: lora.init === 'gaussian' ? 'gaussian' : true,
    layers_pattern: null,
    layers_to_transform: lora.layers ? [...lora.layers] : null,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r: lora.r,
    rank_pattern: {},
    revision: null,
    target_modules: targets.sort(),
    task_type: 'CAUSAL_LM',
    use_rslora: lora.useRslora,
  };
  // PEFT writes json.dumps(..., indent=2, sort_keys=True).
  return Object.fromEntries(
    Object.entries(config).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

/**
 * `<module>.<name>` of every projection some family has → its role. Which family an adapter is for
 * is checked against the model when it is applied (checkAdapterAgainst, applyPeftAdapter).
 */
const PROJECTION_BY_MODULE = new Map<string, ProjectionName>(
  FAMILIES.flatMap((f) => f.projections.map((p) => [`${p.module}.${p.peft}`, p.name] as const)),
);

/** Index of the first NaN/±Inf in `values`, or -1. */
export function firstNonFinite(values: ArrayLike<number>): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) return i;
  return -1;
}

/** Throws naming the tensor (and where it comes from) when `values` holds a NaN/Inf. */
export function assertFiniteTensor(
  values: ArrayLike<number>,
  tensor: string,
  where: string,
  action: string,
): void {
  const i = firstNonFinite(values);
  if (i >= 0)
    throw new Error(
      `${where}: tensor '${tensor}' has a non-finite value (${values[i]}) at element ${i}; ${action}`,
    );
}

/**
 * Saves the model's LoRA weights as a PEFT adapter folder (each file written atomically), with the
 * training recipe (qlora_config.json, chat_template.jinja) when one is given. The weights are read
 * back from the backend (async: a device backend maps its buffers). An adapter with a NaN/Inf
 * weight is never written: nothing can use it, and it would replace a good one.
 */
export async function savePeftAdapter(
  dir: string,
  model: CausalLM,
  lora: LoraConfig,
  baseModel: string | null,
  recipe?: AdapterRecipe | null,
): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const tensors = [];
  for (const p of model.parameters()) {
    const values = await p.value.read();
    assertFiniteTensor(
      values,
      p.name,
      dir,
      'refusing to write a non-finite adapter (training diverged: lower --lr)',
    );
    tensors.push({
      name: p.name,
      dtype: 'F32',
      shape: [...p.value.shape],
      data: values instanceof Float32Array ? values : Float32Array.from(values),
    });
  }
  if (tensors.length === 0) throw new Error('the model has no LoRA layers to save');
  writeSafetensors(path.join(dir, ADAPTER_WEIGHTS), tensors, { format: 'pt' });
  const json = new TextEncoder().encode(
    `${JSON.stringify(adapterConfigJson(lora, baseModel, model.dims.architecture), null, 2)}\n`,
  );
  writeFileAtomic(path.join(dir, ADAPTER_CONFIG), (fd) => writeAll(fd, json));
  if (recipe) writeAdapterRecipe(dir, recipe);
}

/** Reads and validates a PEFT LoRA adapter folder (trained here or by PEFT). */
export function loadPeftAdapter(dir: string): PeftAdapter {
  const configPath = path.join(dir, ADAPTER_CONFIG);
  const weightsPath = path.join(dir, ADAPTER_WEIGHTS);
  if (!fs.existsSync(configPath))
    throw new Error(`${dir}: no ${ADAPTER_CONFIG} (not a PEFT adapter folder)`);
  if (!fs.existsSync(weightsPath)) {
    const bin = fs.existsSync(path.join(dir, 'adapter_model.bin'));
    throw new Error(
      `${dir}: no ${ADAPTER_WEIGHTS}${bin ? ' (adapter_model.bin is a pickle; convert it to safetensors)' : ''}`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  } catch (e) {
    throw new Error(`${configPath}: invalid JSON: ${(e as Error).message}`);
  }
  const parsed = adapterConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(
      `${configPath}: ${issue.path.join('.') || 'config'}: ${issue.message.replace(/, received undefined$/, ', but the field is missing')}`,
    );
  }
  const config = parsed.data;
  if (config.use_dora) throw new Error(`${configPath}: DoRA adapters are not supported`);
  if (config.fan_in_fan_out)
    throw new Error(`${configPath}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported`);
  if (config.bias !== 'none')
    throw new Error(`${configPath}: bias "${config.bias}" is not supported (only "none")`);
  if (config.modules_to_save && config.modules_to_save.length > 0) {
    throw new Error(
      `${configPath}: modules_to_save (${config.modules_to_save.join(', ')}) is not supported`,
    );
  }
  if (
    Object.keys(config.rank_pattern ?? {}).length > 0 ||
    Object.keys(config.alpha_pattern ?? {}).length > 0
  ) {
    throw new Error(`${configPath}: rank_pattern/alpha_pattern are not supported`);
  }

  const file = SafetensorsFile.open(weightsPath);
  const tensors = new Map<string, { shape: number[]; values: Float32Array }>();
  const present = new Set<ProjectionName>();
  const layers = new Set<number>();
  try {
    for (const [name, info] of file.tensors) {
      const m =
        /^base_model\.model\.model\.layers\.(\d+)\.(\w+)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$/.exec(
          name,
        );
      if (!m)
        throw new Error(
          `${weightsPath}: unexpected tensor '${name}' (not a LoRA weight of a decoder layer)`,
        );
      const proj = PROJECTION_BY_MODULE.get(`${m[2]}.${m[3]}`);
      if (!proj)
        throw new Error(`${weightsPath}: '${name}' targets unsupported module '${m[2]}.${m[3]}'`);
      if (info.shape.length !== 2)
        throw new Error(
          `${weightsPath}: '${name}' must be 2-D, has shape [${info.shape.join(', ')}]`,
        );
      const rDim = m[4] === 'A' ? info.shape[0] : info.shape[1];
      if (rDim !== config.r)
        throw new Error(
          `${weightsPath}: '${name}' has rank ${rDim} but adapter_config.json says r=${config.r}`,
        );
      present.add(proj);
      layers.add(Number(m[1]));
      const values = file.readF32(name);
      assertFiniteTensor(
        values,
        name,
        weightsPath,
        'refusing a non-finite adapter (it would turn every output into NaN)',
      );
      tensors.set(name.replace('.default.weight', '.weight'), { shape: info.shape, values });
    }
  } finally {
    file.close();
  }
  if (tensors.size === 0) throw new Error(`${weightsPath}: no LoRA tensors`);
  const layerList =
    config.layers_to_transform === null ? null : [config.layers_to_transform].flat();
  const lora: LoraConfig = {
    r: config.r,
    alpha: config.lora_alpha,
    dropout: config.lora_dropout,
    useRslora: config.use_rslora,
    init: config.init_lora_weights === 'gaussian' ? 'gaussian' : 'kaiming',
    seed: 0,
    targets: [...present],
    layers: layerList,
  };
  return { dir, config, lora, tensors };
}

/**
 * Copies an adapter's weights into a model built with `adapter.lora` (same targets/layers), checking
 * every name and shape: a missing, extra or mis-shaped tensor is an error naming it.
 */
export function applyPeftAdapter(model: CausalLM, adapter: PeftAdapter): void {
  const params = model.parameters();
  const expected = new Set(params.map((p) => p.name));
  for (const name of adapter.tensors.keys()) {
    if (!expected.has(name))
      throw new Error(
        `${adapter.dir}: adapter tensor '${name}' has no matching layer in this model`,
      );
  }
  for (const p of params) {
    const t = adapter.tensors.get(p.name);
    if (!t) throw new Error(`${adapter.dir}: adapter has no tensor '${p.name}'`);
    if (t.shape.length !== p.value.shape.length || t.shape.some((d, i) => d !== p.value.shape[i])) {
      throw new Error(
        `${adapter.dir}: '${p.name}' has shape [${t.shape.join(', ')}] but the model needs [${p.value.shape.join(', ')}] (adapter for a different model?)`,
      );
    }
    p.value.write(t.values);
  }
}
