// --chat-template FILE|NAME across the commands (issue 10.4): train (flag and YAML) renders Alpaca rows
// as chats with a built-in, saves the template with the adapter, and a merged GGUF export carries it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BUILTIN_CHAT_TEMPLATES } from '../src/data/builtin-chat-templates.js';
import { readGgufMetadata } from '../src/io/gguf.js';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'src', 'cli', 'run.ts');
const TSX = import.meta.resolve('tsx');
const MODEL = path.join(root, 'fixtures', 'stories260K', 'stories260K.bin');
const IDENTITY = path.join(root, 'fixtures', 'datasets', 'llamafactory_identity', 'identity.json');

function qlora(args: string[], cwd: string, input?: string) {
  return spawnSync(process.execPath, ['--import', TSX, cli, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 240_000,
    input,
  });
}

test('train --chat-template NAME: Alpaca rows as chats, the template saved with the adapter and written into the GGUF', () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-chat-'));
  try {
    // stories260K ships no chat template: without one, chat rows cannot be rendered.
    const none = qlora(
      ['data', 'inspect', IDENTITY, '-m', MODEL, '--format', 'chat', '--show', '0'],
      cwd,
    );
    assert.notEqual(none.status, 0);
    assert.match(none.stderr, /--chat-template/);
    const inspect = qlora(
      [
        'data',
        'inspect',
        IDENTITY,
        '-m',
        MODEL,
        '--format',
        'chat',
        '--chat-template',
        'zephyr',
        '--show',
        '1',
        '--no-color',
      ],
      cwd,
    );
    assert.equal(inspect.status, 0, inspect.stderr);
    assert.match(
      inspect.stdout,
      /⟦<s><\|user\|>\n\s*│ hi<\/s> \n\s*│ <\|assistant\|>\n\s*│ ⟧Hello!/,
    );

    const train = qlora(
      [
        'train',
        '-m',
        MODEL,
        '-d',
        IDENTITY,
        '--format',
        'chat',
        '--chat-template',
        'chatml',
        '--max-steps',
        '2',
        '--eval-every',
        '0',
        '--save-every',
        '0',
        '--seq-len',
        '128',
        '-o',
        'out',
      ],
      cwd,
    );
    assert.equal(train.status, 0, train.stderr);
    assert.match(train.stderr, /data: chat format/);
    assert.equal(
      fs.readFileSync(path.join(cwd, 'out', 'chat_template.jinja'), 'utf8'),
      BUILTIN_CHAT_TEMPLATES.chatml,
    );
    assert.equal(
      JSON.parse(fs.readFileSync(path.join(cwd, 'out', 'qlora_config.json'), 'utf8')).data
        .chat_template,
      'chatml',
    );

    const exp = qlora(['export', '-a', 'out', '--dtype', 'f32', '-o', 'chat.gguf'], cwd);
    assert.equal(exp.status, 0, exp.stderr);
    assert.equal(
      readGgufMetadata(path.join(cwd, 'chat.gguf')).metadata.get('tokenizer.chat_template'),
      BUILTIN_CHAT_TEMPLATES.chatml,
    );

    // generate --chat takes the adapter's template (the model has none of its own).
    const chat = qlora(['generate', '-a', 'out', '--chat', '-n', '4', '-t', '0'], cwd, 'hi\n');
    assert.equal(chat.status, 0, chat.stderr);

    // The YAML key, with a template file beside the YAML file.
    fs.writeFileSync(path.join(cwd, 'mine.jinja'), BUILTIN_CHAT_TEMPLATES['phi-3']!);
    fs.writeFileSync(
      path.join(cwd, 'run.yaml'),
      [
        `model: ${MODEL}`,
        `data: ${IDENTITY}`,
        'output: out2',
        'format: chat',
        'chat_template: mine.jinja',
        'max_steps: 1',
        'seq_len: 128',
        'eval_every: 0',
        'save_every: 0',
      ].join('\n'),
    );
    const yaml = qlora(['train', '--config', 'run.yaml'], cwd);
    assert.equal(yaml.status, 0, yaml.stderr);
    assert.equal(
      fs.readFileSync(path.join(cwd, 'out2', 'chat_template.jinja'), 'utf8'),
      BUILTIN_CHAT_TEMPLATES['phi-3'],
    );

    const bad = qlora(['eval', '-a', 'out', '-d', IDENTITY, '--chat-template', 'no-such'], cwd);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /'no-such' is neither a file nor a built-in template/);
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
