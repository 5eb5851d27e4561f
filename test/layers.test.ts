/**
 * The layering of docs/architecture.md, checked on the source: a module imports only from its own
 * layer or lower ones (train and generate share a level). The library's public entry point
 * (src/index.ts) exports nothing from the CLI.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const SRC = path.join(import.meta.dirname, '..', 'src');
const LEVEL: Record<string, number> = {
  tensor: 0,
  quant: 1,
  backends: 2,
  nn: 3,
  models: 4,
  io: 5,
  tokenizer: 6,
  load: 7,
  data: 8,
  train: 9,
  generate: 9,
  export: 10,
  serve: 11,
  hub: 12,
  cli: 13,
};

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports and re-exports of a file, static and dynamic. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) out.push(m[1]!);
  return out;
}

function layerOf(file: string): string | null {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length > 1 ? rel[0]! : null;
}

test('every src layer imports only from its own layer or lower ones', () => {
  const files = sources(SRC);
  const layers = new Set(files.map(layerOf).filter((l): l is string => l !== null));
  for (const l of layers) assert.ok(l in LEVEL, `src/${l}/ is not a layer of docs/architecture.md`);
  const upward: string[] = [];
  for (const file of files) {
    const from = layerOf(file);
    if (from === null) continue;
    for (const spec of importsOf(file)) {
      const to = layerOf(path.resolve(path.dirname(file), spec));
      if (to !== null && LEVEL[to]! > LEVEL[from]!)
        upward.push(`${path.relative(SRC, file)} imports ${spec}`);
    }
  }
  assert.deepEqual(upward, []);
});

test('the library entry point exports nothing from the CLI', () => {
  const fromCli = importsOf(path.join(SRC, 'index.ts')).filter((s) => s.startsWith('./cli/'));
  assert.deepEqual(fromCli, []);
});

test('architecture.md lists every layer folder', () => {
  const doc = fs.readFileSync(path.join(SRC, '..', 'docs', 'architecture.md'), 'utf8');
  for (const l of Object.keys(LEVEL)) assert.match(doc, new RegExp(`\`src/${l}/\``), l);
});
