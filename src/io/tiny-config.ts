/**
 * A real model's config.json shrunk to a few layers, a small hidden size and vocabulary while
 * keeping what makes the family what it is (`qlora init-random --tiny`, tests): the ratios that
 * shape attention (query heads per key/value head, head_dim against hidden/heads — Qwen3's 128 is
 * twice hidden/heads), the MLP's width ratio, biases, tied embeddings, rope theta and scaling,
 * sliding windows, and every field the family reads that this does not size. A family whose
 * structure needs more (a local/global layer pattern) shrinks those fields in its `tinyHf`.
 */
import { configFromHf } from './config.js';
import { familyOf } from '../models/registry.js';

/** The sizes of a tiny model. */
export interface TinySizes {
  /** Decoder layers (default 2). */
  readonly layers?: number;
  /** Hidden size (default about 64: heads × an even head_dim where head_dim is hidden/heads). */
  readonly hidden?: number;
  /** Query heads (default 4, rounded to whole GQA groups; at least one group). */
  readonly heads?: number;
  /** Vocabulary (default 512). */
  readonly vocab?: number;
}

/** The shrunk config.json (a new object; `hf` is not changed). */
export function tinyHfConfig(
  hf: Record<string, unknown>,
  sizes: TinySizes = {},
  label = 'config.json',
): Record<string, unknown> {
  const c = configFromHf(hf, label);
  const family = familyOf(c);
  // Whole groups of query heads per key/value head, as in the real model.
  const group = c.numHeads / c.numKvHeads;
  const kvHeads = Math.max(1, Math.floor((sizes.heads ?? 4) / group));
  const heads = kvHeads * group;
  const want = sizes.hidden ?? 64;
  // head_dim as a multiple of hidden/heads, as in the real model (even: RoPE rotates pairs).
  // Where the real head_dim is hidden/heads, the hidden size is heads·head_dim (near `want`).
  const ratio = c.headDim / (c.hiddenSize / c.numHeads);
  const even = (x: number): number => Math.max(2, 2 * Math.round(x / 2));
  const headDim = even((ratio * want) / heads);
  const hidden = ratio === 1 ? heads * headDim : want;
  const intermediate = Math.max(
    8,
    8 * Math.round((hidden * c.intermediateSize) / c.hiddenSize / 8),
  );
  const layers = Math.min(sizes.layers ?? 2, c.numLayers);
  if (hf.pad_token_id != null) delete (hf = { ...hf }).pad_token_id;
  const out: Record<string, unknown> = {
    ...hf,
    hidden_size: hidden,
    intermediate_size: intermediate,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    vocab_size: sizes.vocab ?? 512,
  };
  // Explicit when the config states it or the real head_dim is not hidden/heads.
  if (hf.head_dim != null || ratio !== 1) out.head_dim = headDim;
  if (typeof hf.max_window_layers === 'number') out.max_window_layers = layers;
  // Special ids past the small vocabulary move to its last ids (a tokenizer written for the tiny
  // model, as init-random's, then names its own).
  const vocab = out.vocab_size as number;
  const inRange = (v: unknown, last: number): unknown => {
    if (typeof v === 'number') return v < vocab ? v : last;
    if (Array.isArray(v)) return v.map((x) => (typeof x === 'number' && x >= vocab ? last : x));
    return v;
  };
  out.bos_token_id = inRange(hf.bos_token_id, vocab - 2);
  out.eos_token_id = inRange(hf.eos_token_id, vocab - 1);
  if (hf.bos_token_id === undefined) delete out.bos_token_id;
  if (hf.eos_token_id === undefined) delete out.eos_token_id;
  return family.hf.tinyHf ? family.hf.tinyHf(out, layers, hf) : out;
}
