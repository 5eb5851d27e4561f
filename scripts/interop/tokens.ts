/**
 * qlora-ts's training tokens for a dataset: per example the token ids and which tokens carry loss,
 * as `qlora train` builds them (the same loadDataset call, nothing held out, no length limit in
 * the way), for comparison with another trainer's tokenization (scripts/peft-interop.py compares
 * them with the masks the exported TRL script builds from segment rows).
 *
 *   node --import tsx scripts/interop/tokens.ts --model M --data D [--chat-template NAME|FILE]
 *     --out TOKENS.json
 *
 * TOKENS.json: [{"ids": [...], "targets": [0|1, ...]}, ...] in the order of the file.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { resolveChatTemplate } from '../../src/data/chat-template-source.js';
import { loadDataset } from '../../src/data/dataset.js';
import { loadTokenizer, tokenizerPathFor } from '../../src/tokenizer/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    data: { type: 'string' },
    'chat-template': { type: 'string' },
    out: { type: 'string' },
  },
});
if (!values.model || !values.data || !values.out) {
  console.error('usage: tokens.ts --model M --data D [--chat-template T] --out F');
  process.exit(2);
}
const tokenizer = loadTokenizer(tokenizerPathFor(values.model));
const chat = values['chat-template'] ? resolveChatTemplate(values['chat-template']) : null;
const data = await loadDataset(values.data, tokenizer, {
  maxSeqLen: 1 << 16,
  validFraction: 0,
  ...(chat ? { chatTemplate: chat.source } : {}),
});
const rows = data.train.map((e) => ({ ids: Array.from(e.ids), targets: Array.from(e.targets) }));
fs.writeFileSync(values.out, JSON.stringify(rows));
console.log(`wrote ${values.out} (${rows.length} examples, ${data.format} format)`);
