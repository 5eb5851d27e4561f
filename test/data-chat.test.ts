// Chat templates rendered with @huggingface/jinja against strings written by hand from reading each
// template, and assistant-only loss checked token by token with the real TinyLlama and Phi-3 tokenizers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChatTemplate, type ChatMessage } from '../src/data/chat-template.js';
import { DatasetError, RowError } from '../src/data/errors.js';
import { RowRenderer } from '../src/data/formats.js';
import { tokenizeExample } from '../src/data/tokenize.js';
import type { Tokenizer } from '../src/tokenizer/types.js';
import {
  chatTemplateFile,
  configChatTemplate,
  phi3Tokenizer,
  tinyLlamaTokenizer,
} from './data-util.js';

const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello!' },
  { role: 'user', content: 'Bye' },
  { role: 'assistant', content: 'Goodbye.' },
];

const tinyLlama = () =>
  new ChatTemplate(configChatTemplate('tinyllama-tokenizer_config.json'), {
    bosToken: '<s>',
    eosToken: '</s>',
  });
const phi3 = () =>
  new ChatTemplate(configChatTemplate('phi-3-mini-tokenizer_config.json'), {
    bosToken: '<s>',
    eosToken: '<|endoftext|>',
  });
const llama3 = (file: string) =>
  new ChatTemplate(chatTemplateFile(file), {
    bosToken: '<|begin_of_text|>',
    eosToken: '<|eot_id|>',
  });
const qwen = () =>
  new ChatTemplate(chatTemplateFile('Qwen-Qwen2.5-7B-Instruct.jinja'), {
    bosToken: null,
    eosToken: '<|im_end|>',
  });

test('TinyLlama: each turn is "<|role|>\\n" + content + eos + "\\n" (trim_blocks keeps the newline after }})', () => {
  const t = tinyLlama();
  const expected =
    '<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nBye</s>\n<|assistant|>\nGoodbye.</s>\n';
  assert.equal(t.render(CONVERSATION, false), expected);
  assert.equal(
    t.render(CONVERSATION.slice(0, 2), true),
    '<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\n',
  );
  const { text, spans } = t.renderWithAssistantSpans(CONVERSATION);
  assert.equal(text, expected);
  assert.equal(spans.length, 2);
  assert.equal(
    spans[0]!.before,
    '<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\n',
  );
  assert.equal(
    spans[0]!.through,
    '<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n',
  );
  assert.equal(spans[1]!.through, expected);
});

test('Phi-3: "<|role|>\\n" + content + "<|end|>\\n", then eos_token unless a generation prompt follows', () => {
  const t = phi3();
  const expected =
    '<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n' +
    '<|user|>\nBye<|end|>\n<|assistant|>\nGoodbye.<|end|>\n<|endoftext|>';
  assert.equal(t.render(CONVERSATION, false), expected);
  const { spans } = t.renderWithAssistantSpans(CONVERSATION);
  assert.equal(
    spans[0]!.before,
    '<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n',
  );
  // The prefix conversation ends with eos_token, which the full one does not have there.
  assert.equal(
    spans[0]!.through,
    '<|system|>\nYou are terse.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|endoftext|>',
  );
});

for (const file of [
  'meta-llama-Llama-3.1-8B-Instruct.jinja',
  'meta-llama-Llama-3.2-3B-Instruct.jinja',
]) {
  test(`${file}: bos, system header with the fixed date, trimmed contents, <|eot_id|> after each turn`, () => {
    const t = llama3(file);
    const messages: ChatMessage[] = [
      { role: 'system', content: 'You are terse.  ' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: ' Hello! ' },
    ];
    const header = (role: string) => `<|start_header_id|>${role}<|end_header_id|>\n\n`;
    const system = `<|begin_of_text|>${header('system')}Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are terse.<|eot_id|>`;
    const expected = `${system}${header('user')}Hi<|eot_id|>${header('assistant')}Hello!<|eot_id|>`;
    const { text, spans } = t.renderWithAssistantSpans(messages);
    assert.equal(text, expected);
    assert.equal(spans[0]!.before, `${system}${header('user')}Hi<|eot_id|>${header('assistant')}`);
    assert.equal(spans[0]!.through, expected);
  });
}

test('Qwen2.5: default system prompt, "<|im_start|>role\\n" + content + "<|im_end|>\\n"', () => {
  const t = qwen();
  const turns = CONVERSATION.slice(1);
  const sys =
    '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n';
  const expected =
    `${sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n` +
    '<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nGoodbye.<|im_end|>\n';
  const { text, spans } = t.renderWithAssistantSpans(turns);
  assert.equal(text, expected);
  assert.equal(spans[0]!.before, `${sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n`);
  assert.equal(
    spans[0]!.through,
    `${sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n`,
  );
  assert.equal(
    t.render(turns.slice(0, 1), true),
    `${sys}<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n`,
  );
  // An explicit system message replaces the default one.
  assert.equal(
    t.render(
      [
        { role: 'system', content: 'S' },
        { role: 'user', content: 'U' },
      ],
      false,
    ),
    '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n',
  );
});

/** Loss tokens, grouped into contiguous runs. */
function targetRuns(ids: readonly number[], targets: readonly number[]): number[][] {
  const runs: number[][] = [];
  for (let i = 0; i < ids.length; i++) {
    if (!targets[i]) continue;
    if (i === 0 || !targets[i - 1]) runs.push([]);
    runs[runs.length - 1]!.push(ids[i]!);
  }
  return runs;
}

function renderChat(tokenizer: Tokenizer, messages: ChatMessage[]) {
  const renderer = new RowRenderer({
    chatTemplate: () =>
      new ChatTemplate(tokenizer.chatTemplate!, {
        bosToken: tokenizer.bosToken,
        eosToken: tokenizer.eosToken,
      }),
  });
  return renderer.render({ messages }, { file: 'chat.jsonl', line: 1, row: 1 });
}

test('TinyLlama tokens: loss exactly on each assistant reply through its </s>, nothing from other turns', () => {
  const tok = tinyLlamaTokenizer();
  const result = tokenizeExample(tok, renderChat(tok, CONVERSATION));
  assert.equal(result.inexactBoundaries, 0);
  // One BOS (the config adds it; the template does not write one), never a target.
  assert.equal(result.ids[0], tok.bosId);
  assert.equal(result.ids.filter((id) => id === tok.bosId).length, 1);
  const runs = targetRuns(result.ids, result.targets);
  assert.equal(runs.length, 2);
  for (const [run, content] of [
    [runs[0]!, 'Hello!'],
    [runs[1]!, 'Goodbye.'],
  ] as const) {
    // The reply, its </s>, and the newline the template writes after it; no user or header text.
    assert.equal(tok.decode(run, { skipSpecialTokens: true }).trim(), content);
    assert.equal(run.filter((id) => id === tok.eosId).length, 1);
    assert.equal(tok.decode(run.slice(run.indexOf(tok.eosId!) + 1)).trim(), '');
  }
  // The token before each run ends the "<|assistant|>\n" header: a newline byte token.
  const firstStart = result.targets.indexOf(1);
  assert.equal(tok.idToToken(result.ids[firstStart - 1]!), '<0x0A>');
  assert.equal(
    tok
      .decode(result.ids.slice(0, firstStart), { skipSpecialTokens: true })
      .trimEnd()
      .endsWith('<|assistant|>'),
    true,
  );
  // Everything not a target decodes to the prompts and headers only.
  const masked = result.ids.filter((_, i) => !result.targets[i]);
  const maskedText = tok.decode(masked, { skipSpecialTokens: true });
  assert.ok(!maskedText.includes('Hello') && !maskedText.includes('Goodbye'), maskedText);
  assert.ok(maskedText.includes('You are terse.') && maskedText.includes('Bye'));
});

test('Phi-3 tokens: <|assistant|> ends the prompt; loss covers reply + <|end|> (+ final <|endoftext|>)', () => {
  const tok = phi3Tokenizer();
  const id = (t: string) => tok.tokenToId(t)!;
  assert.equal(tok.addBos, false); // Phi-3's config: add_bos_token false
  const result = tokenizeExample(tok, renderChat(tok, CONVERSATION));
  assert.equal(result.inexactBoundaries, 0);
  const runs = targetRuns(result.ids, result.targets);
  assert.equal(runs.length, 2);
  for (let i = 0; i < result.ids.length; i++) {
    if (result.targets[i] && !result.targets[i - 1])
      assert.equal(result.ids[i - 1], id('<|assistant|>'));
  }
  assert.equal(tok.decode(runs[0]!, { skipSpecialTokens: true }).trim(), 'Hello!');
  assert.equal(runs[0]!.at(-1), id('<|end|>'));
  assert.equal(tok.decode(runs[1]!, { skipSpecialTokens: true }).trim(), 'Goodbye.');
  assert.deepEqual(runs[1]!.slice(-2), [id('<|end|>'), id('<|endoftext|>')]);
  // The user turn's <|end|> is not a target.
  const userEnd = result.ids.indexOf(id('<|end|>'));
  assert.equal(result.targets[userEnd], 0);
});

test('chat errors: no assistant turn, unknown role, bad content, template exceptions, no template', () => {
  const tok = tinyLlamaTokenizer();
  const where = { file: 'chat.jsonl', line: 7, row: 7 };
  const r = new RowRenderer({ chatTemplate: () => tinyLlama() });
  assert.throws(
    () => r.render({ messages: [{ role: 'user', content: 'Hi' }] }, where),
    (e: unknown) => {
      assert.ok(e instanceof RowError);
      assert.match(
        (e as Error).message,
        /chat\.jsonl, line 7 \(row 7\): the chat has no assistant turn \(roles: user\)/,
      );
      return true;
    },
  );
  assert.throws(
    () => r.render({ messages: [{ role: 'narrator', content: 'x' }] }, where),
    /message 1 has unknown role 'narrator'/,
  );
  assert.throws(
    () => r.render({ messages: [{ role: 'user', content: 3 }] }, where),
    /message 1 \(user\) content must be text, got a number/,
  );
  assert.throws(
    () => r.render({ messages: 'hello' }, where),
    /'messages' must be a list of messages, got a string/,
  );
  assert.throws(() => r.render({ messages: [] }, where), /'messages' is empty/);
  // Llama 3.1 raises for two tool calls in one message.
  const l = new RowRenderer({
    chatTemplate: () => llama3('meta-llama-Llama-3.1-8B-Instruct.jinja'),
  });
  const twoCalls = {
    role: 'assistant',
    content: '',
    tool_calls: [
      { function: { name: 'a', arguments: {} } },
      { function: { name: 'b', arguments: {} } },
    ],
  };
  assert.throws(
    () => l.render({ messages: [{ role: 'user', content: 'Hi' }, twoCalls] }, where),
    /chat template error: .*only supports single tool-calls/,
  );
  assert.throws(
    () => new ChatTemplate('{% for m in messages %}', { bosToken: null, eosToken: null }),
    DatasetError,
  );
  const none = new RowRenderer({ chatTemplate: () => null });
  assert.throws(
    () => none.render({ messages: CONVERSATION }, where),
    /need a chat template.*--chat-template/,
  );
  // ShareGPT rows become role/content messages.
  const sharegpt = r.render(
    {
      conversations: [
        { from: 'human', value: 'Hi' },
        { from: 'gpt', value: 'Hello!' },
      ],
    },
    where,
  );
  assert.equal(sharegpt.text, '<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n');
  assert.ok(tok.encode(sharegpt.text).length > 0);
});

test('a template that writes bos_token itself gets no second BOS from the tokenizer config', () => {
  const tok = tinyLlamaTokenizer();
  assert.equal(tok.addBos, true);
  const template = new ChatTemplate(
    "{{ bos_token }}{% for m in messages %}{{ '[' + m.role + '] ' + m.content + eos_token }}{% endfor %}",
    { bosToken: tok.bosToken, eosToken: tok.eosToken },
  );
  const renderer = new RowRenderer({ chatTemplate: () => template });
  const rendered = renderer.render({ messages: CONVERSATION.slice(1, 3) }, { file: 'x', row: 1 });
  assert.equal(rendered.text, '<s>[user] Hi</s>[assistant] Hello!</s>');
  const { ids, targets } = tokenizeExample(tok, rendered);
  assert.equal(ids[0], tok.bosId);
  assert.equal(ids.filter((id) => id === tok.bosId).length, 1);
  // This template has no generation prompt, so at inference the model itself would write the
  // "[assistant] " header after the user's turn: the header is part of what it learns.
  const loss = ids.filter((_, i) => targets[i]);
  assert.equal(tok.decode(loss, { skipSpecialTokens: true }).trim(), '[assistant] Hello!');
  assert.equal(loss.at(-1), tok.eosId);
});

test('a generation prompt that the history does not repeat (a thinking block): the reply is found by content', () => {
  // Like Qwen3: add_generation_prompt opens "<think>", which past assistant turns do not show.
  const template = new ChatTemplate(
    "{% for m in messages %}{{ '<' + m.role + '>' + m.content + '</' + m.role + '>' }}{% endfor %}" +
      "{% if add_generation_prompt %}{{ '<assistant><think>' }}{% endif %}",
    { bosToken: null, eosToken: null },
  );
  const messages: ChatMessage[] = [
    { role: 'user', content: 'Hello!' },
    { role: 'assistant', content: 'Hello!' },
  ];
  const { text, spans } = template.renderWithAssistantSpans(messages);
  assert.equal(text, '<user>Hello!</user><assistant>Hello!</assistant>');
  // Not the user's identical "Hello!": the search starts after the rendered history.
  assert.equal(spans[0]!.before, '<user>Hello!</user><assistant>');
  assert.equal(spans[0]!.through, text);
});
