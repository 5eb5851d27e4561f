// The documents the code cites live in the repository: every `docs/NAME.md` named in the sources,
// tests, benches, README or the docs themselves exists, and every section it cites (`§5.4`,
// `§2.1–2.2`, `§ FLOP accounting`) is a heading of that document. Specs kept outside the repository
// (a bare formats.md or cpu-performance.md) are not cited, and no test or bench reads the machine's
// shared asset folder instead of fixtures/.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const self = path.relative(root, fileURLToPath(import.meta.url));

function walk(dir: string, exts: readonly string[], out: string[] = []): string[] {
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'node_modules' && e.name !== 'results') walk(rel, exts, out);
    } else if (exts.some((x) => e.name.endsWith(x))) out.push(rel);
  }
  return out;
}

const CODE_EXTS = ['.ts', '.js', '.cc', '.h', '.sh'];
const codeFiles = [
  ...['src', 'native', 'test', 'bench', 'scripts', 'web'].flatMap((d) =>
    fs.existsSync(path.join(root, d)) ? walk(d, CODE_EXTS) : [],
  ),
  'binding.gyp',
].filter((f) => f !== self);
const docFiles = ['README.md', ...walk('docs', ['.md'])];

/** The text with comment continuations (`\n * `, `\n// `) joined, so a citation may wrap. */
function joined(file: string): string {
  return fs.readFileSync(path.join(root, file), 'utf8').replace(/\n[ \t]*(?:\*|\/\/)[ \t]*/g, ' ');
}

/** Section ids ("2", "2.1") and heading texts of a markdown document. */
function sectionsOf(doc: string): { ids: Set<string>; headings: string[] } {
  const ids = new Set<string>();
  const headings: string[] = [];
  for (const line of fs.readFileSync(path.join(root, doc), 'utf8').split('\n')) {
    const h = /^#{1,6}\s+(.*)$/.exec(line);
    if (!h) continue;
    headings.push(h[1]!);
    const n = /^(\d+(?:\.\d+)*)\.?\s/.exec(h[1]!);
    if (n) ids.add(n[1]!);
  }
  return { ids, headings };
}

interface Citation {
  file: string;
  doc: string;
  section: string | null;
}

function citations(): Citation[] {
  const out: Citation[] = [];
  for (const file of [...codeFiles, ...docFiles]) {
    const text = joined(file);
    for (const m of text.matchAll(/docs\/([\w-]+\.md)(\s*§\s*([^);:,\n]*))?/g)) {
      out.push({ file, doc: `docs/${m[1]}`, section: m[3]?.trim() ?? null });
    }
  }
  return out;
}

test('every docs/*.md the code and the docs cite exists, with the sections cited', () => {
  const all = citations();
  assert.ok(all.length >= 30, `found only ${all.length} citations: the scan is broken`);
  const problems: string[] = [];
  for (const c of all) {
    if (!fs.existsSync(path.join(root, c.doc))) {
      problems.push(`${c.file}: cites ${c.doc}, which is not in the repository`);
      continue;
    }
    if (c.section === null || c.section === '') continue;
    const { ids, headings } = sectionsOf(c.doc);
    const numbers = c.section.match(/\d+(?:\.\d+)*/g);
    if (numbers && /^\d/.test(c.section)) {
      for (const n of numbers)
        if (!ids.has(n))
          problems.push(`${c.file}: cites ${c.doc} §${n}, which has no such section`);
    } else if (!headings.some((h) => h.includes(c.section!))) {
      problems.push(`${c.file}: cites ${c.doc} § ${c.section}, which has no such heading`);
    }
  }
  assert.deepEqual(problems, []);
});

test('no citation of a spec kept outside the repository', () => {
  const outside = ['formats.md', 'cpu-performance.md'];
  const problems: string[] = [];
  for (const file of [...codeFiles, ...docFiles]) {
    const text = fs.readFileSync(path.join(root, file), 'utf8');
    for (const name of outside) {
      for (const m of text.matchAll(new RegExp(`(^|[^\\w/-])${name.replace('.', '\\.')}`, 'g')))
        problems.push(`${file}: cites '${name}' at offset ${m.index} without docs/`);
    }
  }
  assert.deepEqual(problems, []);
});

test('tests and benches read fixtures/, never the shared asset folder outside the repository', () => {
  const problems: string[] = [];
  for (const file of codeFiles.filter((f) => /^(test|bench|scripts)\//.test(f))) {
    const text = fs.readFileSync(path.join(root, file), 'utf8');
    if (/\/work\/shared|\.\.\/shared\b|shared\/assets/.test(text))
      problems.push(`${file} refers to the shared asset folder`);
  }
  assert.deepEqual(problems, []);
});

test('every instruction set binding.gyp says the kernels fall back through has kernels in native/src', () => {
  const gyp = fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8');
  const chain = /fall back ([^\n]*?) by compile-time/.exec(gyp);
  assert.ok(chain, 'binding.gyp no longer describes the fallback chain');
  const sources = walk('native/src', ['.cc', '.h'])
    .map((f) => fs.readFileSync(path.join(root, f), 'utf8'))
    .join('\n');
  // What code for each instruction set looks like (intrinsics or their header).
  const evidence: Record<string, RegExp> = {
    'AVX-512': /_mm512_/,
    'AVX2+FMA': /_mm256_fmadd_ps/,
    NEON: /arm_neon\.h|vfmaq_f32/,
    SVE: /arm_sve\.h/,
  };
  for (const isa of chain[1]!.split('->').map((s) => s.trim())) {
    if (isa === 'scalar') continue;
    const pattern = evidence[isa];
    assert.ok(pattern, `binding.gyp names '${isa}', which this test does not know`);
    assert.match(sources, pattern, `binding.gyp claims ${isa} kernels, but native/src has none`);
  }
});
