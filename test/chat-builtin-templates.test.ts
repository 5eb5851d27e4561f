// Built-in chat templates (issue 10.4): each renders a two-turn conversation to the text its format
// prescribes, written out by hand below; zephyr and phi-3 also agree with the templates those models ship.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BUILTIN_CHAT_TEMPLATES } from '../src/data/builtin-chat-templates.js';
import { resolveChatTemplate } from '../src/data/chat-template-source.js';
import { ChatTemplate, type ChatMessage } from '../src/data/chat-template.js';
import { RowRenderer } from '../src/data/formats.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

const CHAT: ChatMessage[] = [
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello!' },
  { role: 'user', content: 'How are you?' },
  { role: 'assistant', content: 'Fine.' },
];

const TOKENS: Record<string, { bos: string; eos: string }> = {
  chatml: { bos: '<s>', eos: '<|im_end|>' },
  'llama-3': { bos: '<|begin_of_text|>', eos: '<|eot_id|>' },
  mistral: { bos: '<s>', eos: '</s>' },
  zephyr: { bos: '<s>', eos: '</s>' },
  'phi-3': { bos: '<s>', eos: '<|endoftext|>' },
  gemma: { bos: '<bos>', eos: '<eos>' },
  alpaca: { bos: '<s>', eos: '</s>' },
};

/** The full conversation, and the first turn followed by the generation prompt. */
const EXPECTED: Record<string, { full: string; prompt: string }> = {
  chatml: {
    full: '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\nFine.<|im_end|>\n',
    prompt: '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
  },
  'llama-3': {
    full:
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nFine.<|eot_id|>',
    prompt:
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
  },
  mistral: {
    full: '<s>[INST] Hi [/INST]Hello!</s>[INST] How are you? [/INST]Fine.</s>',
    prompt: '<s>[INST] Hi [/INST]',
  },
  zephyr: {
    full: '<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nHow are you?</s>\n<|assistant|>\nFine.</s>\n',
    prompt: '<|user|>\nHi</s>\n<|assistant|>\n',
  },
  'phi-3': {
    full: '<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\nFine.<|end|>\n<|endoftext|>',
    prompt: '<|user|>\nHi<|end|>\n<|assistant|>\n',
  },
  gemma: {
    full: '<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\nFine.<end_of_turn>\n',
    prompt: '<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n',
  },
  alpaca: {
    full:
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
      '### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n### Instruction:\nHow are you?\n\n### Response:\nFine.</s>\n\n',
    prompt:
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nHi\n\n### Response:\n',
  },
};

function template(name: string): ChatTemplate {
  const t = TOKENS[name]!;
  return new ChatTemplate(resolveChatTemplate(name).source, { bosToken: t.bos, eosToken: t.eos });
}

test('every built-in chat template renders a two-turn conversation as its format writes it', () => {
  assert.deepEqual(Object.keys(BUILTIN_CHAT_TEMPLATES).sort(), Object.keys(EXPECTED).sort());
  for (const name of Object.keys(EXPECTED)) {
    const t = template(name);
    assert.equal(t.render(CHAT, false), EXPECTED[name]!.full, name);
    assert.equal(
      t.render(CHAT.slice(0, 1), true),
      EXPECTED[name]!.prompt,
      `${name} generation prompt`,
    );
    // The assistant turns are found, so training puts loss on exactly the replies.
    const { spans, text } = t.renderWithAssistantSpans(CHAT);
    assert.equal(spans.length, 2, name);
    assert.ok(text.slice(spans[0]!.before.length).startsWith('Hello!'), name);
  }
});

test('a system message: its own turn where the format has one, the top of the first user turn where it has not', () => {
  const chat: ChatMessage[] = [{ role: 'system', content: 'Be brief.' }, ...CHAT.slice(0, 2)];
  assert.equal(
    template('chatml').render(chat, false),
    '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n',
  );
  assert.equal(
    template('mistral').render(chat, false),
    '<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>',
  );
  assert.equal(
    template('gemma').render(chat, false),
    '<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n',
  );
  assert.equal(
    template('alpaca').render(chat, false),
    'Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!</s>\n\n',
  );
});

test('zephyr and phi-3 render as the templates TinyLlama-Chat and Phi-3-mini ship', () => {
  for (const [name, file] of [
    ['zephyr', 'tinyllama-tokenizer_config.json'],
    ['phi-3', 'phi-3-mini-tokenizer_config.json'],
  ] as const) {
    const shipped = resolveChatTemplate(path.join(root, 'fixtures', 'chat-templates', file));
    const theirs = new ChatTemplate(shipped.source, {
      bosToken: TOKENS[name]!.bos,
      eosToken: TOKENS[name]!.eos,
    });
    assert.equal(template(name).render(CHAT, false), theirs.render(CHAT, false), name);
    assert.equal(
      template(name).render(CHAT.slice(0, 3), true),
      theirs.render(CHAT.slice(0, 3), true),
      name,
    );
  }
});

test('--chat-template takes aliases and files, and names the built-ins when it finds neither', () => {
  assert.equal(resolveChatTemplate('TinyLlama').name, 'zephyr');
  assert.equal(resolveChatTemplate('llama3').name, 'llama-3');
  const file = path.join(root, 'fixtures', 'chat-templates', 'Qwen-Qwen2.5-7B-Instruct.jinja');
  assert.equal(resolveChatTemplate(file).source, fs.readFileSync(file, 'utf8'));
  assert.throws(
    () => resolveChatTemplate('no-such-format'),
    /'no-such-format' is neither a file nor a built-in template \(chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca\)/,
  );
  // Names an object literal inherits are no templates (they once resolved to functions).
  for (const name of ['toString', 'constructor', '__proto__'])
    assert.throws(() => resolveChatTemplate(name), /is neither a file nor a built-in template/);
});

test('Alpaca rows become chats under --format chat, with loss on the output', () => {
  const chatml = template('chatml');
  const renderer = new RowRenderer({ format: 'chat', chatTemplate: () => chatml });
  const r = renderer.render(
    { instruction: 'Add 2 and 3.', input: 'Be brief.', output: '5' },
    { file: 'x.json', row: 1 },
  );
  assert.equal(
    r.text,
    '<|im_start|>user\nAdd 2 and 3.\n\nBe brief.<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n',
  );
  assert.equal(r.loss.length, 1);
  assert.equal(
    r.loss[0]!.from,
    '<|im_start|>user\nAdd 2 and 3.\n\nBe brief.<|im_end|>\n<|im_start|>assistant\n',
  );
  // The alpaca built-in renders a one-turn Alpaca row as the Alpaca row format does.
  const alpaca = new RowRenderer({ format: 'chat', chatTemplate: () => template('alpaca') });
  const viaChat = alpaca.render(
    { instruction: 'Add 2 and 3.', input: '', output: '5' },
    { file: 'x.json', row: 1 },
  );
  const plain = new RowRenderer({ format: 'alpaca' }).render(
    { instruction: 'Add 2 and 3.', input: '', output: '5' },
    { file: 'x.json', row: 1 },
  );
  assert.equal(viaChat.text, `${plain.text}</s>\n\n`);
});
