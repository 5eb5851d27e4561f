// Issue 11.2: chat templates run under limits. Each hostile template used to abort Node (a
// billion-iteration loop), run out of heap after a minute (range(50M)|join) or run for minutes
// (nested loops, recursive macros); now each stops in well under a second with an error naming the
// template's file — in `data inspect`, in training's dataset loading and in `generate --chat` —
// while real templates render as before and stay fast over many rows.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { main } from '../src/cli/main.js';
import { ChatTemplate, ChatTemplateLimitError } from '../src/data/chat-template.js';
import { loadDataset } from '../src/data/dataset.js';
import { hfTokenizerFilesFromVocab } from '../src/export/hf-tokenizer-files.js';
import { readGgufMetadata } from '../src/io/gguf.js';
import { loadTokenizer } from '../src/tokenizer/index.js';
import { configChatTemplate } from './data-util.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-templates-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const QUICK = { timeout: 60_000 };

const HOSTILE: Record<string, string> = {
  'billion-iteration loop': '{% for i in range(1000000000) %}x{% endfor %}',
  'join of a 50M range': "{{ range(50000000)|join(',')|length }}",
  'nested loops':
    '{% for i in range(50000) %}{% for j in range(50000) %}{{ i }}{% endfor %}{% endfor %}',
  // A macro cannot name itself in its body here, but it can be handed itself.
  'recursive macro': '{% macro f(g, n) %}{{ g(g, n + 1) }}{% endmacro %}{{ f(f, 0) }}',
  'exponential macro':
    '{% macro f(g, n) %}{% if n > 0 %}{{ g(g, n - 1) }}{{ g(g, n - 1) }}{% endif %}{% endmacro %}{{ f(f, 60) }}',
  'string doubling':
    "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
  'list doubling':
    '{% set ns = namespace(a=[1, 2]) %}{% for i in range(40) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a|length }}',
};

const CHAT_ROW = JSON.stringify({
  messages: [
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello!' },
  ],
});

/** A tokenizer folder (the stories260K vocabulary as tokenizer.json) whose tokenizer_config.json carries `template`. */
function tokenizerFolder(name: string, template: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const files = hfTokenizerFilesFromVocab(
    readGgufMetadata(path.join(root, 'fixtures/stories260K/stories260K.gguf')).metadata,
  );
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(files.tokenizerJson));
  fs.writeFileSync(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify({ ...files.tokenizerConfig, chat_template: template }),
  );
  return dir;
}

let data: string;
before(() => {
  data = path.join(tmp, 'chat.jsonl');
  fs.writeFileSync(data, `${CHAT_ROW}\n${CHAT_ROW}\n`);
});

for (const [what, template] of Object.entries(HOSTILE)) {
  test(`a hostile template (${what}) stops quickly with an error naming its file`, QUICK, () => {
    const t = new ChatTemplate(template, {
      bosToken: '<s>',
      eosToken: '</s>',
      file: 'models/x/tokenizer_config.json',
    });
    assert.throws(
      () => t.render([{ role: 'user', content: 'Hi' }], true),
      (e: Error) =>
        e instanceof ChatTemplateLimitError &&
        /^models\/x\/tokenizer_config\.json: chat template stopped: (the template (ran more than|ran longer than|asked for range|produced more than|built a list)|Maximum call stack)/.test(
          e.message,
        ),
    );
  });
}

test(
  'data inspect and dataset loading (train) stop on a hostile template, naming tokenizer_config.json and the row',
  QUICK,
  async () => {
    const dir = tokenizerFolder('loop', HOSTILE['billion-iteration loop']!);
    const config = path.join(dir, 'tokenizer_config.json');
    const tok = loadTokenizer(dir);
    // --skip-bad-rows does not skip it: the template, not the row, is at fault.
    await assert.rejects(
      loadDataset(data, tok, { maxSeqLen: 64, validFraction: 0, skipBadRows: true }),
      (e: Error) =>
        e instanceof ChatTemplateLimitError &&
        e.message ===
          `${data}, line 1 (row 1): ${config}: chat template stopped: the template asked for range() of 1000000000 items (more than 100000)`,
    );
    await assert.rejects(
      main(['data', 'inspect', data, '--model', dir, '--skip-bad-rows']),
      (e: Error) =>
        e.message.endsWith(
          `${config}: chat template stopped: the template asked for range() of 1000000000 items (more than 100000)`,
        ),
    );
  },
);

test('generate --chat stops on a hostile template, naming its file', QUICK, async () => {
  const dir = tokenizerFolder('chat', HOSTILE['nested loops']!);
  const cli = path.join(root, 'src', 'cli', 'run.ts');
  const child = promisify(execFile)(
    process.execPath,
    [
      '--import',
      import.meta.resolve('tsx'),
      cli,
      'generate',
      '-m',
      path.join(root, 'fixtures/stories260K/stories260K.bin'),
      '--tokenizer',
      dir,
      '--chat',
      '-n',
      '4',
    ],
    { encoding: 'utf8', timeout: 50_000 },
  );
  child.child.stdin!.end('Hi\n');
  const failure = await child.then(
    () => null,
    (e: { code: number; stderr: string; killed: boolean }) => e,
  );
  assert.ok(failure && !failure.killed, 'the CLI exits (with an error) on its own');
  assert.match(
    failure.stderr,
    new RegExp(
      `${path.join(dir, 'tokenizer_config.json').replace(/[.\\/]/g, '\\$&')}: chat template stopped: the template ran (more than \\d+ steps|longer than)`,
    ),
  );
});

test('real templates render as before under the limits, and many rows stay fast', QUICK, () => {
  const t = new ChatTemplate(configChatTemplate('tinyllama-tokenizer_config.json'), {
    bosToken: '<s>',
    eosToken: '</s>',
  });
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Hi' },
    { role: 'assistant', content: 'Hello!' },
  ];
  assert.equal(
    t.render(messages, false),
    '<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n',
  );
  // 2,000 rows with span detection (several renders each) in one go: the limits cost no round trips.
  for (let i = 0; i < 2000; i++) t.renderWithAssistantSpans(messages);
  // A template may loop over a list that fits the limits.
  const small = new ChatTemplate(
    "{% for i in range(1000) %}{{ i }},{% endfor %}{{ strftime_now('%Y')|length }}",
    { bosToken: null, eosToken: null },
  );
  assert.ok(small.render([], false).endsWith('999,4'));
});
