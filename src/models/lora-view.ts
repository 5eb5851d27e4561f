/**
 * Several LoRA adapters over one loaded base: a view is a LlamaModel whose layers hold the base's
 * own frozen projections (and embeddings, norms, head, rotary tables), with fresh LoraLinear
 * wrappers where the adapter targets them. Building a view allocates only the adapter's A and B,
 * so a server keeps one copy of a (4-bit) base however many adapters it serves; disposing a view
 * frees only those.
 */
import type { DType } from '../tensor/dtype.js';
import type { FrozenLinear } from '../nn/linear.js';
import { LoraLinear } from '../nn/lora.js';
import { type LoraConfig, resolveTargets } from './build.js';
import { checkLoraRank } from './lora-rank.js';
import { LlamaModel, type LlamaLayer, type Projection } from './llama.js';
import { type ProjectionName, projectionKey } from './family.js';
import { familyOf } from './registry.js';

/** A LlamaModel that shares everything but its LoRA weights with a base model. */
export class LoraView extends LlamaModel {
  /** Frees the adapter's weights only: the base belongs to whoever loaded it. */
  override dispose(): void {
    for (const l of this.loraLayers()) for (const p of l.parameters()) p.dispose();
  }
}

/**
 * A view of `base` (a model built without LoRA) carrying zero-initialised LoRA layers of `lora`:
 * the same parameter names buildLlama gives (PEFT keys), so applyPeftAdapter fills them.
 */
export function loraView(base: LlamaModel, lora: LoraConfig): LoraView {
  if (base.loraLayers().length > 0)
    throw new Error('loraView: the base model already carries LoRA layers');
  const targets = resolveTargets(lora.targets, base.dims);
  const layerSet = lora.layers ? new Set(lora.layers) : null;
  for (const l of layerSet ?? []) {
    if (!Number.isInteger(l) || l < 0 || l >= base.layers.length)
      throw new Error(`LoRA layer ${l} out of range (model has ${base.layers.length})`);
  }
  checkLoraRank(base.dims, lora.r, targets);
  const dtype: DType = base.dtype;
  const created: LoraLinear[] = [];
  try {
    const family = familyOf(base.dims);
    const layers: LlamaLayer[] = base.layers.map((layer, i) => {
      const proj = {} as Record<ProjectionName, Projection>;
      for (const slot of family.projections) {
        const name = slot.name;
        const frozen = layer.proj[name] as FrozenLinear;
        if (targets.has(name) && (!layerSet || layerSet.has(i))) {
          const l = new LoraLinear(
            frozen,
            `base_model.model.${projectionKey(slot, i)}`,
            lora,
            dtype,
          );
          created.push(l);
          proj[name] = l;
        } else proj[name] = frozen;
      }
      return { ...layer, proj };
    });
    return new LoraView(
      base.dims,
      base.backend,
      dtype,
      base.embedding,
      layers,
      base.finalNorm,
      base.lmHead,
      // The same object: rotary tables grown for one view serve them all.
      base.rope,
    );
  } catch (e) {
    for (const l of created) for (const p of l.parameters()) p.dispose();
    throw e;
  }
}
