/**
 * The registry of model families (one descriptor per family, models/family.ts) and the
 * config-level derivations every layer uses: a config's family, its tensor table, projection
 * shapes and biases, and how config.json or a GGUF selects a family. A new family is a table in
 * `families/` and one line in FAMILIES.
 */
import {
  type FamilyDims,
  type ModelFamily,
  type ProjectionName,
  type ShapeDims,
  type TensorEntry,
  projectionKey,
  projectionSlot,
} from './family.js';
import { llama } from './families/llama.js';
import { mistral } from './families/mistral.js';
import { qwen2 } from './families/qwen2.js';
import { qwen3 } from './families/qwen3.js';
import { gemma2, gemma3 } from './families/gemma.js';
import { phi3 } from './families/phi3.js';

/** Every family, in the order config.json / GGUF matching tries them. */
export const FAMILIES: readonly ModelFamily[] = [
  llama,
  mistral,
  qwen2,
  qwen3,
  gemma2,
  gemma3,
  phi3,
];

const byName = new Map(FAMILIES.map((f) => [f.name, f]));

/** Every family's name (the normalized config's `architecture` values). */
export function familyNames(): string[] {
  return FAMILIES.map((f) => f.name);
}

/** The family of a config (llama when it names none) or of a name; throws naming the known ones. */
export function familyOf(c: { readonly architecture?: string } | string): ModelFamily {
  const name = typeof c === 'string' ? c : (c.architecture ?? 'llama');
  const f = byName.get(name);
  if (!f) throw new Error(`unknown model family '${name}' (known: ${familyNames().join(', ')})`);
  return f;
}

/** The family a config.json selects: by model_type when it has one, else by class name. */
export function familyForHf(
  modelType: string | undefined,
  classes: readonly string[],
): ModelFamily | undefined {
  if (modelType !== undefined) return FAMILIES.find((f) => f.hf.modelTypes.includes(modelType));
  return FAMILIES.find((f) => classes.some((c) => f.hf.classes.includes(c)));
}

/** Every config.json model_type some family reads. */
export function hfModelTypes(): string[] {
  return FAMILIES.flatMap((f) => f.hf.modelTypes);
}

/** The family that reads GGUF files whose general.architecture is `arch`, or undefined. */
export function familyForGguf(arch: string): ModelFamily | undefined {
  return FAMILIES.find((f) => f.gguf.reads.includes(arch));
}

/** Every general.architecture some family reads. */
export function ggufArchitectures(): string[] {
  return FAMILIES.flatMap((f) => f.gguf.reads);
}

/**
 * The projections of `c`'s family that LoRA targets select: every one for 'all-linear'; a name the
 * family has; or, for a role the family fuses (q_proj on Phi-3), the fused projection holding it
 * (qkv_proj), since its one adapter is what PEFT trains there. Throws for a name of no projection
 * of the family.
 */
export function familyTargets(
  c: { readonly architecture?: string } | string,
  targets: readonly string[] | 'all-linear',
): Set<ProjectionName> {
  const f = familyOf(c);
  if (targets === 'all-linear') return new Set(f.projections.map((p) => p.name));
  const out = new Set<ProjectionName>();
  for (const t of targets) {
    const slot =
      f.projections.find((p) => p.name === t || p.peft === t) ??
      f.projections.find((p) => (p.parts as readonly string[] | undefined)?.includes(t));
    if (!slot)
      throw new Error(
        `unknown LoRA target '${t}' for ${f.name} (choose from ${f.projections.map((p) => p.name).join(', ')} or all-linear)`,
      );
    out.add(slot.name);
  }
  return out;
}

/** Whether projection `name` has a bias under config `c`. */
export function projectionHasBias(c: FamilyDims, name: ProjectionName): boolean {
  return projectionSlot(familyOf(c), name).bias(c);
}

/** [out, in] of each projection's weight under `c`. */
export function projectionShapesOf(
  c: ShapeDims & { readonly architecture?: string },
): Partial<Record<ProjectionName, [number, number]>> {
  const out: Partial<Record<ProjectionName, [number, number]>> = {};
  for (const p of familyOf(c).projections) out[p.name] = p.shape(c);
  return out;
}

/**
 * Every tensor a checkpoint of `c` holds, in file order: the embedding, then per layer the
 * attention-group norms, the attention projections (each weight followed by its bias), the MLP
 * norms and projections; the final norm; lm_head only when untied.
 */
export function tensorTable(c: FamilyDims): TensorEntry[] {
  const f = familyOf(c);
  const out: TensorEntry[] = [
    {
      hf: 'model.embed_tokens.weight',
      gguf: 'token_embd.weight',
      shape: [c.vocabSize, c.hiddenSize],
      role: { kind: 'embedding' },
    },
  ];
  for (let l = 0; l < c.numLayers; l++) {
    for (const group of ['attention', 'mlp'] as const) {
      for (const n of f.layerNorms) {
        if (n.group !== group) continue;
        out.push({
          hf: `model.layers.${l}.${n.hf}`,
          gguf: `blk.${l}.${n.gguf}`,
          shape: [n.size(c)],
          role: { kind: 'norm', layer: l, norm: n.name },
        });
      }
      for (const p of f.projections) {
        if ((p.module === 'mlp') !== (group === 'mlp')) continue;
        const key = projectionKey(p, l);
        const shape = p.shape(c);
        out.push({
          hf: `${key}.weight`,
          gguf: `blk.${l}.${p.gguf}.weight`,
          shape: [...shape],
          role: { kind: 'weight', layer: l, proj: p.name },
        });
        if (p.bias(c)) {
          out.push({
            hf: `${key}.bias`,
            gguf: `blk.${l}.${p.gguf}.bias`,
            shape: [shape[0]],
            role: { kind: 'bias', layer: l, proj: p.name },
          });
        }
      }
    }
  }
  out.push({
    hf: 'model.norm.weight',
    gguf: 'output_norm.weight',
    shape: [c.hiddenSize],
    role: { kind: 'finalNorm' },
  });
  if (!c.tieWordEmbeddings) {
    out.push({
      hf: 'lm_head.weight',
      gguf: 'output.weight',
      shape: [c.vocabSize, c.hiddenSize],
      role: { kind: 'lmHead' },
    });
  }
  return out;
}

/** Canonical (HF) tensor names and shapes of a config, in file order. */
export function tensorShapes(c: FamilyDims): Map<string, number[]> {
  return new Map(tensorTable(c).map((e) => [e.hf, e.shape]));
}

/**
 * The Q/K head count over which an HF tensor's rows are interleaved in a GGUF of `c`'s family, or
 * 0 (not Q/K, or a NEOX-rope architecture).
 */
export function interleavedHeadsFor(c: FamilyDims, hf: string): number {
  const f = familyOf(c);
  if (f.gguf.rope !== 'norm') return 0;
  const m = /^model\.layers\.\d+\.(.+)\.(weight|bias)$/.exec(hf);
  if (!m) return 0;
  const p = f.projections.find((s) => `${s.module}.${s.peft}` === m[1]);
  return p?.ropeHeads?.(c) ?? 0;
}
