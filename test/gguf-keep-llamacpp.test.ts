// --quant keep against llama.cpp (issue 17.3): a Q4_K_M-like GGUF (Q4_K projections, Q6_K attn_v /
// ffn_down / output, a Q5_K one, F32 norms) with a random LoRA, exported as a GGUF LoRA and applied
// by llama.cpp (node-llama-cpp, CPU, one thread) to the same file, agrees with our forward on the
// kept blocks as closely as llama.cpp's own 8-bit activation quantization allows (its CPU kernels
// quantize activations to Q8_K / Q8_0 for these weight types: rounding ours the same way leaves only
// summation order), and far more closely than the same adapter on an NF4 base (what training without
// --quant keep tunes it to): every gap is measured (largest next-token log-probability difference
// and KL(llama.cpp ‖ ours)) and printed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { getLlama, type Llama } from 'node-llama-cpp';
import { getBackend } from '../src/backends/index.js';
import { CpuBackend } from '../src/backends/cpu/index.js';
import type { GgmlWeight } from '../src/quant/ggml-blocks.js';
import type { Backend } from '../src/tensor/backend.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { applyPeftAdapter, type PeftAdapter } from '../src/io/peft.js';
import { buildLlama, type BuildOptions, type LoraConfig } from '../src/models/build.js';
import { KvCache } from '../src/models/llama.js';
import { llamaCppNextTokens, writeRandomPeftAdapter } from './export-support.js';
import { writeRandomGguf } from './ggml-support.js';

let llama: Llama;
let tmp: string;

before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-keep-cpp-'));
});

after(async () => {
  await llama?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]!);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  const lse = Math.log(sum) + max;
  return Float64Array.from(row, (v) => v - lse);
}

/**
 * The cpu backend with llama.cpp's activation rounding in front of the kept-block matmuls: each row
 * of x is quantized as its CPU kernels do before a dot product with these weight types (to 8 bits
 * per value with one scale per 256 values, Q8_K, for the K-quants; per 32 values, Q8_0, for Q4_0 and
 * Q8_0; scale = max|x|/127, nearest integer). What is left between this and llama.cpp is summation
 * order.
 */
class Q8ActivationsCpu extends CpuBackend {
  override matmulGgml(x: Tensor, w: GgmlWeight, out: Tensor, beta = 0): void {
    const block = w.type === 'q4_0' || w.type === 'q8_0' ? 32 : 256;
    const v = Float32Array.from(x.data as Float32Array);
    for (let b = 0; b < v.length; b += block) {
      let amax = 0;
      for (let i = b; i < b + block; i++) amax = Math.max(amax, Math.abs(v[i]!));
      const d = amax / 127;
      for (let i = b; i < b + block; i++) v[i] = d === 0 ? 0 : Math.round(v[i]! / d) * d;
    }
    const xq = this.fromArray(v, x.shape);
    try {
      super.matmulGgml(xq, w, out, beta);
    } finally {
      xq.dispose();
    }
  }
}

/** Largest |Δ log p| and KL(p ‖ q) over the vocabulary (p = llama.cpp's). */
function gap(
  theirs: Float64Array,
  ours: Float64Array,
): { maxLogProb: number; maxLikely: number; kl: number } {
  let maxLogProb = 0;
  let maxLikely = 0;
  let kl = 0;
  for (let i = 0; i < ours.length; i++) {
    const t = theirs[i]!;
    if (!(t > Math.log(1e-30))) continue;
    maxLogProb = Math.max(maxLogProb, Math.abs(t - ours[i]!));
    if (t > Math.log(1e-3)) maxLikely = Math.max(maxLikely, Math.abs(t - ours[i]!));
    kl += Math.exp(t) * (t - ours[i]!);
  }
  return { maxLogProb, maxLikely, kl };
}

test('a GGUF LoRA applied by llama.cpp to the same Q4_K_M-like file agrees with our --quant keep forward far better than with an NF4 base', async (t) => {
  const file = path.join(tmp, 'q4km.gguf');
  const types: Record<string, 'Q6_K' | 'Q5_K'> = {
    'blk.0.attn_v.weight': 'Q6_K',
    'blk.1.attn_v.weight': 'Q6_K',
    'blk.0.ffn_down.weight': 'Q6_K',
    'blk.1.ffn_down.weight': 'Q6_K',
    'blk.1.attn_output.weight': 'Q5_K',
    'output.weight': 'Q6_K',
  };
  writeRandomGguf(file, (name) => types[name] ?? 'Q4_K', 21);
  const ck = openCheckpoint(file);
  const lora: LoraConfig = {
    r: 8,
    alpha: 16,
    dropout: 0,
    useRslora: false,
    init: 'kaiming',
    seed: 1,
    targets: 'all-linear',
    layers: null,
  };
  let adapter: PeftAdapter;
  try {
    adapter = await writeRandomPeftAdapter(path.join(tmp, 'peft'), ck.config, ck, lora, 5, 0.05);
  } finally {
    ck.close();
  }
  const loraFile = path.join(tmp, 'adapter.gguf');
  exportGgufLora(adapter, openCheckpoint(file).config, loraFile);

  const prompts = [
    [1, 45, 300, 12, 7, 99],
    [1, 400, 2, 17, 256, 31, 8, 77, 190],
    [1, 5, 6, 7],
  ];
  const ours = async (options: Partial<BuildOptions>, be?: Backend): Promise<Float64Array[]> => {
    be ??= await getBackend('cpu');
    const c = openCheckpoint(file);
    const model = await buildLlama(c.config, c, {
      backend: be,
      lora: adapter.lora,
      maxPositions: 64,
      ...options,
    });
    c.close();
    applyPeftAdapter(model, adapter);
    const arena = be.createArena(1 << 22);
    try {
      const out: Float64Array[] = [];
      for (const p of prompts) {
        const cache = new KvCache(model, 32);
        arena.reset();
        out.push(logSoftmax(await model.forwardCached(Int32Array.from(p), cache, arena, 1).read()));
        cache.dispose();
      }
      return out;
    } finally {
      arena.dispose();
      model.dispose();
    }
  };
  const kept = await ours({ keepQuantized: true });
  const keptQ8 = await ours({ keepQuantized: true }, new Q8ActivationsCpu());
  const nf4 = await ours({ quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true } });
  const cppModel = await llama.loadModel({ modelPath: file });
  const theirs: Float64Array[] = [];
  try {
    for (const p of prompts)
      theirs.push((await llamaCppNextTokens(cppModel, p, 1, loraFile)).logProbs);
  } finally {
    await cppModel.dispose();
  }
  const worst = (ourSide: Float64Array[]) =>
    ourSide.reduce(
      (w, o, i) => {
        const g = gap(theirs[i]!, o);
        return {
          maxLogProb: Math.max(w.maxLogProb, g.maxLogProb),
          maxLikely: Math.max(w.maxLikely, g.maxLikely),
          kl: Math.max(w.kl, g.kl),
        };
      },
      { maxLogProb: 0, maxLikely: 0, kl: 0 },
    );
  const keepGap = worst(kept);
  const q8Gap = worst(keptQ8);
  const nf4Gap = worst(nf4);
  t.diagnostic(
    `llama.cpp vs ours, next token after ${prompts.length} prompts (worst prompt): --quant keep max |Δlog p| ${keepGap.maxLogProb.toExponential(2)} (${keepGap.maxLikely.toExponential(2)} over tokens with p > 1e-3), KL ${keepGap.kl.toExponential(2)}; NF4 base max |Δlog p| ${nf4Gap.maxLogProb.toExponential(2)} (${nf4Gap.maxLikely.toExponential(2)}), KL ${nf4Gap.kl.toExponential(2)}; --quant keep with llama.cpp's 8-bit activation rounding simulated max |Δlog p| ${q8Gap.maxLogProb.toExponential(2)}, KL ${q8Gap.kl.toExponential(2)}`,
  );
  // The gap left with --quant keep is llama.cpp's 8-bit activations: rounding ours the same way The NF4 base's re-quantized weights leave a far larger one.
  assert.ok(
    q8Gap.kl * 4 < keepGap.kl,
    `simulated 8-bit activations: KL ${q8Gap.kl} vs ${keepGap.kl}`,
  );
  assert.ok(
    keepGap.kl * 20 < nf4Gap.kl,
    `keep KL ${keepGap.kl} is not far below NF4's ${nf4Gap.kl}`,
  );
  assert.ok(
    keepGap.maxLogProb * 5 < nf4Gap.maxLogProb,
    `keep max |Δlog p| ${keepGap.maxLogProb} is not far below NF4's ${nf4Gap.maxLogProb}`,
  );
});
