/**
 * Reading a LoRA adapter for a model: a PEFT folder, or a GGUF LoRA file (llama.cpp
 * convert_lora_to_gguf.py / llama-adapter.cpp; docs/formats.md §5.6) turned back into the shape
 * loadPeftAdapter returns: B's attn_q/attn_k rows un-permuted from GGUF's interleaved RoPE layout to
 * HF's, alpha read as llama.cpp applies it (alpha/r). applyPeftAdapter and everything downstream
 * (generate, further training) then work unchanged. Writing one is src/export/gguf-lora.ts.
 */
import { fs, path } from './host.js';
import { GgufReader } from './gguf.js';
import {
  type AdapterConfigJson,
  assertFiniteTensor,
  loadPeftAdapter,
  type PeftAdapter,
} from './peft.js';
import { checkAdapterAgainst, peftKeyFor } from './peft-keys.js';
import { canonicalShapes, unpermuteInterleavedRows } from './checkpoint.js';
import type { LlamaConfig } from './config.js';
import { ggufArchitecture, interleavedHeads } from './gguf-architecture.js';
import type { LoraConfig } from '../models/build.js';
import {
  PROJECTIONS,
  type ProjectionName,
  projectionForGguf,
  projectionKey,
  projectionSlot,
} from '../models/family.js';
import { familyOf } from '../models/registry.js';

/**
 * Reads a GGUF LoRA adapter for a model with `config`, checking it the way llama.cpp does
 * (adapter type, architecture, A/B pairing and shapes), and returns it as a PEFT adapter in HF
 * layout. Projections the file leaves out in a layer it adapts get zero A/B (no change).
 */
export function loadGgufLoraAdapter(file: string, config: LlamaConfig): PeftAdapter {
  const label = path.basename(file);
  const fail = (m: string): never => {
    throw new Error(`${label}: ${m}`);
  };
  const reader = GgufReader.open(file);
  try {
    const meta = reader.metadata;
    const type = meta.get('general.type');
    if (type !== 'adapter')
      fail(
        `not a LoRA adapter (general.type is ${JSON.stringify(type ?? null)}, expected "adapter")`,
      );
    const adapterType = meta.get('adapter.type');
    if (adapterType !== 'lora')
      fail(`adapter.type ${JSON.stringify(adapterType ?? null)} is not supported (only "lora")`);
    const arch = meta.get('general.architecture');
    const want = ggufArchitecture(config);
    if (arch !== want)
      fail(
        `adapter is for architecture ${JSON.stringify(arch ?? null)} but the model is "${want}"`,
      );
    const alphaRaw = meta.get('adapter.lora.alpha') ?? 0;
    if (typeof alphaRaw !== 'number' || !Number.isFinite(alphaRaw) || alphaRaw < 0)
      fail(`adapter.lora.alpha ${String(alphaRaw)} is not a non-negative number`);
    const shapes = canonicalShapes(config);
    const family = familyOf(config);

    const pairs = new Map<string, { a?: string; b?: string }>();
    for (const t of reader.tensors) {
      const m = /^(.+\.weight)\.lora_([ab])$/.exec(t.name);
      if (!m) fail(`unexpected tensor '${t.name}' (a LoRA adapter holds only *.lora_a / *.lora_b)`);
      const p = pairs.get(m![1]!) ?? {};
      p[m![2] as 'a' | 'b'] = t.name;
      pairs.set(m![1]!, p);
    }
    if (pairs.size === 0) fail('no LoRA tensors');

    let rank = 0;
    const tensors = new Map<string, { shape: number[]; values: Float32Array }>();
    const layers = new Set<number>();
    const targets = new Set<ProjectionName>();
    for (const [weight, p] of pairs) {
      if (!p.a || !p.b)
        fail(`'${weight}' has lora_${p.a ? 'a' : 'b'} but no lora_${p.a ? 'b' : 'a'}`);
      const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(weight);
      // The family's GGUF projection names (inverse of ggufNameFor for LoRA targets).
      const target = m ? projectionForGguf(family, m[2]!) : undefined;
      if (!m || !target)
        fail(`LoRA on '${weight}' is not supported (only attention and MLP projections)`);
      const layer = Number(m![1]);
      const hf = `${projectionKey(target!, layer)}.weight`;
      const shape =
        shapes.get(hf) ??
        fail(`'${weight}' targets layer ${layer}, but the model has ${config.numLayers} layers`);
      const [out, inF] = shape as [number, number];
      const a = reader.tensor(p.a!);
      const b = reader.tensor(p.b!);
      // llama.cpp: model.ne[0] == a.ne[0], model.ne[1] == b.ne[1], a.ne[1] == b.ne[0].
      if (a.ne.length !== 2 || b.ne.length !== 2) fail(`'${weight}' LoRA tensors must be 2-D`);
      if (a.ne[1] !== b.ne[0])
        fail(
          `'${p.a}' dims [${a.ne.join(', ')}] and '${p.b}' dims [${b.ne.join(', ')}] disagree on the rank (lora_a tensor is not transposed?)`,
        );
      if (a.ne[0] !== inF || b.ne[1] !== out) {
        fail(
          `'${weight}' LoRA dims a [${a.ne.join(', ')}], b [${b.ne.join(', ')}] do not fit the model's [${out}, ${inF}] weight (needs a [${inF}, r], b [r, ${out}]; adapter for a different model?)`,
        );
      }
      const r = a.ne[1]!;
      if (rank !== 0 && r !== rank) fail(`mixed LoRA ranks (${rank} and ${r}) are not supported`);
      rank = r;
      const h = interleavedHeads(config, hf);
      const bValues = reader.readF32(p.b!);
      const aValues = reader.readF32(p.a!);
      const refuse = 'refusing a non-finite adapter (it would turn every output into NaN)';
      assertFiniteTensor(aValues, p.a!, file, refuse);
      assertFiniteTensor(bValues, p.b!, file, refuse);
      tensors.set(peftKeyFor(hf, 'A'), { shape: [r, inF], values: aValues });
      tensors.set(peftKeyFor(hf, 'B'), {
        shape: [out, r],
        values: h > 0 ? unpermuteInterleavedRows(bValues, h, r) : bValues,
      });
      layers.add(layer);
      targets.add(target!.name);
    }
    // Our models put the same LoRA targets on every adapted layer: fill gaps with zeros.
    for (const layer of layers) {
      for (const proj of targets) {
        const hf = `${projectionKey(projectionSlot(family, proj), layer)}.weight`;
        if (tensors.has(peftKeyFor(hf, 'A'))) continue;
        const [out, inF] = shapes.get(hf)! as [number, number];
        tensors.set(peftKeyFor(hf, 'A'), {
          shape: [rank, inF],
          values: new Float32Array(rank * inF),
        });
        tensors.set(peftKeyFor(hf, 'B'), {
          shape: [out, rank],
          values: new Float32Array(out * rank),
        });
      }
    }
    // llama.cpp: scale = alpha/r, or 1 when alpha is 0.
    const alpha = alphaRaw === 0 ? rank : (alphaRaw as number);
    const layerList = layers.size === config.numLayers ? null : [...layers].sort((x, y) => x - y);
    const targetList = PROJECTIONS.filter((p) => targets.has(p));
    const lora: LoraConfig = {
      r: rank,
      alpha,
      dropout: 0,
      useRslora: false,
      init: 'kaiming',
      seed: 0,
      targets: targetList,
      layers: layerList,
    };
    const adapterConfig: AdapterConfigJson = {
      peft_type: 'LORA',
      r: rank,
      lora_alpha: alpha,
      lora_dropout: 0,
      target_modules: [...targetList],
      use_rslora: false,
      use_dora: false,
      fan_in_fan_out: false,
      bias: 'none',
      layers_to_transform: layerList,
      init_lora_weights: true,
      rank_pattern: {},
      alpha_pattern: {},
      modules_to_save: null,
      base_model_name_or_path: null,
      task_type: 'CAUSAL_LM',
    };
    return { dir: file, config: adapterConfig, lora, tensors };
  } finally {
    reader.close();
  }
}

/** A LoRA adapter from a PEFT folder or a GGUF LoRA file (what `qlora generate --adapter` accepts). */
export function loadLoraAdapter(p: string, config: LlamaConfig): PeftAdapter {
  if (fs.existsSync(p) && fs.statSync(p).isFile()) {
    const fd = fs.openSync(p, 'r');
    const head = Buffer.alloc(4);
    try {
      fs.readSync(fd, head, 0, 4, 0);
    } finally {
      fs.closeSync(fd);
    }
    if (head.toString('latin1') === 'GGUF') return loadGgufLoraAdapter(p, config);
    throw new Error(
      `${p}: not a GGUF LoRA adapter (pass a PEFT adapter folder or a .gguf adapter)`,
    );
  }
  const adapter = loadPeftAdapter(p);
  const shapes = canonicalShapes(config);
  checkAdapterAgainst(adapter, (hf) => shapes.get(hf));
  return adapter;
}
