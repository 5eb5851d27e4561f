// openCheckpoint on real files: stories260K from llama2.c .bin and from GGUF give the same config
// and identical canonical (HF-layout) tensors, and a plain HF-convention forward pass over those
// tensors reproduces the independent reference NLL (which exercises the Q/K un-permutation).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, writeSafetensorsIndex } from '../src/io/safetensors.js';
import {
  type Checkpoint,
  openCheckpoint,
  permuteToInterleavedRows,
  unpermuteInterleavedRows,
} from '../src/io/checkpoint.js';
import { configToHf } from '../src/io/config.js';
import { GgufReader } from '../src/io/gguf.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const BIN = here('../fixtures/stories260K/stories260K.bin');
const GGUF = here('../fixtures/stories260K/stories260K.gguf');
const REFERENCE = JSON.parse(
  fs.readFileSync(here('../fixtures/stories260K/stories260K.reference.json'), 'utf8'),
) as {
  teacher_forced_nll: { token_ids: number[]; per_token_nll_nats: number[] };
  logits_pos0_after_bos: { all: number[] };
};

/** Teacher-forced per-token NLL with HF conventions (rotate_half RoPE), in float64. */
function referenceForward(
  ck: Checkpoint,
  ids: number[],
  rotateHalf = true,
): { nll: number[]; logits0: Float64Array } {
  const c = ck.config;
  const W = (n: string): Float32Array => ck.loadTensor(n);
  const hd = c.headDim;
  const matvec = (w: Float32Array, x: Float64Array, rows: number): Float64Array => {
    const cols = x.length;
    const y = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let j = 0; j < cols; j++) s += w[r * cols + j]! * x[j]!;
      y[r] = s;
    }
    return y;
  };
  const rmsnorm = (x: Float64Array, w: Float32Array): Float64Array => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const s = 1 / Math.sqrt(ss / x.length + c.rmsNormEps);
    return x.map((v, i) => v * s * w[i]!);
  };
  const rope = (v: Float64Array, heads: number, pos: number): void => {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const angle = pos * Math.pow(c.ropeTheta, -(2 * i) / hd);
        // rotate_half pairs (i, i + hd/2); llama2.c-style pairs (2i, 2i+1) for the negative control.
        const a = rotateHalf ? h * hd + i : h * hd + 2 * i;
        const b = rotateHalf ? a + hd / 2 : a + 1;
        const x0 = v[a]!;
        const x1 = v[b]!;
        v[a] = x0 * Math.cos(angle) - x1 * Math.sin(angle);
        v[b] = x0 * Math.sin(angle) + x1 * Math.cos(angle);
      }
    }
  };
  const embed = W('model.embed_tokens.weight');
  const head = c.tieWordEmbeddings ? embed : W('lm_head.weight');
  const layers = Array.from({ length: c.numLayers }, (_, l) => {
    const p = `model.layers.${l}.`;
    return {
      att: W(`${p}input_layernorm.weight`),
      q: W(`${p}self_attn.q_proj.weight`),
      k: W(`${p}self_attn.k_proj.weight`),
      v: W(`${p}self_attn.v_proj.weight`),
      o: W(`${p}self_attn.o_proj.weight`),
      ffn: W(`${p}post_attention_layernorm.weight`),
      gate: W(`${p}mlp.gate_proj.weight`),
      up: W(`${p}mlp.up_proj.weight`),
      down: W(`${p}mlp.down_proj.weight`),
      keys: [] as Float64Array[],
      values: [] as Float64Array[],
    };
  });
  const norm = W('model.norm.weight');
  const kvDim = c.numKvHeads * hd;
  const group = c.numHeads / c.numKvHeads;
  const nll: number[] = [];
  let logits0: Float64Array = new Float64Array(0);
  for (let pos = 0; pos < ids.length - 1; pos++) {
    let x = Float64Array.from(
      embed.subarray(ids[pos]! * c.hiddenSize, (ids[pos]! + 1) * c.hiddenSize),
    );
    for (const L of layers) {
      const h = rmsnorm(x, L.att);
      const q = matvec(L.q, h, c.numHeads * hd);
      const k = matvec(L.k, h, kvDim);
      rope(q, c.numHeads, pos);
      rope(k, c.numKvHeads, pos);
      L.keys.push(k);
      L.values.push(matvec(L.v, h, kvDim));
      const att = new Float64Array(c.numHeads * hd);
      for (let hh = 0; hh < c.numHeads; hh++) {
        const kvh = Math.floor(hh / group);
        const scores = L.keys.map((kk) => {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[hh * hd + i]! * kk[kvh * hd + i]!;
          return s / Math.sqrt(hd);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let i = 0; i < hd; i++) {
          let acc = 0;
          for (let t = 0; t < e.length; t++) acc += (e[t]! / z) * L.values[t]![kvh * hd + i]!;
          att[hh * hd + i] = acc;
        }
      }
      x = x.map((v, i) => v + matvec(L.o, att, c.hiddenSize)[i]!);
      const h2 = rmsnorm(x, L.ffn);
      const g = matvec(L.gate, h2, c.intermediateSize);
      const u = matvec(L.up, h2, c.intermediateSize);
      const act = g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]!);
      const d = matvec(L.down, act, c.hiddenSize);
      x = x.map((v, i) => v + d[i]!);
    }
    const logits = matvec(head, rmsnorm(x, norm), c.vocabSize);
    if (pos === 0) logits0 = logits;
    const m = Math.max(...logits);
    const lse = m + Math.log(logits.reduce((a, v) => a + Math.exp(v - m), 0));
    nll.push(lse - logits[ids[pos + 1]!]!);
  }
  return { nll, logits0 };
}

test('stories260K: .bin and .gguf give the same config (context length aside) and identical canonical tensors', () => {
  const a = openCheckpoint(BIN);
  const b = openCheckpoint(GGUF);
  try {
    assert.equal(a.source, 'llama2c');
    assert.equal(b.source, 'gguf');
    // The GGUF converter wrote context_length 2048; the model was trained (and the .bin says) 512.
    assert.equal(a.config.maxPositionEmbeddings, 512);
    assert.equal(b.config.maxPositionEmbeddings, 2048);
    assert.deepEqual({ ...b.config, maxPositionEmbeddings: 512 }, a.config);
    assert.deepEqual(
      {
        v: a.config.vocabSize,
        d: a.config.hiddenSize,
        f: a.config.intermediateSize,
        l: a.config.numLayers,
        h: a.config.numHeads,
        kv: a.config.numKvHeads,
        hd: a.config.headDim,
      },
      { v: 512, d: 64, f: 172, l: 5, h: 8, kv: 4, hd: 8 },
    );
    assert.equal(a.config.rmsNormEps, 1e-5);
    assert.equal(b.config.rmsNormEps, 1e-5);
    assert.equal(a.config.tieWordEmbeddings, true);
    assert.equal(
      b.config.tieWordEmbeddings,
      true,
      'GGUF output.weight is a byte copy of token_embd, so tied',
    );
    assert.ok(!a.has('lm_head.weight'));
    assert.deepEqual(a.tensorNames, b.tensorNames);
    assert.equal(a.tensorNames.length, 2 + 5 * 9);
    for (const name of a.tensorNames) {
      assert.deepEqual(a.shapeOf(name), b.shapeOf(name), name);
      assert.deepEqual(a.loadTensor(name), b.loadTensor(name), name);
    }
    assert.deepEqual(a.shapeOf('model.layers.0.self_attn.k_proj.weight'), [32, 64]);
  } finally {
    a.close();
    b.close();
  }
});

test('canonical Q/K rows are the un-permuted (rotate_half) layout of the stored interleaved rows', () => {
  const ck = openCheckpoint(GGUF);
  const g = GgufReader.open(GGUF);
  try {
    const stored = g.readF32('blk.1.attn_k.weight');
    const canon = ck.loadTensor('model.layers.1.self_attn.k_proj.weight');
    // docs/formats.md §5.4: stored row 2i+j of a head ← HF row j·hd/2 + i
    // (hd = 8, 4 kv heads, 64 cols).
    for (const [h, i, j] of [
      [0, 0, 1],
      [1, 3, 0],
      [3, 2, 1],
    ] as const) {
      const hfRow = h * 8 + j * 4 + i;
      const storedRow = h * 8 + 2 * i + j;
      assert.deepEqual(
        canon.subarray(hfRow * 64, hfRow * 64 + 64),
        stored.subarray(storedRow * 64, storedRow * 64 + 64),
      );
    }
    assert.deepEqual(permuteToInterleavedRows(canon, 4, 64), stored);
    assert.deepEqual(
      ck.loadTensor('model.layers.1.self_attn.v_proj.weight'),
      g.readF32('blk.1.attn_v.weight'),
    );
  } finally {
    ck.close();
    g.close();
  }
});

test('permutation helpers are inverse on biases and weights', () => {
  const w = Float32Array.from({ length: 6 * 4 * 3 }, (_, i) => i);
  assert.deepEqual(unpermuteInterleavedRows(permuteToInterleavedRows(w, 4, 3), 4, 3), w);
  const bias = Float32Array.from([0, 1, 2, 3]); // one head of 4: HF [0,1 | 2,3] → interleaved [0,2,1,3]
  assert.deepEqual(Array.from(permuteToInterleavedRows(bias, 1, 1)), [0, 2, 1, 3]);
  assert.throws(() => unpermuteInterleavedRows(new Float32Array(6), 2, 1), /even/);
});

test('HF-convention forward over canonical tensors reproduces the reference NLL (both sources)', () => {
  const { token_ids: ids, per_token_nll_nats: expected } = REFERENCE.teacher_forced_nll;
  for (const file of [BIN, GGUF]) {
    const ck = openCheckpoint(file);
    try {
      const { nll, logits0 } = referenceForward(ck, ids);
      for (let i = 0; i < expected.length; i++) {
        assert.ok(
          Math.abs(nll[i]! - expected[i]!) < 1e-4,
          `${path.basename(file)} token ${i}: nll ${nll[i]} vs ${expected[i]}`,
        );
      }
      const ref0 = REFERENCE.logits_pos0_after_bos.all;
      for (let i = 0; i < ref0.length; i++)
        assert.ok(Math.abs(logits0[i]! - ref0[i]!) < 1e-3 * (1 + Math.abs(ref0[i]!)));
      // Negative control: canonical (rotate_half) rows with llama2.c-style pairs give different NLLs.
      const wrong = referenceForward(ck, ids.slice(0, 8), false).nll;
      assert.ok(
        wrong.some((v, i) => Math.abs(v - expected[i]!) > 1e-2),
        'layout mismatch must be detectable',
      );
    } finally {
      ck.close();
    }
  }
});

test('HF folder (single file and sharded index) round-trips the canonical tensors', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-ckpt-'));
  const src = openCheckpoint(BIN);
  try {
    const single = path.join(dir, 'single');
    const sharded = path.join(dir, 'sharded');
    fs.mkdirSync(single);
    fs.mkdirSync(sharded);
    const cfg = JSON.stringify(configToHf(src.config), null, 2);
    fs.writeFileSync(path.join(single, 'config.json'), cfg);
    fs.writeFileSync(path.join(sharded, 'config.json'), cfg);
    const all = src.tensorNames.map((name) => ({
      name,
      dtype: 'F32',
      shape: [...src.shapeOf(name)],
      data: src.loadTensor(name),
    }));
    writeSafetensors(path.join(single, 'model.safetensors'), all, { format: 'pt' });
    const half = Math.ceil(all.length / 2);
    const shards = [all.slice(0, half), all.slice(half)];
    const weightMap: Record<string, string> = {};
    let total = 0;
    shards.forEach((tensors, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(path.join(sharded, file), tensors);
      for (const t of tensors) {
        weightMap[t.name] = file;
        total += t.data.byteLength;
      }
    });
    writeSafetensorsIndex(sharded, weightMap, total);
    for (const d of [single, sharded]) {
      const ck = openCheckpoint(d);
      try {
        assert.equal(ck.source, 'hf');
        assert.deepEqual(ck.config, src.config);
        assert.deepEqual(ck.tensorNames, src.tensorNames);
        for (const name of src.tensorNames)
          assert.deepEqual(ck.loadTensor(name), src.loadTensor(name), name);
      } finally {
        ck.close();
      }
    }
    // A folder missing a tensor names it.
    const broken = path.join(dir, 'broken');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'config.json'), cfg);
    writeSafetensors(path.join(broken, 'model.safetensors'), all.slice(1));
    assert.throws(
      () => openCheckpoint(broken),
      /broken: checkpoint lacks tensor 'model\.embed_tokens\.weight'/,
    );
  } finally {
    src.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
