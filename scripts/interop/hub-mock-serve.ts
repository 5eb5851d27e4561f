// Serves stories260K (as an HF folder) from the test suite's mock Hub on 127.0.0.1 until SIGTERM,
// writing its URL to $1: the Hub side of scripts/interop/hub-cache.sh.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convertCheckpoint } from '../../src/export/convert.js';
import { STORIES } from '../../test/export-support.js';
import { startMockHub } from '../../test/hub-mock.js';

const urlFile = process.argv[2];
if (!urlFile) throw new Error('usage: hub-mock-serve.ts URL_FILE');
const hf = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-hub-interop-'));
convertCheckpoint(path.join(STORIES, 'stories260K.gguf'), hf);
const files = new Map<string, Buffer>();
for (const f of fs.readdirSync(hf)) files.set(f, fs.readFileSync(path.join(hf, f)));
const hub = await startMockHub([
  { type: 'model', name: 'test/stories', sha: 'a'.repeat(39) + '1', files },
]);
fs.writeFileSync(urlFile, hub.url);
process.on('SIGTERM', () => {
  void hub.close().then(() => {
    fs.rmSync(hf, { recursive: true, force: true });
    process.exit(0);
  });
});
