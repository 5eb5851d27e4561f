// One of each (issue 15): a helper lives once, in the lowest layer that needs it, instead of being
// copied into each user. This test finds copies that are token for token the same (parameter
// names aside) among the functions of src/, and duplicated definitions in native/src.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

function filesUnder(dir: string, ext: RegExp): string[] {
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return filesUnder(rel, ext);
    return ext.test(e.name) ? [rel] : [];
  });
}

/** Bodies shorter than this many tokens (one-line accessors, dtype checks) are not compared. */
const MIN_TOKENS = 40;

/**
 * Known copies waiting on other work: plan.ts replays the model (issue 15 replaces it with a
 * measured pass), so its copy of projectionHasBias goes with it.
 */
const KNOWN = new Set(['src/train/plan.ts hasBias']);

test('no two functions in src/ have the same body (parameter names aside)', () => {
  const files = filesUnder('src', /\.ts$/);
  assert.ok(files.length > 100, `found only ${files.length} files`);
  const bodies = new Map<string, string[]>();
  for (const file of files) {
    const sf = ts.createSourceFile(
      file,
      fs.readFileSync(path.join(root, file), 'utf8'),
      ts.ScriptTarget.Latest,
      true,
    );
    const visit = (node: ts.Node): void => {
      if (ts.isFunctionLike(node) && 'body' in node && node.body && ts.isBlock(node.body)) {
        const params = new Map(node.parameters.map((p, i) => [p.name.getText(sf), `$${i}`]));
        const tokens: string[] = [];
        const scan = (n: ts.Node): void => {
          if (n.getChildCount(sf) === 0) tokens.push(params.get(n.getText(sf)) ?? n.getText(sf));
          else for (const c of n.getChildren(sf)) scan(c);
        };
        scan(node.body);
        const name = node.name?.getText(sf) ?? '<anonymous>';
        if (tokens.length >= MIN_TOKENS && !KNOWN.has(`${file} ${name}`)) {
          const line = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
          const key = tokens.join(' ');
          bodies.set(key, [...(bodies.get(key) ?? []), `${file}:${line} ${name}`]);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  const copies = [...bodies.values()].filter((w) => w.length > 1).map((w) => w.join(' = '));
  assert.deepEqual(copies, [], 'functions with the same body: keep one and import it');
});

test('native/src defines each helper once (the transpose, the scratch buffer)', () => {
  const text = filesUnder('native/src', /\.(cc|h)$/).map((f) => [f, read(f)] as const);
  const definitions = (re: RegExp): string[] =>
    text.flatMap(([f, t]) => [...t.matchAll(re)].map((m) => `${f}: ${m[0]}`));
  assert.equal(definitions(/void transpose16x16\(/g).length, 1, 'transpose16x16');
  // The scratch buffer: one class owning aligned float memory (attention's ForwardScratch and
  // BackwardScratch are views into it).
  assert.equal(definitions(/class \w*Scratch\w*\s*\{/g).length, 1, 'scratch classes');
});

function read(rel: string): string {
  return fs.readFileSync(path.join(root, rel), 'utf8');
}
