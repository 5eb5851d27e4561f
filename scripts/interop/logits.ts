/**
 * qlora-ts's logits for given token ids, for comparison with another implementation
 * (scripts/peft-interop.py compares them with transformers + PEFT). The model is loaded as
 * `qlora generate` loads it: the adapter's recorded base (its qlora_config.json: NF4, block size,
 * double quantization) unless --quant says otherwise, and a full-precision base for an adapter that
 * records none (one trained by PEFT). Every matmul computes in f32 (--compute-dtype f32), so the
 * only differences left are summation order.
 *
 *   node --import tsx scripts/interop/logits.ts --model M [--adapter A] [--quant nf4|fp4|none]
 *     --ids IDS.json --out LOGITS.json
 *
 * IDS.json: [[id, ...], ...] (one sequence per row); LOGITS.json: {"base": "...", "logits":
 * [[[V floats] per position] per sequence]}.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { buildOptionsOf } from '../../src/cli/base-options.js';
import { describeBase, readAdapterRecipe } from '../../src/io/adapter-recipe.js';
import type { BaseQuantization } from '../../src/io/adapter-recipe.js';
import { loadModel } from '../../src/load/load-model.js';
import { KvCache } from '../../src/models/llama.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    adapter: { type: 'string' },
    quant: { type: 'string' },
    ids: { type: 'string' },
    out: { type: 'string' },
  },
});
if (!values.model || !values.ids || !values.out) {
  console.error('usage: logits.ts --model M [--adapter A] [--quant nf4|fp4|none] --ids F --out F');
  process.exit(2);
}

const trained = values.adapter ? (readAdapterRecipe(values.adapter)?.quantization ?? null) : null;
let base: BaseQuantization | null = trained;
// A 4-bit recipe's settings (a GGUF kept as stored, --quant keep, has none of them).
const bnb = trained?.quantType === 'keep' ? null : trained;
if (values.quant === 'none') base = null;
else if (values.quant === 'nf4' || values.quant === 'fp4')
  base = {
    quantType: values.quant,
    blocksize: bnb?.blocksize ?? 64,
    doubleQuant: bnb?.doubleQuant ?? true,
    quantizeHead: bnb?.quantizeHead ?? false,
    quantizeEmbeddings: bnb?.quantizeEmbeddings ?? false,
  };
else if (values.quant !== undefined) throw new Error(`--quant: ${values.quant}?`);

const sequences = JSON.parse(fs.readFileSync(values.ids, 'utf8')) as number[][];
const { model } = await loadModel({
  model: values.model,
  adapter: values.adapter,
  backend: 'cpu',
  computeDtype: 'f32',
  ...buildOptionsOf(base),
});
const arena = model.backend.createArena(1 << 22, 'interop-logits');
const logits: number[][][] = [];
try {
  for (const ids of sequences) {
    const cache = new KvCache(model, ids.length);
    try {
      arena.reset();
      const t = model.forwardCached(Int32Array.from(ids), cache, arena, ids.length);
      const flat = await t.read();
      const v = model.dims.vocabSize;
      const rows: number[][] = [];
      for (let i = 0; i < ids.length; i++) rows.push(Array.from(flat.subarray(i * v, (i + 1) * v)));
      logits.push(rows);
    } finally {
      cache.dispose();
    }
  }
} finally {
  model.dispose();
}
fs.writeFileSync(values.out, JSON.stringify({ base: describeBase(base), logits }));
console.log(`wrote ${values.out} (${sequences.length} sequences, base ${describeBase(base)})`);
