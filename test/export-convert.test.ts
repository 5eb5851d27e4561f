// Model export and conversion without a GGUF client: vocabularies against llama.cpp's own
// conversion of the same tokenizer, lossless round trips between llama2.c, GGUF and HF folders
// (tensor for tensor, and byte for byte against llama2.c's own export), quantized type choices,
// refusals, and the `qlora export` / `qlora convert` commands.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { main } from '../src/cli/main.js';
import { convertCheckpoint } from '../src/export/convert.js';
import { exportGgufModel } from '../src/export/gguf-model.js';
import { vocabFromGguf, vocabFromLlama2c } from '../src/export/gguf-vocab.js';
import { GgmlType } from '../src/io/ggml-types.js';
import { GgufReader, readGgufMetadata } from '../src/io/gguf.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { configFromHf } from '../src/io/config.js';
import { hfTokenizerFilesFromVocab } from '../src/export/hf-tokenizer-files.js';
import { HfTokenizer, Llama2cTokenizer, loadTokenizer } from '../src/tokenizer/index.js';
import { STORIES, writeRandomPeftAdapter, writeSyntheticHfFolder } from './export-support.js';
import { FIXTURES, llamaCppVectors, materialize } from './tokenizer-fixtures.js';

const BIN = path.join(STORIES, 'stories260K.bin');
const GGUF = path.join(STORIES, 'stories260K.gguf');
const TOK = path.join(STORIES, 'tok512.bin');
let tmp: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-convert-'));
});
after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Every canonical tensor of two checkpoints is identical. */
function assertSameTensors(a: string, b: string): void {
  const x = openCheckpoint(a);
  const y = openCheckpoint(b);
  try {
    assert.deepEqual({ ...y.config }, { ...x.config }, `${b}: config`);
    assert.deepEqual(y.tensorNames, x.tensorNames);
    for (const n of x.tensorNames) assert.deepEqual(y.loadTensor(n), x.loadTensor(n), `${b}: ${n}`);
  } finally {
    x.close();
    y.close();
  }
}

test('tok512.bin becomes the same vocabulary llama.cpp wrote into stories260K.gguf', () => {
  const ours = new Map(vocabFromLlama2c(TOK, 512).entries.map((e) => [e.key, e]));
  const ref = readGgufMetadata(GGUF);
  for (const key of [
    'tokenizer.ggml.model',
    'tokenizer.ggml.tokens',
    'tokenizer.ggml.unknown_token_id',
    'tokenizer.ggml.bos_token_id',
    'tokenizer.ggml.eos_token_id',
  ]) {
    assert.deepEqual(ours.get(key)?.value, ref.metadata.get(key), key);
  }
  assert.deepEqual(
    Array.from(ours.get('tokenizer.ggml.scores')!.value as Float32Array),
    Array.from(ref.metadata.get('tokenizer.ggml.scores') as Float32Array),
  );
  assert.deepEqual(
    Array.from(ours.get('tokenizer.ggml.token_type')!.value as Int32Array),
    Array.from(ref.metadata.get('tokenizer.ggml.token_type') as Int32Array),
  );
});

test('GGUF vocabularies → tokenizer.json: all llama.cpp test-tokenizer-0 vectors for llama-spm and gpt-2', () => {
  const { dir, cleanup } = materialize({
    'llama.cpp-vocab/ggml-vocab-gpt-2.gguf.gz': 'gpt-2.gguf',
  });
  try {
    for (const [name, file] of [
      ['llama-spm', path.join(FIXTURES, 'gguf-vocab', 'ggml-vocab-llama-spm.gguf')],
      ['gpt-2', path.join(dir, 'gpt-2.gguf')],
    ] as const) {
      const files = hfTokenizerFilesFromVocab(readGgufMetadata(file).metadata);
      const tok = new HfTokenizer({
        tokenizerJson: files.tokenizerJson,
        tokenizerConfig: files.tokenizerConfig,
      });
      const vectors = llamaCppVectors(name);
      assert.equal(vectors.length, 46);
      for (const { text, ids } of vectors) {
        assert.deepEqual(
          tok.encode(text, { addSpecialTokens: false }),
          ids,
          `${name}: encode ${JSON.stringify(text)}`,
        );
        assert.equal(tok.decode(ids), text, `${name}: decode ${JSON.stringify(text)}`);
      }
    }
  } finally {
    cleanup();
  }
});

test('GGUF → GGUF (f32): identical tensors, tied head omitted, tokenizer keys copied with their types, llama hyperparameters', () => {
  const out = path.join(tmp, 'copy.gguf');
  const ck = openCheckpoint(GGUF);
  try {
    exportGgufModel(ck, out, { dtype: 'f32', vocab: vocabFromGguf(readGgufMetadata(GGUF)) });
  } finally {
    ck.close();
  }
  assertSameTensors(GGUF, out);
  const src = readGgufMetadata(GGUF);
  const r = GgufReader.open(out);
  try {
    assert.equal(r.gguf.tensorsByName.has('output.weight'), false);
    // Q/K are stored interleaved exactly as llama.cpp's converter stored them.
    const orig = GgufReader.open(GGUF);
    try {
      assert.deepEqual(r.readF32('blk.2.attn_q.weight'), orig.readF32('blk.2.attn_q.weight'));
      assert.deepEqual(r.readF32('blk.2.attn_k.weight'), orig.readF32('blk.2.attn_k.weight'));
    } finally {
      orig.close();
    }
    for (const [k, v] of src.metadata) {
      if (!k.startsWith('tokenizer.') && !k.startsWith('llama.')) continue;
      assert.deepEqual(r.metadata.get(k), v, k);
      assert.equal(r.gguf.metadataTypes.get(k), src.metadataTypes.get(k), `${k} type`);
    }
    assert.equal(r.metadata.get('general.file_type'), 0);
    assert.equal(r.metadata.get('llama.rope.freq_base'), 10000);
  } finally {
    r.close();
  }
});

test('llama2.c → GGUF → llama2.c → HF folder → GGUF is lossless; the .bin matches llama2.c’s own export byte for byte', () => {
  const a = path.join(tmp, 'a.gguf');
  const b = path.join(tmp, 'b.bin');
  const c = path.join(tmp, 'c-hf');
  const d = path.join(tmp, 'd.gguf');
  convertCheckpoint(BIN, a, { dtype: 'f32', tokenizer: TOK });
  convertCheckpoint(a, b);
  const noVocab = convertCheckpoint(b, path.join(tmp, 'no-vocab-hf'));
  assert.match(noVocab.warnings.join('\n'), /no tokenizer files written/);
  convertCheckpoint(b, c, { tokenizer: TOK });
  // The GGUF's vocabulary comes from the tokenizer.json the HF folder got from tok512.bin.
  convertCheckpoint(c, d, { dtype: 'f32' });
  for (const p of [a, b, c, d]) assertSameTensors(BIN, p);
  assert.deepEqual(
    JSON.parse(fs.readFileSync(path.join(c, 'config.json'), 'utf8')).num_key_value_heads,
    4,
  );
  const reference = Llama2cTokenizer.fromFile(TOK, 512);
  const viaHf = HfTokenizer.fromDirectory(c);
  const viaGguf = loadTokenizer(d);
  assert.deepEqual(
    readGgufMetadata(d).metadata.get('tokenizer.ggml.tokens'),
    readGgufMetadata(GGUF).metadata.get('tokenizer.ggml.tokens'),
  );
  for (const text of [
    'Once upon a time, there was a little girl named Lily.',
    'She liked to play outside! 123 ü',
  ]) {
    const want = reference.encode(text);
    assert.deepEqual(viaHf.encode(text), want, `HF folder: ${text}`);
    assert.deepEqual(viaGguf.encode(text), want, `GGUF from the HF folder: ${text}`);
  }

  // Header and weights are the original bytes; the trailing freq_cis tables (not used by run.c)
  // agree to f32 rounding. stories260K: seq_len 512, head_size 8 → 2 × 512 × 4 floats.
  const orig = fs.readFileSync(BIN);
  const ours = fs.readFileSync(b);
  assert.equal(ours.length, orig.length);
  const tables = 2 * 512 * 4 * 4;
  assert.ok(
    orig.subarray(0, orig.length - tables).equals(ours.subarray(0, ours.length - tables)),
    'header + weights byte-identical',
  );
  const ft = new Float32Array(
    orig.buffer.slice(orig.byteOffset + orig.length - tables, orig.byteOffset + orig.length),
  );
  const ot = new Float32Array(
    ours.buffer.slice(ours.byteOffset + ours.length - tables, ours.byteOffset + ours.length),
  );
  for (let i = 0; i < ft.length; i++)
    assert.ok(Math.abs(ft[i]! - ot[i]!) < 1e-5, `freq table ${i}: ${ot[i]} vs ${ft[i]}`);
});

test('q8_0 / q4_0 exports: matrices quantized, norms F32, rows not a multiple of 32 fall back to F16; file_type and quantization_version', () => {
  for (const [dtype, type, fileType] of [
    ['q8_0', GgmlType.Q8_0, 7],
    ['q4_0', GgmlType.Q4_0, 2],
  ] as const) {
    const out = path.join(tmp, `s-${dtype}.gguf`);
    convertCheckpoint(BIN, out, { dtype, tokenizer: TOK });
    const r = GgufReader.open(out);
    try {
      assert.equal(r.metadata.get('general.file_type'), fileType);
      assert.equal(r.metadata.get('general.quantization_version'), 2);
      assert.equal(r.tensor('blk.0.attn_q.weight').type, type);
      assert.equal(r.tensor('blk.0.ffn_gate.weight').type, type); // ne0 = 64
      assert.equal(r.tensor('blk.0.ffn_down.weight').type, GgmlType.F16); // ne0 = 172
      assert.equal(r.tensor('blk.0.attn_norm.weight').type, GgmlType.F32);
      assert.equal(r.tensor('token_embd.weight').type, type);
    } finally {
      r.close();
    }
    // Dequantized weights stay within the format's step of the originals.
    const x = openCheckpoint(BIN);
    const y = openCheckpoint(out);
    try {
      const w = x.loadTensor('model.layers.3.self_attn.k_proj.weight');
      const q = y.loadTensor('model.layers.3.self_attn.k_proj.weight');
      let amax = 0;
      let err = 0;
      for (let i = 0; i < w.length; i++) {
        amax = Math.max(amax, Math.abs(w[i]!));
        err = Math.max(err, Math.abs(w[i]! - q[i]!));
      }
      assert.ok(err <= (dtype === 'q8_0' ? amax / 127 : amax / 8), `${dtype}: max error ${err}`);
      assert.ok(err > 0, `${dtype}: quantization changed nothing?`);
    } finally {
      x.close();
      y.close();
    }
  }
});

test('conversions the target format cannot hold are refused', () => {
  const hf = {
    model_type: 'llama',
    vocab_size: 32000,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    attention_bias: true,
  };
  const dir = path.join(tmp, 'biased-hf');
  writeSyntheticHfFolder(dir, hf, configFromHf(hf), 3);
  assert.throws(
    () => convertCheckpoint(dir, path.join(tmp, 'x.bin')),
    /cannot write a llama2\.c checkpoint: the model has biases/,
  );
  const theta = { ...hf, attention_bias: false, rope_theta: 500000 };
  const dir2 = path.join(tmp, 'theta-hf');
  writeSyntheticHfFolder(dir2, theta, configFromHf(theta), 3);
  assert.throws(
    () => convertCheckpoint(dir2, path.join(tmp, 'x.bin')),
    /rope theta 500000 \(run\.c hard-codes 10000\)/,
  );
  assert.throws(
    () => convertCheckpoint(BIN, path.join(tmp, 'x.gguf'), { dtype: 'q5_k', tokenizer: TOK }),
    /dtype 'q5_k' is not available for GGUF output \(choose f32, f16, bf16, q8_0, q4_0, q4_k\)/,
  );
  // A llama2.c checkpoint alone in its folder has no vocabulary for the GGUF.
  const lonely = path.join(tmp, 'lonely');
  fs.mkdirSync(lonely);
  fs.copyFileSync(BIN, path.join(lonely, 'model.bin'));
  assert.throws(
    () => convertCheckpoint(path.join(lonely, 'model.bin'), path.join(tmp, 'x.gguf')),
    /pass (its tokenizer\.bin with )?--tokenizer/,
  );
  assert.throws(
    () => convertCheckpoint(BIN, path.join(tmp, 'y.gguf'), { tokenizer: dir }),
    /the tokenizer has 32000 tokens but the model's embedding has only 512 rows/,
  );
  assert.equal(fs.existsSync(path.join(tmp, 'x.bin')), false);
});

test('qlora export / convert commands', async () => {
  const peft = path.join(tmp, 'cli-peft');
  const ck = openCheckpoint(BIN);
  try {
    await writeRandomPeftAdapter(
      peft,
      ck.config,
      ck,
      {
        r: 2,
        alpha: 4,
        dropout: 0,
        useRslora: false,
        init: 'kaiming',
        seed: 1,
        targets: ['v_proj'],
        layers: null,
      },
      8,
      0.1,
    );
  } finally {
    ck.close();
  }
  const merged = path.join(tmp, 'cli-merged.gguf');
  assert.equal(
    await main([
      'export',
      '--model',
      BIN,
      '--tokenizer',
      TOK,
      '--adapter',
      peft,
      '--dtype',
      'f32',
      '--out',
      merged,
    ]),
    0,
  );
  const lora = path.join(tmp, 'cli-lora.gguf');
  assert.equal(
    await main([
      'export',
      '--model',
      BIN,
      '--adapter',
      peft,
      '--format',
      'gguf-lora',
      '--out',
      lora,
    ]),
    0,
  );
  const converted = path.join(tmp, 'cli.gguf');
  assert.equal(await main(['convert', BIN, converted, '--tokenizer', TOK, '--dtype', 'f16']), 0);
  const m = readGgufMetadata(merged);
  assert.equal(m.metadata.get('general.file_type'), 0);
  assert.equal(readGgufMetadata(lora).metadata.get('general.type'), 'adapter');
  assert.equal(readGgufMetadata(converted).metadata.get('general.file_type'), 1);
  // The merge changed v_proj (and only projections the adapter targets).
  const base = openCheckpoint(BIN);
  const mergedCk = openCheckpoint(merged);
  try {
    assert.notDeepEqual(
      mergedCk.loadTensor('model.layers.0.self_attn.v_proj.weight'),
      base.loadTensor('model.layers.0.self_attn.v_proj.weight'),
    );
    assert.deepEqual(
      mergedCk.loadTensor('model.layers.0.self_attn.q_proj.weight'),
      base.loadTensor('model.layers.0.self_attn.q_proj.weight'),
    );
  } finally {
    base.close();
    mergedCk.close();
  }
  await assert.rejects(
    main(['export', '--adapter', peft, '--format', 'gguf-lora', '--out', path.join(tmp, 'n.gguf')]),
    /pass --model/,
  );
  await assert.rejects(
    main(['export', '--model', BIN, '--format', 'gguf', '--out', path.join(tmp, 'n.bin')]),
    /--output for --format gguf must end in \.gguf/,
  );
});
