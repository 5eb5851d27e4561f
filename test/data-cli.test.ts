// `qlora data inspect` end to end through the CLI entry (buildProgram/main), on the real ViGGO
// fixture with the real TinyLlama tokenizer folder.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { main } from '../src/cli/main.js';
import { materialize } from './tokenizer-fixtures.js';

let tokenizerDir: string;
let cleanup: () => void;
before(() => {
  ({ dir: tokenizerDir, cleanup } = materialize({
    'tinyllama/tokenizer.json.gz': 'tokenizer.json',
    'tinyllama/tokenizer_config.json': 'tokenizer_config.json',
  }));
});
after(() => cleanup());

/** Runs the CLI, returning what it printed with console.log. */
async function run(args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const original = console.log;
  console.log = (...parts: unknown[]) => lines.push(parts.join(' '));
  try {
    const code = await main(args);
    return { code, out: lines.join('\n') };
  } finally {
    console.log = original;
  }
}

test('data inspect on ViGGO: format, counts, histogram, loss share and a bracketed prompt', async () => {
  const { code, out } = await run([
    'data',
    'inspect',
    'fixtures/datasets/viggo',
    '--model',
    tokenizerDir,
    '--columns',
    'completion=mr',
    '--template',
    'Target sentence: {ref}\\nMeaning representation:\\n',
    '--max-seq-len',
    '256',
    '--show',
    '1',
    '--no-color',
  ]);
  assert.equal(code, 0);
  assert.match(
    out,
    /^format {8}completion \(as given\): prompt\/completion; loss on the completion only$/m,
  );
  assert.match(out, /^examples {6}train 300, validation 100 \(from the validation file\)$/m);
  // Histogram rows ("a-b │bars count") add up to the 300 train examples.
  const counts = [...out.matchAll(/^ +\d+(?:-\d+)? │[█ ]+ (\d+)$/gm)].map((m) => Number(m[1]));
  assert.ok(counts.length >= 3);
  assert.equal(
    counts.reduce((a, b) => a + b, 0),
    300,
  );
  const loss = /^loss tokens {3}(\d+) of (\d+) train tokens \((\d+\.\d)%\) carry loss$/m.exec(out);
  assert.ok(loss, out);
  assert.ok(Number(loss[1]) > 0 && Number(loss[1]) < Number(loss[2]));
  // The first ViGGO row, its prompt masked (bracketed) and the meaning representation learned.
  assert.ok(
    out.includes(
      '│ ⟦<s> Target sentence: Dirt: Showdown from 2012 is a sport racing game for the PlayStation, Xbox, PC rated E 10+ (for Everyone 10 and Older). ' +
        "It's not available on Steam, Linux, or Mac.\n  │ Meaning representation:\n  │ ⟧inform(name[Dirt: Showdown], release_year[2012]",
    ),
    out,
  );
  assert.ok(out.includes('has_mac_release[no])</s>'));
});

test('data inspect: a bad row stops with its location and the --skip-bad-rows hint', async () => {
  await assert.rejects(
    run([
      'data',
      'inspect',
      'fixtures/datasets/viggo',
      '--model',
      tokenizerDir,
      '--columns',
      'prompt=meaning,completion=ref',
    ]),
    /train\.csv, line 2 \(row 1\): has no column 'meaning' \(it has: mr, ref\)\n\(fix the row, or pass --skip-bad-rows/,
  );
  const bad = await run([
    'data',
    'inspect',
    'fixtures/datasets/viggo',
    '--model',
    tokenizerDir,
    '--truncation',
    'sideways',
  ]);
  assert.notEqual(bad.code, 0);
});
