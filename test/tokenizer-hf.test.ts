// HfTokenizer against HF Python reference outputs: swift-transformers' MultilingualConformance
// baselines (transformers 4.57.1), llama_encoded.json and tokenizer_tests.json.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { HfTokenizer, loadTokenizer, type Tokenizer } from '../src/tokenizer/index.js';
import { checkBaseline, checkCases, materialize, readJsonFixture } from './tokenizer-fixtures.js';

type Json = Record<string, unknown>;

// ---- TinyLlama (Llama 2 vocabulary), loaded from a model folder as users would ----

let tinyllama: Tokenizer;
let folder: { dir: string; cleanup: () => void };
before(() => {
  folder = materialize({
    'tinyllama/tokenizer.json.gz': 'tokenizer.json',
    'tinyllama/tokenizer_config.json': 'tokenizer_config.json',
    'tinyllama/generation_config.json': 'generation_config.json',
  });
  tinyllama = loadTokenizer(folder.dir);
});
after(() => folder.cleanup());

test('TinyLlama folder: MultilingualConformance ids, tokens and decodes equal transformers 4.57.1', () => {
  checkBaseline(tinyllama, 'TinyLlama__TinyLlama-1.1B-Chat-v1.0.json');
});

test('TinyLlama folder: Llama-2 tokenizer_tests.json cases (BOS, spaces, CJK bytes, NBSP)', () => {
  checkCases(tinyllama, 'coreml-projects/Llama-2-7b-chat-coreml');
});

test('TinyLlama folder: llama_encoded.json French paragraph', () => {
  const ref = readJsonFixture<{
    text: string;
    bpe_tokens: string[];
    token_ids: number[];
    decoded_text: string;
  }>('swift-transformers/llama_encoded.json');
  const ids = tinyllama.encode(ref.text);
  assert.deepEqual(ids, ref.token_ids);
  assert.deepEqual(
    ids.slice(1).map((i) => tinyllama.idToToken(i)),
    ref.bpe_tokens,
  );
  assert.equal(tinyllama.decode(ids), ref.decoded_text);
});

test('TinyLlama folder: special-token roles, flags and chat template come from the config files', () => {
  const t = tinyllama;
  assert.equal(t.vocabSize, 32000);
  assert.deepEqual([t.unkId, t.bosId, t.eosId, t.padId], [0, 1, 2, 2]); // pad_token is "</s>"
  assert.deepEqual(t.eosIds, [2]);
  assert.deepEqual([t.bosToken, t.eosToken], ['<s>', '</s>']);
  assert.equal(t.addBos, true);
  assert.equal(t.addEos, false);
  assert.match(t.chatTemplate ?? '', /^\{% for message in messages %\}/);
  assert.deepEqual(
    [0, 1, 2, 450].map((i) => t.isSpecial(i)),
    [true, true, true, false],
  );
  assert.equal(t.tokenToId('▁The'), 450);
  assert.equal(t.idToToken(29889), '.');
  // addSpecialTokens: false drops BOS; special text inside the input maps to the special id.
  assert.deepEqual(
    t.encode('The quick', { addSpecialTokens: false }),
    t.encode('The quick').slice(1),
  );
  assert.deepEqual(t.encode('Hi</s>', { addSpecialTokens: false }), [
    ...t.encode('Hi', { addSpecialTokens: false }),
    2,
  ]);
  assert.deepEqual(t.encode(''), [1]);
  assert.equal(t.decode([]), '');
});

test('HfTokenizer: config variants (add_eos_token, named chat templates, eos lists, chat_template.jinja)', () => {
  const json = readJsonFixture<Json>('tinyllama/tokenizer.json.gz');
  const config = readJsonFixture<Json>('tinyllama/tokenizer_config.json');
  const t = new HfTokenizer({
    tokenizerJson: json,
    tokenizerConfig: {
      ...config,
      add_bos_token: false,
      add_eos_token: true,
      eos_token: { content: '</s>', special: true },
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: 'DEFAULT' },
      ],
    },
    generationConfig: { eos_token_id: [2, 0] },
  });
  assert.equal(t.addBos, false);
  assert.equal(t.addEos, true);
  assert.deepEqual(t.encode('Hello world'), [15043, 3186, 2]); // 'Hello world' ids: llama.cpp ggml-vocab-llama-spm vector
  assert.equal(t.eosToken, '</s>');
  assert.deepEqual(t.eosIds, [2, 0]);
  assert.equal(t.chatTemplate, 'DEFAULT');
  const withFile = new HfTokenizer({
    tokenizerJson: json,
    tokenizerConfig: config,
    chatTemplate: 'FROM FILE',
  });
  assert.equal(withFile.chatTemplate, 'FROM FILE');

  // tokenizer.json alone: its TemplateProcessing post-processor reveals BOS; nothing names an EOS.
  const bare = new HfTokenizer({ tokenizerJson: json });
  assert.deepEqual(
    [bare.bosId, bare.bosToken, bare.addBos, bare.eosId, bare.addEos],
    [1, '<s>', true, null, false],
  );
  assert.deepEqual(bare.encode('Hello world'), [1, 15043, 3186]);
  // A Llama-class config without token keys gets LlamaTokenizer's defaults <s>, </s>, <unk>.
  const minimal = new HfTokenizer({
    tokenizerJson: json,
    tokenizerConfig: { tokenizer_class: 'LlamaTokenizer', add_eos_token: true },
  });
  assert.deepEqual(
    [minimal.bosId, minimal.eosId, minimal.unkId, minimal.addBos, minimal.addEos],
    [1, 2, 0, true, true],
  );
  assert.deepEqual(minimal.encode('Hello world'), [1, 15043, 3186, 2]);
});

// ---- GPT-2 byte-level BPE ----

/**
 * phi-2's tokenizer.json is GPT-2's vocabulary and merges plus CodeGen's whitespace-run added
 * tokens (ids 50257+), which GPT-2 does not have; dropping those gives GPT-2's tokenizer.
 */
function gpt2From(phi2: Json, tokenizerConfig: Json): HfTokenizer {
  const added = phi2.added_tokens as { id: number }[];
  return new HfTokenizer({
    tokenizerJson: { ...phi2, added_tokens: added.filter((t) => t.id < 50257) },
    tokenizerConfig,
  });
}

test('GPT-2 (phi-2 vocabulary without CodeGen added tokens): MultilingualConformance equals transformers 4.57.1', () => {
  const phi2 = readJsonFixture<Json>('phi-2/tokenizer.json.gz');
  // openai-community/gpt2 ships no tokenizer settings that matter here; transformers 4.57 then
  // does not clean up spaces in decode.
  const gpt2 = gpt2From(phi2, {
    bos_token: '<|endoftext|>',
    eos_token: '<|endoftext|>',
    unk_token: '<|endoftext|>',
  });
  assert.equal(gpt2.vocabSize, 50257);
  assert.equal(gpt2.addBos, false);
  assert.deepEqual([gpt2.bosId, gpt2.eosId], [50256, 50256]);
  checkBaseline(gpt2, 'openai-community__gpt2.json');
});

test('GPT-2: distilgpt2 tokenizer_tests.json cases (decoded with clean_up_tokenization_spaces, as generated)', () => {
  const phi2 = readJsonFixture<Json>('phi-2/tokenizer.json.gz');
  // These vectors come from an older transformers whose default was clean_up_tokenization_spaces=True
  // (visible in "'ll !!to" decoding to "'ll!!to").
  checkCases(
    gpt2From(phi2, { eos_token: '<|endoftext|>', clean_up_tokenization_spaces: true }),
    'distilgpt2',
  );
});

test('phi-2 folder as published: CodeGen whitespace tokens and its own config apply', () => {
  const dir = materialize({
    'phi-2/tokenizer.json.gz': 'tokenizer.json',
    'phi-2/tokenizer_config.json': 'tokenizer_config.json',
  });
  try {
    const phi2 = loadTokenizer(dir.dir);
    assert.equal(phi2.vocabSize, 50295);
    assert.deepEqual([phi2.bosId, phi2.eosId, phi2.unkId], [50256, 50256, 50256]);
    assert.equal(phi2.addBos, false);
    // Four spaces are one added token in phi-2 (tokenizer.json added_tokens: id 50284 = "    "), unlike GPT-2.
    const four = phi2.tokenToId('    ');
    assert.equal(four, 50284);
    assert.ok(phi2.encode('if x:\n    return').includes(four!));
    assert.equal(phi2.decode(phi2.encode('if x:\n    return')), 'if x:\n    return');
  } finally {
    dir.cleanup();
  }
});

test('Gemma folder (Gemma 1/2 tokenizer.json, 256000 tokens): tokenizer_tests.json cases (BOS, spaces, byte fallback) and its special tokens', () => {
  const dir = materialize({
    'gemma/tokenizer.json.gz': 'tokenizer.json',
    'gemma/tokenizer_config.json': 'tokenizer_config.json',
  });
  try {
    const gemma = loadTokenizer(dir.dir);
    assert.equal(gemma.vocabSize, 256000);
    assert.deepEqual([gemma.bosId, gemma.eosId], [2, 1]);
    assert.equal(gemma.addBos, true);
    checkCases(gemma, 'pcuenq/gemma-tokenizer');
    // Gemma's chat turns are single tokens.
    assert.deepEqual(gemma.encode('<start_of_turn>user', { addSpecialTokens: false }), [106, 1645]);
  } finally {
    dir.cleanup();
  }
});
