// qlora export --format ollama (issue 14, "Ollama"): the Modelfile's TEMPLATE, stop parameters and
// SYSTEM are derived from the chat template, and the TEMPLATE (run through a Go text/template
// interpreter, with Ollama's rules for SYSTEM and .Messages) renders every conversation exactly as
// the Jinja chat template does; the CLI writes model.gguf + Modelfile into -o and nothing else.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BUILTIN_CHAT_TEMPLATES } from '../src/data/builtin-chat-templates.js';
import { ChatTemplate, type ChatMessage } from '../src/data/chat-template.js';
import {
  OllamaTemplateError,
  modelfileText,
  ollamaChatFormat,
} from '../src/export/ollama-template.js';
import { readGgufMetadata } from '../src/io/gguf.js';
import { renderGoTemplate } from './go-template.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const TEMPLATES = path.join(root, 'fixtures', 'chat-templates');
const TSX = import.meta.resolve('tsx');

interface Modelfile {
  from: string;
  template: string | null;
  stop: string[];
  system: string | null;
}

/** Reads a Modelfile as Ollama's parser does for these commands: """…""" and "…" taken verbatim. */
function parseModelfile(text: string): Modelfile {
  const out: Modelfile = { from: '', template: null, stop: [], system: null };
  const re = /^(FROM|TEMPLATE|SYSTEM|PARAMETER stop) (?:"""([\s\S]*?)"""|"([^"\n]*)"|(\S+))$/gm;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    const value = m[2] ?? m[3] ?? m[4]!;
    if (m[1] === 'FROM') out.from = value;
    else if (m[1] === 'TEMPLATE') out.template = value;
    else if (m[1] === 'SYSTEM') out.system = value;
    else out.stop.push(value);
    consumed += m[0].length + 1;
  }
  assert.equal(consumed, text.length, `every line of the Modelfile is a known command:\n${text}`);
  return out;
}

/** What Ollama's chat endpoint renders: SYSTEM first unless the chat has a system message. */
function ollamaRender(mf: Modelfile, messages: readonly ChatMessage[]): string {
  const msgs =
    mf.system !== null && messages[0]?.role !== 'system'
      ? [{ role: 'system', content: mf.system }, ...messages]
      : [...messages];
  const system = msgs
    .filter((m) => m.role === 'system')
    .map((m) => m.content)
    .join('\n\n');
  return renderGoTemplate(mf.template!, {
    System: system,
    Messages: msgs.map((m) => ({ Role: m.role, Content: m.content })),
  });
}

const CONVERSATIONS: ChatMessage[][] = [
  [{ role: 'user', content: 'What is 2+2?' }],
  [
    { role: 'system', content: 'You answer in French.' },
    { role: 'user', content: 'Hello' },
  ],
  [
    { role: 'user', content: 'Tell me a story.' },
    { role: 'assistant', content: 'Once upon a time.' },
    { role: 'user', content: 'And then?' },
  ],
  [
    { role: 'system', content: 'Be brief.\nVery brief.' },
    { role: 'user', content: 'Line one\nline two' },
    { role: 'assistant', content: 'Ok.' },
    { role: 'user', content: 'More' },
    { role: 'assistant', content: 'No.' },
    { role: 'user', content: 'Please' },
  ],
];

/** The Jinja rendering Ollama must reproduce: with the generation prompt, BOS left to llama.cpp. */
function jinjaRender(
  source: string,
  tokens: { bosToken: string | null; eosToken: string | null },
  messages: readonly ChatMessage[],
): string {
  const text = new ChatTemplate(source, tokens).render(messages, true);
  return tokens.bosToken && text.startsWith(tokens.bosToken)
    ? text.slice(tokens.bosToken.length)
    : text;
}

const FAMILIES: {
  name: string;
  source: () => string;
  tokens: { bosToken: string | null; eosToken: string | null };
  stop: string[];
  system: string | null;
}[] = [
  {
    name: 'chatml',
    source: () => BUILTIN_CHAT_TEMPLATES.chatml!,
    tokens: { bosToken: null, eosToken: '<|endoftext|>' },
    stop: ['<|im_end|>', '<|im_start|>user'],
    system: null,
  },
  {
    name: 'llama-3',
    source: () => BUILTIN_CHAT_TEMPLATES['llama-3']!,
    tokens: { bosToken: '<|begin_of_text|>', eosToken: '<|eot_id|>' },
    stop: ['<|eot_id|>', '<|start_header_id|>user<|end_header_id|>'],
    system: null,
  },
  {
    name: 'mistral',
    source: () => BUILTIN_CHAT_TEMPLATES.mistral!,
    tokens: { bosToken: '<s>', eosToken: '</s>' },
    stop: ['</s>', '[INST]'],
    system: null,
  },
  {
    name: 'phi-3',
    source: () => BUILTIN_CHAT_TEMPLATES['phi-3']!,
    tokens: { bosToken: '<s>', eosToken: '<|endoftext|>' },
    stop: ['<|end|>', '<|user|>'],
    system: null,
  },
  {
    name: 'gemma',
    source: () => BUILTIN_CHAT_TEMPLATES.gemma!,
    tokens: { bosToken: '<bos>', eosToken: '<eos>' },
    stop: ['<end_of_turn>', '<start_of_turn>user'],
    system: null,
  },
  {
    name: 'zephyr',
    source: () => BUILTIN_CHAT_TEMPLATES.zephyr!,
    tokens: { bosToken: '<s>', eosToken: '</s>' },
    stop: ['</s>', '<|user|>'],
    system: null,
  },
  {
    name: 'TinyLlama-1.1B-Chat (its tokenizer_config.json)',
    source: () =>
      JSON.parse(fs.readFileSync(path.join(TEMPLATES, 'tinyllama-tokenizer_config.json'), 'utf8'))
        .chat_template,
    tokens: { bosToken: '<s>', eosToken: '</s>' },
    stop: ['</s>', '<|user|>'],
    system: null,
  },
  {
    name: 'Phi-3-mini (its tokenizer_config.json)',
    source: () =>
      JSON.parse(fs.readFileSync(path.join(TEMPLATES, 'phi-3-mini-tokenizer_config.json'), 'utf8'))
        .chat_template,
    tokens: { bosToken: '<s>', eosToken: '<|endoftext|>' },
    stop: ['<|end|>', '<|user|>'],
    system: null,
  },
  {
    name: 'Qwen2.5-Instruct (ChatML with a default system prompt)',
    source: () => fs.readFileSync(path.join(TEMPLATES, 'Qwen-Qwen2.5-7B-Instruct.jinja'), 'utf8'),
    tokens: { bosToken: null, eosToken: '<|im_end|>' },
    stop: ['<|im_end|>', '<|im_start|>user'],
    system: 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.',
  },
  {
    name: 'Llama-3.1-Instruct (a fixed system header)',
    source: () =>
      fs.readFileSync(path.join(TEMPLATES, 'meta-llama-Llama-3.1-8B-Instruct.jinja'), 'utf8'),
    tokens: { bosToken: '<|begin_of_text|>', eosToken: '<|eot_id|>' },
    stop: ['<|eot_id|>', '<|start_header_id|>user<|end_header_id|>'],
    system: null,
  },
];

for (const family of FAMILIES) {
  test(`Ollama Modelfile for ${family.name}: TEMPLATE renders chats as the chat template, stops, SYSTEM`, () => {
    const source = family.source();
    const mf = parseModelfile(modelfileText('model.gguf', ollamaChatFormat(source, family.tokens)));
    assert.equal(mf.from, './model.gguf');
    assert.deepEqual(mf.stop, family.stop);
    assert.equal(mf.system, family.system);
    for (const messages of CONVERSATIONS) {
      assert.equal(
        ollamaRender(mf, messages),
        jinjaRender(source, family.tokens, messages),
        `${family.name}: ${messages.map((m) => m.role).join(', ')}`,
      );
    }
  });
}

test('the ChatML Modelfile, as text', () => {
  const text = modelfileText(
    'model.gguf',
    ollamaChatFormat(BUILTIN_CHAT_TEMPLATES.chatml!, { bosToken: null, eosToken: null }),
  );
  assert.equal(
    text,
    [
      'FROM ./model.gguf',
      'TEMPLATE """{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system',
      '{{ .Content }}<|im_end|>',
      '{{ else if eq .Role "user" }}<|im_start|>user',
      '{{ .Content }}<|im_end|>',
      '{{ else if eq .Role "assistant" }}<|im_start|>assistant',
      '{{ .Content }}<|im_end|>',
      '{{ end }}{{ end }}<|im_start|>assistant',
      '"""',
      'PARAMETER stop "<|im_end|>"',
      'PARAMETER stop "<|im_start|>user"',
      '',
    ].join('\n'),
  );
});

test('a chat template that is not turn by turn is refused, saying what differs', () => {
  // Prints the conversation newest first: no Go range over .Messages can do that.
  const reversed =
    "{%- for message in messages | reverse %}{{ '[' + message['role'] + '] ' + message['content'] + '\\n' }}{%- endfor %}";
  assert.throws(
    () => ollamaChatFormat(reversed, { bosToken: null, eosToken: null }),
    (e: unknown) => e instanceof OllamaTemplateError && /out of order/.test((e as Error).message),
  );
  const withDelimiters =
    "{%- for message in messages %}{{ '{{' + message['content'] }}{%- endfor %}";
  assert.throws(
    () => ollamaChatFormat(withDelimiters, { bosToken: null, eosToken: null }),
    /holds "\{\{" or "\}\}"/,
  );
});

function qlora(args: string[], cwd: string) {
  return spawnSync(
    process.execPath,
    ['--import', TSX, path.join(root, 'src', 'cli', 'run.ts'), ...args],
    { cwd, encoding: 'utf8', timeout: 120_000 },
  );
}

test('qlora export --format ollama writes model.gguf and a Modelfile into -o, and nothing else', () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-ollama-'));
  try {
    const model = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
    const r = qlora(
      ['export', '-m', model, '--format', 'ollama', '--chat-template', 'zephyr', '-o', 'out'],
      cwd,
    );
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(cwd), ['out']);
    assert.deepEqual(fs.readdirSync(path.join(cwd, 'out')).sort(), ['Modelfile', 'model.gguf']);
    assert.match(r.stdout, /ollama create out -f out\/Modelfile/);
    const meta = readGgufMetadata(path.join(cwd, 'out', 'model.gguf'));
    assert.equal(meta.metadata.get('tokenizer.chat_template'), BUILTIN_CHAT_TEMPLATES.zephyr);
    const mf = parseModelfile(fs.readFileSync(path.join(cwd, 'out', 'Modelfile'), 'utf8'));
    assert.equal(mf.from, './model.gguf');
    assert.deepEqual(mf.stop, ['</s>', '<|user|>']);
    // stories260K's own tokens: BOS <s> is left to llama.cpp, EOS </s> ends each turn.
    const chat: ChatMessage[] = [{ role: 'user', content: 'Once upon a time' }];
    assert.equal(ollamaRender(mf, chat), '<|user|>\nOnce upon a time</s>\n<|assistant|>\n');

    // A folder holding something else is refused before anything is written.
    fs.mkdirSync(path.join(cwd, 'busy'));
    fs.writeFileSync(path.join(cwd, 'busy', 'notes.txt'), 'mine');
    const refused = qlora(['export', '-m', model, '--format', 'ollama', '-o', 'busy'], cwd);
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /busy: the folder holds other files \(notes\.txt\)/);
    assert.deepEqual(fs.readdirSync(path.join(cwd, 'busy')), ['notes.txt']);

    // Without a chat template (stories260K has none) the Modelfile is FROM only, with a warning.
    const plain = qlora(['export', '-m', model, '--format', 'ollama', '-o', 'plain'], cwd);
    assert.equal(plain.status, 0, plain.stderr);
    assert.match(plain.stderr, /no chat template/);
    assert.equal(
      fs.readFileSync(path.join(cwd, 'plain', 'Modelfile'), 'utf8'),
      'FROM ./model.gguf\n',
    );
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
