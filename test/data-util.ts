// Real tokenizers for the data tests: TinyLlama (fixtures/tokenizers, H5's gzipped copy) and
// Phi-3-mini (fixtures/chat-templates, gzipped copy of the shared asset, sha256-checked).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { HfTokenizer } from '../src/tokenizer/index.js';
import { readJsonFixture, readTokenizerFixture } from './tokenizer-fixtures.js';

const PHI3_TOKENIZER_SHA256 = '9e2ae3d66819f163cdcfedba5078f3a3af8118c2712491ed60912f77886bda6f';

let tinyllama: HfTokenizer | null = null;
let phi3: HfTokenizer | null = null;

export function tinyLlamaTokenizer(): HfTokenizer {
  return (tinyllama ??= new HfTokenizer({
    tokenizerJson: readJsonFixture('tinyllama/tokenizer.json.gz'),
    tokenizerConfig: JSON.parse(
      readTokenizerFixture('tinyllama/tokenizer_config.json').toString('utf8'),
    ),
  }));
}

export function phi3Tokenizer(): HfTokenizer {
  if (phi3) return phi3;
  const raw = gunzipSync(fs.readFileSync('fixtures/chat-templates/phi-3-mini-tokenizer.json.gz'));
  const sha = createHash('sha256').update(raw).digest('hex');
  if (sha !== PHI3_TOKENIZER_SHA256)
    throw new Error(`phi-3-mini tokenizer.json sha256 ${sha} != upstream`);
  return (phi3 = new HfTokenizer({
    tokenizerJson: JSON.parse(raw.toString('utf8')),
    tokenizerConfig: JSON.parse(
      fs.readFileSync('fixtures/chat-templates/phi-3-mini-tokenizer_config.json', 'utf8'),
    ),
  }));
}

export function chatTemplateFile(name: string): string {
  return fs.readFileSync(`fixtures/chat-templates/${name}`, 'utf8');
}

export function configChatTemplate(name: string): string {
  return (JSON.parse(chatTemplateFile(name)) as { chat_template: string }).chat_template;
}
