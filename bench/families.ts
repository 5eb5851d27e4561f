// The families table (`npm run bench:families`; issue 16's closing note): for every family in the
// registry (src/models/registry.ts FAMILIES, so a new family appears by itself), a tiny model of
// its real config (`qlora init-random --config FAMILY --tiny`: the family's default shape shrunk
// with its structure kept) with seeded random weights, and:
// - loads HF / GGUF: the HF folder and the GGUF exported from it (f32) load, and their logits over
//   a prompt differ by at most the number shown (full precision, cpu backend);
// - llama.cpp (node-llama-cpp, CPU, f32 KV cache, no flash attention): the largest difference of
//   next-token log-probabilities over the vocabulary between llama.cpp and our forward, for the
//   base GGUF, base + exported GGUF LoRA, and the merged GGUF, and whether the 8-token greedy
//   continuations agree. Gemma's GeGLU runs in llama.cpp on an fp16 GELU table (ggml_vec_geglu_f32,
//   up to ~1e-3 relative per element): for Gemma our side is also run with that rounding
//   (test/gemma-support.ts ggmlGeluBackend), and both numbers are shown;
// - PEFT names: the adapter keys we save equal those HF PEFT wrote for the family (the fixture's
//   keys with layer indices folded: fixtures/families/FAMILY-peft-keys.json, or
//   DEFAULT-SHAPE-peft-keys.json, or fixtures/gemma/FAMILY-tiny/reference.json), or "no fixture";
// - gradcheck: LoRA gradients of the whole model (ref backend, float64, random LoRA B) against
//   central finite differences at 3 coordinates of every LoRA tensor: the largest relative error;
// - trains: eval loss before → after 30 QLoRA steps (NF4 base, LoRA r 8 on every projection).
// Writes bench/results/families.md (the machine named in it). Nothing is asserted here; the tests
// hold each of these to its bound.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama, type Llama } from 'node-llama-cpp';
import { getBackend } from '../src/backends/index.js';
import { initRandomModel } from '../src/export/init-random.js';
import { exportGgufModel } from '../src/export/gguf-model.js';
import { exportGgufLora } from '../src/export/gguf-lora.js';
import { vocabFromHfFolder } from '../src/export/gguf-vocab.js';
import { type Checkpoint, openCheckpoint } from '../src/io/checkpoint.js';
import { savePeftAdapter } from '../src/io/peft.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { loadModel } from '../src/load/load-model.js';
import { Batcher } from '../src/data/batching.js';
import { loadDataset } from '../src/data/dataset.js';
import { buildLlama, type LoraConfig } from '../src/models/build.js';
import type { ModelBatch } from '../src/models/llama.js';
import { FAMILIES } from '../src/models/registry.js';
import type { ModelFamily } from '../src/models/family.js';
import { HfTokenizer } from '../src/tokenizer/hf-tokenizer.js';
import { Trainer, type TrainOptions } from '../src/train/trainer.js';
import {
  llamaCppNextTokens,
  logProbDiff,
  ourNextTokens,
  writeRandomPeftAdapter,
  type NextTokenResult,
} from '../test/export-support.js';
import { allLogits, ggmlGeluBackend } from '../test/gemma-support.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(root, 'bench', 'results', 'families.md');
const DATA = path.join(root, 'fixtures', 'datasets', 'tinyshakespeare', 'input.txt');
const PROMPT = 'the cat sat on the mat, and then it ran away into the garden!';
const STEPS = 8;
const TRAIN_STEPS = 30;
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const e = (x: number): string => x.toExponential(1);

const LORA: LoraConfig = {
  r: 4,
  alpha: 8,
  dropout: 0,
  useRslora: false,
  init: 'kaiming',
  seed: 3,
  targets: 'all-linear',
  layers: null,
};

interface Row {
  family: string;
  shape: string;
  structure: string;
  hfGguf: string;
  cpp: string;
  greedy: string;
  peft: string;
  grad: string;
  train: string;
}

/** Max |a − b| over two logit arrays. */
function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function hfVsGguf(ck: Checkpoint, gguf: string, ids: number[]): Promise<number> {
  const be = await getBackend('cpu');
  const g = openCheckpoint(gguf);
  const a = await buildLlama(ck.config, ck, { backend: be });
  const b = await buildLlama(g.config, g, { backend: be });
  try {
    return maxDiff(await allLogits(a, ids), await allLogits(b, ids));
  } finally {
    a.dispose();
    b.dispose();
    g.close();
  }
}

async function llamaCpp(
  llama: Llama,
  dir: string,
  ck: Checkpoint,
  prompt: number[],
  gemma: boolean,
): Promise<{ cpp: string; greedy: string }> {
  const base = path.join(dir, 'base.gguf');
  const loraPath = path.join(dir, 'adapter.gguf');
  const mergedPath = path.join(dir, 'merged.gguf');
  const vocab = vocabFromHfFolder(ck.path, ck.config.vocabSize);
  const adapter = await writeRandomPeftAdapter(
    path.join(dir, 'peft'),
    ck.config,
    ck,
    LORA,
    99,
    0.2,
  );
  exportGgufLora(adapter, ck.config, loraPath);
  exportGgufModel(ck, mergedPath, { dtype: 'f32', vocab, adapter });
  const cppBase = await llama.loadModel({ modelPath: base });
  const cppMerged = await llama.loadModel({ modelPath: mergedPath });
  try {
    const theirs = [
      await llamaCppNextTokens(cppBase, prompt, STEPS, null),
      await llamaCppNextTokens(cppBase, prompt, STEPS, loraPath),
      await llamaCppNextTokens(cppMerged, prompt, STEPS, null),
    ];
    const ours = async (backend?: Awaited<ReturnType<typeof getBackend>>) => {
      const b = await ourNextTokens(ck.config, ck, null, prompt, STEPS, backend);
      const l = await ourNextTokens(ck.config, ck, adapter, prompt, STEPS, backend);
      return [b, l, l];
    };
    const cell = (mine: NextTokenResult[]): string =>
      mine.map((m, i) => e(logProbDiff(m.logProbs, theirs[i]!.logProbs).max)).join(' / ');
    const exact = await ours();
    const same = (mine: NextTokenResult[]): string =>
      mine.every((m, i) => m.greedy.join() === theirs[i]!.greedy.join()) ? 'same' : 'differs';
    if (!gemma) return { cpp: cell(exact), greedy: same(exact) };
    const sim = await ours(ggmlGeluBackend(await getBackend('cpu')));
    return {
      cpp: `${cell(sim)} (exact GELU: ${cell(exact)})`,
      greedy: `${same(sim)} (exact GELU: ${same(exact)})`,
    };
  } finally {
    await cppBase.dispose();
    await cppMerged.dispose();
  }
}

/** Our PEFT keys against the family's fixture of HF PEFT's keys, layer indices folded. */
async function peftNames(f: ModelFamily, ck: Checkpoint, dir: string): Promise<string> {
  const fold = (keys: string[]): string[] =>
    [...new Set(keys.map((k) => k.replace(/\.layers\.\d+\./, '.layers.N.')))].sort();
  const candidates = [
    path.join(root, 'fixtures', 'families', `${f.name}-peft-keys.json`),
    // Phi-3's fixtures are named by shape (one per variant): the family's default shape's.
    ...(f.defaultShape
      ? [path.join(root, 'fixtures', 'families', `${f.defaultShape}-peft-keys.json`)]
      : []),
    path.join(root, 'fixtures', 'gemma', `${f.name}-tiny`, 'reference.json'),
  ];
  const file = candidates.find((c) => fs.existsSync(c));
  if (!file) return 'no fixture';
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    keys?: string[];
    peft_keys?: string[];
  };
  const want = fold(json.keys ?? json.peft_keys ?? []);
  const model = await buildLlama(ck.config, ck, { backend: await getBackend('cpu'), lora: LORA });
  try {
    await savePeftAdapter(path.join(dir, 'peft-names'), model, LORA, null);
  } finally {
    model.dispose();
  }
  const st = SafetensorsFile.open(path.join(dir, 'peft-names', 'adapter_model.safetensors'));
  const got = fold([...st.tensors.keys()]);
  st.close();
  const rel = path.relative(root, file);
  return JSON.stringify(got) === JSON.stringify(want)
    ? `equal (${want.length} names, ${rel})`
    : `DIFFER from ${rel}`;
}

/** Whole-model LoRA gradient check on ref float64: the largest relative error. */
async function gradcheck(ck: Checkpoint): Promise<string> {
  const be = await getBackend('ref');
  const model = await buildLlama(ck.config, ck, { backend: be, dtype: 'f64', lora: LORA });
  const V = ck.config.vocabSize;
  const T = 10;
  const ids = Int32Array.from({ length: 2 * T }, (_, i) => (i * 37 + 5) % V);
  const batch: ModelBatch = {
    batchSize: 2,
    seqLen: T,
    inputIds: ids,
    labels: Int32Array.from({ length: 2 * T }, (_, i) => (i % 4 === 3 ? -100 : (i * 53 + 11) % V)),
    positions: Int32Array.from({ length: 2 * T }, (_, i) => i % T),
    segmentIds: Int32Array.from({ length: 2 * T }, () => 0),
  };
  const step = {
    training: true,
    stepSeed: 1,
    gradientCheckpointing: false,
    lossChunkRows: 7,
    gradScale: 1,
  };
  const arena = be.createArena(1 << 16, 'step');
  const layerArena = be.createArena(1 << 16, 'layer');
  try {
    const params = model.parameters();
    params.forEach((p, i) => {
      if (!p.name.endsWith('lora_B.weight')) return;
      const d = p.value.data as Float64Array;
      for (let j = 0; j < d.length; j++) d[j] = Math.sin(1000 * i + 7 * j) * 0.3;
    });
    for (const p of params) p.zeroGrad();
    await model.lossAndGradients(batch, arena, layerArena, step, true);
    const analytic = await Promise.all(
      params.map(async (p) => Float64Array.from(await p.grad!.read())),
    );
    const loss = async (): Promise<number> => {
      arena.reset();
      const r = await model.lossAndGradients(batch, arena, layerArena, step, false);
      return r.lossSum / r.tokens;
    };
    const h = 1e-6;
    let worst = 0;
    let n = 0;
    let failures = 0;
    for (const [pi, p] of params.entries()) {
      const data = p.value.data as Float64Array;
      for (const j of [0, Math.floor(data.length / 2), data.length - 1]) {
        const old = data[j]!;
        data[j] = old + h;
        const up = await loss();
        data[j] = old - h;
        const down = await loss();
        data[j] = old;
        const numeric = (up - down) / (2 * h);
        const a = analytic[pi]![j]!;
        const err = Math.abs(a - numeric);
        if (err > 1e-6 + 1e-5 * Math.abs(numeric)) failures++;
        worst = Math.max(worst, err / Math.max(Math.abs(numeric), 1e-6));
        n++;
      }
    }
    return `${failures === 0 ? 'pass' : `FAIL (${failures})`}: ${n} coords, max rel err ${e(worst)}`;
  } finally {
    arena.dispose();
    layerArena.dispose();
    model.dispose();
  }
}

async function trains(dir: string, out: string): Promise<string> {
  const loaded = await loadModel({
    model: dir,
    backend: 'cpu',
    computeDtype: 'f32',
    quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
    lora: { ...LORA, r: 8, alpha: 16 },
    maxPositions: 64,
  });
  try {
    const data = await loadDataset(DATA, loaded.tokenizer, {
      maxSeqLen: 64,
      validFraction: 0.1,
      seed: 1,
    });
    const padId = loaded.tokenizer.eosId ?? 0;
    const train = new Batcher(data.train, { batchSize: 4, seqLen: 64, seed: 1, padId });
    const valid = new Batcher(data.valid, { batchSize: 4, seqLen: 64, shuffle: false, padId });
    const evalBatches = (): ModelBatch[] => [...valid.epoch(0)].slice(0, 4);
    const options: TrainOptions = {
      maxSteps: TRAIN_STEPS,
      lr: 5e-3,
      schedule: 'cosine',
      warmupSteps: 2,
      gradAccum: 1,
      maxGradNorm: 1,
      weightDecay: 0,
      optimizer: 'adamw',
      seed: 9,
      gradientCheckpointing: false,
      lossChunkRows: 64,
      evalEvery: 0,
      saveEvery: 0,
      keepCheckpoints: 1,
      earlyStoppingPatience: 0,
      onNonFinite: 'stop',
      resume: false,
      baseModel: path.basename(dir),
      outputDir: out,
    };
    const trainer = new Trainer(loaded.model, options, train.source(), evalBatches);
    const before = (await trainer.evaluate())!.loss;
    await trainer.run();
    const after = (await trainer.evaluate())!.loss;
    return `${before.toFixed(3)} → ${after.toFixed(3)}`;
  } finally {
    loaded.model.dispose();
  }
}

async function guard(what: string, fn: () => Promise<string>): Promise<string> {
  try {
    return await fn();
  } catch (err) {
    log(`${what}: ${(err as Error).stack}`);
    return `error: ${(err as Error).message.split('\n')[0]}`;
  }
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-families-'));
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
const rows: Row[] = [];
const t0 = Date.now();
try {
  for (const f of FAMILIES) {
    const dir = path.join(tmp, f.name);
    const hf = path.join(dir, 'hf');
    fs.mkdirSync(dir, { recursive: true });
    log(`${f.name}: init-random --config ${f.name} --tiny`);
    const r = initRandomModel({ config: f.name, output: hf, tiny: true, seed: 7 });
    const c = r.config;
    const ck = openCheckpoint(hf);
    try {
      const tok = HfTokenizer.fromDirectory(hf);
      const prompt = [
        ...(c.bosTokenId !== null ? [c.bosTokenId] : []),
        ...tok.encode(PROMPT, { addSpecialTokens: false }),
      ];
      const gemma = f.name.startsWith('gemma');
      const sliding =
        c.slidingLayers?.filter(Boolean).length ?? (c.slidingWindow ? c.numLayers : 0);
      const structure = [
        `${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads}/${c.numKvHeads} heads × ${c.headDim}`,
        c.slidingWindow ? `window ${c.slidingWindow} on ${sliding} layers` : null,
        c.tieWordEmbeddings ? 'tied' : null,
      ]
        .filter(Boolean)
        .join(', ');
      const ggufPath = path.join(dir, 'base.gguf');
      let exported = true;
      const hfGguf = await guard(`${f.name} gguf`, async () => {
        try {
          exportGgufModel(ck, ggufPath, {
            dtype: 'f32',
            vocab: vocabFromHfFolder(hf, c.vocabSize),
          });
        } catch (err) {
          exported = false;
          throw err;
        }
        return e(await hfVsGguf(ck, ggufPath, prompt));
      });
      log(`${f.name}: HF vs GGUF ${hfGguf}`);
      let cpp = { cpp: 'not exported', greedy: '—' };
      if (exported)
        cpp = await llamaCpp(llama, dir, ck, prompt, gemma).catch((err: Error) => {
          log(`${f.name} llama.cpp: ${err.stack}`);
          return { cpp: `error: ${err.message.split('\n')[0]}`, greedy: '—' };
        });
      log(`${f.name}: llama.cpp ${cpp.cpp}`);
      const peft = await guard(`${f.name} peft`, () => peftNames(f, ck, dir));
      log(`${f.name}: PEFT ${peft}`);
      const grad = await guard(`${f.name} gradcheck`, () => gradcheck(ck));
      log(`${f.name}: gradcheck ${grad}`);
      const train = await guard(`${f.name} train`, () => trains(hf, path.join(dir, 'run')));
      log(`${f.name}: eval loss ${train}`);
      rows.push({
        family: f.name,
        shape: r.source,
        structure,
        hfGguf,
        ...cpp,
        peft,
        grad,
        train,
      });
    } finally {
      ck.close();
    }
  }
} finally {
  await llama.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
}

const cpu = os.cpus()[0]?.model ?? 'unknown';
const be = await getBackend('cpu');
const lines = [
  '# Model families: loading, llama.cpp parity, PEFT names, gradients, training',
  '',
  `Measured ${new Date().toISOString().slice(0, 10)} by \`npm run bench:families\` (bench/families.ts) in ${((Date.now() - t0) / 1000).toFixed(0)} s on ${cpu}, ${os.cpus().length} logical CPUs, cpu backend ${be.describe?.() ?? be.name}, Node ${process.version}.`,
  '',
  `Each family's default shape shrunk by \`qlora init-random --config FAMILY --tiny --seed 7\` (its structure kept: norms, activation, q/k norms, biases, tied head, rope, soft-caps, sliding/global layers), vocabulary 512 with init-random's byte-level tokenizer. Prompt: ${JSON.stringify(PROMPT)} (${'BOS + '}its tokens).`,
  '',
  '- **HF vs GGUF**: max |Δ logit| over every prompt position between the HF folder and the GGUF exported from it (f32, cpu backend).',
  `- **llama.cpp Δ log p**: max |Δ log p| of the next token over the vocabulary, llama.cpp (node-llama-cpp, CPU, f32 KV cache, no flash attention) vs our forward, for base / base + GGUF LoRA (r ${LORA.r}, random B) / merged GGUF; **greedy**: whether the ${STEPS}-token greedy continuations agree in all three. For Gemma the first numbers compare with our forward run with llama.cpp's fp16 GELU table (ggml_vec_geglu_f32), those in parentheses with our exact GELU.`,
  '- **PEFT names**: our adapter keys against the names HF PEFT wrote for the family (fixture), layer indices folded.',
  '- **gradcheck**: whole-model LoRA gradients (ref backend, float64) vs central finite differences at 3 coordinates of every LoRA tensor; pass when every one is within 1e-6 + 1e-5·|numeric|.',
  `- **eval loss**: on tinyshakespeare's validation split (4 batches of 4 × 64 tokens) before → after ${TRAIN_STEPS} QLoRA steps (NF4 base, LoRA r 8 on every projection, lr 5e-3).`,
  '',
  '| family | from | tiny structure | HF vs GGUF | llama.cpp Δ log p (base / LoRA / merged) | greedy | PEFT names | gradcheck | eval loss |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.family} | ${r.shape} | ${r.structure} | ${r.hfGguf} | ${r.cpp} | ${r.greedy} | ${r.peft} | ${r.grad} | ${r.train} |`,
  ),
  '',
];
fs.mkdirSync(path.dirname(OUT), { recursive: true });
fs.writeFileSync(OUT, lines.join('\n'));
log(`wrote ${path.relative(root, OUT)}`);
