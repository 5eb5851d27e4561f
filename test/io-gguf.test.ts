// GGUF reader on real files: stories260K and llama.cpp vocab-only GGUFs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { GgufMetadataView, GgufReader, readGgufMetadata } from '../src/io/gguf.js';
import { materialize } from './tokenizer-fixtures.js';

const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const STORIES_GGUF = here('../fixtures/stories260K/stories260K.gguf');
const SPM_VOCAB = here('../fixtures/gguf-vocab/ggml-vocab-llama-spm.gguf');

test('stories260K.gguf metadata matches the model card', () => {
  const g = readGgufMetadata(STORIES_GGUF);
  const m = new GgufMetadataView(g);
  assert.equal(g.version, 3);
  assert.equal(m.string('general.architecture'), 'llama');
  assert.equal(m.number('llama.embedding_length'), 64);
  assert.equal(m.number('llama.feed_forward_length'), 172);
  assert.equal(m.number('llama.block_count'), 5);
  assert.equal(m.number('llama.attention.head_count'), 8);
  assert.equal(m.number('llama.attention.head_count_kv'), 4);
  assert.equal(m.number('llama.rope.dimension_count'), 8);
  assert.equal(m.number('llama.context_length'), 2048);
  assert.equal(Math.fround(m.number('llama.attention.layer_norm_rms_epsilon')), Math.fround(1e-5));
  assert.equal(m.string('tokenizer.ggml.model'), 'llama');
  assert.equal(m.number('tokenizer.ggml.bos_token_id'), 1);
  assert.equal(m.number('tokenizer.ggml.eos_token_id'), 2);
  const tokens = m.stringArray('tokenizer.ggml.tokens')!;
  assert.equal(tokens.length, 512);
  assert.deepEqual(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
  assert.equal(tokens[258], '<0xFF>');
  const scores = g.metadata.get('tokenizer.ggml.scores');
  assert.ok(scores instanceof Float32Array && scores.length === 512);
  // Merges 259.. have score -(id - 259), the scores of fixtures/stories260K/tok512.bin.
  assert.equal(scores[259], -0);
  assert.equal(scores[300], -41);
  const types = g.metadata.get('tokenizer.ggml.token_type');
  assert.ok(types instanceof Int32Array);
  assert.deepEqual(Array.from(types.slice(0, 4)), [2, 3, 3, 6]); // unk, control, control, byte
  // The header read also lists the tensors (without reading their data).
  assert.equal(g.tensors.length, 48);
  assert.equal(g.dataOffset, 14176);
});

test('stories260K.gguf tensor table: 48 F32 tensors, data at 14176, dims reversed to [out, in]', () => {
  const r = GgufReader.open(STORIES_GGUF);
  try {
    assert.equal(r.tensors.length, 3 + 5 * 9);
    assert.equal(r.gguf.dataOffset, 14176);
    assert.equal(r.gguf.alignment, 32);
    const q = r.tensor('blk.0.attn_q.weight');
    assert.deepEqual(q.ne, [64, 64]);
    const k = r.tensor('blk.3.attn_k.weight');
    assert.deepEqual(k.ne, [64, 32]);
    assert.deepEqual(k.shape, [32, 64]);
    assert.deepEqual(r.tensor('blk.1.ffn_down.weight').shape, [64, 172]);
    for (const t of r.tensors) {
      assert.equal(t.typeName, 'F32');
      assert.equal(t.relativeOffset % 32, 0);
      assert.equal(t.byteSize, t.nElements * 4);
    }
    // Tensor data read by position equals the bytes at that place in the file.
    const whole = fs.readFileSync(STORIES_GGUF);
    const v = r.readF32('blk.2.ffn_gate.weight');
    const t = r.tensor('blk.2.ffn_gate.weight');
    assert.equal(v.length, 172 * 64);
    for (const i of [0, 1, 777, v.length - 1])
      assert.equal(v[i], whole.readFloatLE(t.offset + 4 * i));
    assert.throws(() => r.readF32('nope'), /stories260K\.gguf: no tensor named 'nope'/);
  } finally {
    r.close();
  }
});

test('vocab-only llama-spm GGUF: 32000 tokens, scores and types, no tensors', () => {
  const g = readGgufMetadata(SPM_VOCAB);
  const m = new GgufMetadataView(g);
  assert.equal(m.string('tokenizer.ggml.model'), 'llama');
  const tokens = m.stringArray('tokenizer.ggml.tokens')!;
  assert.equal(tokens.length, 32000);
  assert.deepEqual(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
  assert.equal(tokens[29871], '\u2581'); // the lone SentencePiece space piece of the Llama 2 vocab
  assert.equal(m.numberArray('tokenizer.ggml.scores')!.length, 32000);
  assert.equal(m.numberArray('tokenizer.ggml.token_type')!.length, 32000);
  assert.equal(m.boolean('tokenizer.ggml.add_bos_token', false), true);
  const r = GgufReader.open(SPM_VOCAB);
  assert.equal(r.tensors.length, 0);
  r.close();
});

test('vocab-only gpt-2 GGUF: 50257 tokens and 50000 merges', () => {
  // The gzipped copy in fixtures/tokenizers (sha256-checked when decompressed), as a file.
  const { dir, cleanup } = materialize({
    'llama.cpp-vocab/ggml-vocab-gpt-2.gguf.gz': 'ggml-vocab-gpt-2.gguf',
  });
  let m: GgufMetadataView;
  try {
    m = new GgufMetadataView(readGgufMetadata(`${dir}/ggml-vocab-gpt-2.gguf`));
  } finally {
    cleanup();
  }
  assert.equal(m.string('tokenizer.ggml.model'), 'gpt2');
  assert.equal(m.stringArray('tokenizer.ggml.tokens')!.length, 50257);
  const merges = m.stringArray('tokenizer.ggml.merges')!;
  assert.equal(merges.length, 50000);
  assert.equal(merges[0], '\u0120 t'); // GPT-2's first merge "Ġ t"
});

test('every metadata value type round-trips through the writer; v2 files parse the same', async () => {
  const { writeGguf } = await import('../src/io/gguf-writer.js');
  const { GgufValueType: T } = await import('../src/io/gguf.js');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-gguf-'));
  try {
    const f = path.join(dir, 'meta.gguf');
    writeGguf(
      f,
      [
        { key: 'u8', type: T.U8, value: 255 },
        { key: 'i8', type: T.I8, value: -128 },
        { key: 'u16', type: T.U16, value: 65535 },
        { key: 'i16', type: T.I16, value: -32768 },
        { key: 'u32', type: T.U32, value: 4294967295 },
        { key: 'i32', type: T.I32, value: -2147483648 },
        { key: 'f32', type: T.F32, value: 0.5 },
        { key: 'f64', type: T.F64, value: 0.1 },
        { key: 'bool', type: T.BOOL, value: true },
        { key: 'str', type: T.STRING, value: 'héllo ▁ wörld' },
        { key: 'u64', type: T.U64, value: 2 ** 53 - 1 },
        { key: 'u64big', type: T.U64, value: 2n ** 63n },
        { key: 'i64', type: T.I64, value: -5 },
        { key: 'arr.str', type: T.ARRAY, elemType: T.STRING, value: ['a', '', 'ü'] },
        { key: 'arr.f32', type: T.ARRAY, elemType: T.F32, value: Float32Array.from([1, -2.5]) },
        { key: 'arr.i32', type: T.ARRAY, elemType: T.I32, value: Int32Array.from([-1, 7]) },
        { key: 'arr.u8', type: T.ARRAY, elemType: T.U8, value: Uint8Array.from([0, 200]) },
        { key: 'arr.bool', type: T.ARRAY, elemType: T.BOOL, value: [true, false] },
        {
          key: 'arr.u64',
          type: T.ARRAY,
          elemType: T.U64,
          value: BigUint64Array.from([1n, 2n ** 60n]),
        },
        { key: 'arr.empty', type: T.ARRAY, elemType: T.F64, value: new Float64Array(0) },
        {
          key: 'arr.nested',
          type: T.ARRAY,
          elemType: [T.ARRAY, T.I16],
          value: [Int16Array.from([1, -2]), new Int16Array(0)],
        },
        {
          key: 'arr.nested.str',
          type: T.ARRAY,
          elemType: [T.ARRAY, T.STRING],
          value: [['x'], ['y', 'z']],
        },
        { key: 'general.alignment', type: T.U32, value: 64 },
      ],
      [
        {
          name: 't',
          shape: [3],
          type: 0,
          data: new Uint8Array(Float32Array.from([1, 2, 3]).buffer),
        },
      ],
    );
    const g = readGgufMetadata(f);
    const m = g.metadata;
    assert.deepEqual(
      ['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'f64', 'bool', 'str', 'u64', 'i64'].map((k) =>
        m.get(k),
      ),
      [
        255,
        -128,
        65535,
        -32768,
        4294967295,
        -2147483648,
        0.5,
        0.1,
        true,
        'héllo ▁ wörld',
        2 ** 53 - 1,
        -5,
      ],
    );
    assert.equal(m.get('u64big'), 2n ** 63n, 'u64 beyond 2^53 stays a bigint');
    assert.deepEqual(m.get('arr.str'), ['a', '', 'ü']);
    assert.deepEqual(m.get('arr.f32'), Float32Array.from([1, -2.5]));
    assert.deepEqual(m.get('arr.i32'), Int32Array.from([-1, 7]));
    assert.deepEqual(m.get('arr.u8'), Uint8Array.from([0, 200]));
    assert.deepEqual(m.get('arr.bool'), [true, false]);
    assert.deepEqual(m.get('arr.u64'), BigUint64Array.from([1n, 2n ** 60n]));
    assert.deepEqual(m.get('arr.empty'), new Float64Array(0));
    assert.deepEqual(m.get('arr.nested'), [Int16Array.from([1, -2]), new Int16Array(0)]);
    assert.deepEqual(m.get('arr.nested.str'), [['x'], ['y', 'z']]);
    assert.equal(g.arrayElementTypes.get('arr.nested'), T.ARRAY);
    assert.equal(g.metadataTypes.get('arr.f32'), T.ARRAY);
    assert.equal(g.arrayElementTypes.get('arr.f32'), T.F32);
    assert.equal(g.alignment, 64);
    const r = GgufReader.open(f);
    assert.equal(r.gguf.dataOffset % 64, 0);
    assert.deepEqual(Array.from(r.readF32('t')), [1, 2, 3]);
    r.close();
    // Version 2 has the same layout (u64 counts); only the version field differs.
    const bytes = fs.readFileSync(f);
    bytes.writeUInt32LE(2, 4);
    fs.writeFileSync(f, bytes);
    const g2 = readGgufMetadata(f);
    assert.equal(g2.version, 2);
    assert.deepEqual(g2.metadata, m);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
