// Shared fixture access for the tokenizer tests. Large upstream files are stored gzipped in
// fixtures/tokenizers (see its NOTICE.md); each is checked against the upstream sha256 after
// decompression, so the tests run on byte-identical copies of the published files.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import assert from 'node:assert/strict';
import type { Tokenizer } from '../src/tokenizer/index.js';

export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
export const TOKENIZER_FIXTURES = path.join(FIXTURES, 'tokenizers');

/** sha256 of the upstream (uncompressed) files, as recorded in fixtures/tokenizers/NOTICE.md. */
export const UPSTREAM_SHA256: Record<string, string> = {
  'tinyllama/tokenizer.json.gz': 'bcd04f0eadf90287bd26e1a183ac487d8a141b09b06aecb7725bbdd343640f2e',
  'phi-2/tokenizer.json.gz': '337da36be7a71a6e88aa9148967a7bc8736f4b47c7de8e19ba92b89e80734cfc',
  'phi-3-mini/tokenizer.json.gz':
    '9e2ae3d66819f163cdcfedba5078f3a3af8118c2712491ed60912f77886bda6f',
  'llama.cpp-vocab/ggml-vocab-gpt-2.gguf.gz':
    'cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac',
  'llama3/tokenizer.model.gz': '82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55',
  'gemma/tokenizer.json.gz': '7da53ca29fb16f6b2489482fc0bc6a394162cdab14d12764a1755ebc583fea79',
  'qwen3/tokenizer.json.gz': 'aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4',
};

export function readTokenizerFixture(rel: string): Buffer {
  const bytes = fs.readFileSync(path.join(TOKENIZER_FIXTURES, rel));
  if (!rel.endsWith('.gz')) return bytes;
  const raw = gunzipSync(bytes);
  const want = UPSTREAM_SHA256[rel];
  if (want === undefined) throw new Error(`no upstream sha256 recorded for ${rel}`);
  const got = createHash('sha256').update(raw).digest('hex');
  if (got !== want) throw new Error(`${rel}: decompressed sha256 ${got} != upstream ${want}`);
  return raw;
}

export function readJsonFixture<T = Record<string, unknown>>(rel: string): T {
  return JSON.parse(readTokenizerFixture(rel).toString('utf8')) as T;
}

/**
 * Writes fixture files (decompressed) into a fresh temporary folder, for code that loads from
 * paths; `names` maps fixture path → file name in the folder. Call the returned cleanup when done.
 */
export function materialize(names: Record<string, string>): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-tok-'));
  for (const [rel, name] of Object.entries(names))
    fs.writeFileSync(path.join(dir, name), readTokenizerFixture(rel));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** llama.cpp test-tokenizer-0 vectors: inputs end with "\n__ggml_vocab_test__\n"; one id line each. */
export function llamaCppVectors(vocab: string): { text: string; ids: number[] }[] {
  const inputs = readTokenizerFixture(`llama.cpp-vocab/ggml-vocab-${vocab}.gguf.inp`)
    .toString('utf8')
    .split('\n__ggml_vocab_test__\n');
  const last = inputs.pop();
  if (last !== '')
    throw new Error(`${vocab}.inp: unexpected trailing text ${JSON.stringify(last)}`);
  const lines = readTokenizerFixture(`llama.cpp-vocab/ggml-vocab-${vocab}.gguf.out`)
    .toString('utf8')
    .split('\n');
  if (lines.pop() !== '') throw new Error(`${vocab}.out: no final newline`);
  if (lines.length !== inputs.length)
    throw new Error(`${vocab}: ${inputs.length} inputs but ${lines.length} outputs`);
  return inputs.map((text, i) => ({
    text,
    ids: lines[i]!.trim() === '' ? [] : lines[i]!.trim().split(/\s+/).map(Number),
  }));
}

/** swift-transformers' MultilingualConformance baseline: HF Python's output for each input. */
interface Baseline {
  transformers_version: string;
  entries: Record<
    string,
    {
      input_ids: number[];
      tokens: string[];
      decoded_with_special: string;
      decoded_skip_special: string;
    }
  >;
}

/** swift-transformers' tokenizer_tests.json: short encode/decode cases per model id. */
interface CaseFile {
  [model: string]: {
    input: string;
    encoded: { input_ids: number[] };
    decoded_with_special: string;
    decoded_without_special: string;
  }[];
}

/**
 * Checks a tokenizer against a MultilingualConformance baseline (30 multilingual inputs): ids,
 * token strings, and both decodes equal what transformers produced.
 */
export function checkBaseline(tok: Tokenizer, baselineFile: string): void {
  const inputs = readJsonFixture<{ inputs: { id: string; text: string }[] }>(
    'swift-transformers/MultilingualConformance/inputs.json',
  ).inputs;
  const baseline = readJsonFixture<Baseline>(
    `swift-transformers/MultilingualConformance/baselines/${baselineFile}`,
  );
  assert.equal(inputs.length, 30);
  for (const { id, text } of inputs) {
    const want = baseline.entries[id];
    assert.ok(want, `baseline has entry ${id}`);
    const ids = tok.encode(text);
    assert.deepEqual(ids, want.input_ids, `${id}: input_ids`);
    assert.deepEqual(
      ids.map((i) => tok.idToToken(i)),
      want.tokens,
      `${id}: tokens`,
    );
    assert.equal(tok.decode(ids), want.decoded_with_special, `${id}: decoded_with_special`);
    assert.equal(
      tok.decode(ids, { skipSpecialTokens: true }),
      want.decoded_skip_special,
      `${id}: decoded_skip_special`,
    );
  }
}

/** Checks a tokenizer against tokenizer_tests.json's cases for `model`. */
export function checkCases(tok: Tokenizer, model: string): void {
  const cases = readJsonFixture<CaseFile>('swift-transformers/tokenizer_tests.json');
  const list = cases[model];
  assert.ok(list && list.length > 0, `tokenizer_tests.json has ${model}`);
  for (const c of list) {
    const ids = tok.encode(c.input);
    assert.deepEqual(ids, c.encoded.input_ids, `${model} ${JSON.stringify(c.input)}: ids`);
    assert.equal(
      tok.decode(ids),
      c.decoded_with_special,
      `${model} ${JSON.stringify(c.input)}: decoded with special`,
    );
    assert.equal(
      tok.decode(ids, { skipSpecialTokens: true }),
      c.decoded_without_special,
      `${model} ${JSON.stringify(c.input)}: decoded without special`,
    );
  }
}
