// One fuzz worker process: runs cases [start, start+count) of a seeded run and reports each on
// stdout as it goes — "B i" before a case, "E i outcome message" after — written synchronously,
// so when a case crashes, hangs or blows up the process, the parent knows which case it was.
// Usage: node --import tsx test/fuzz/child.ts <scratch> <seed> <start> <count> [subject,...]
import fs from 'node:fs';
import path from 'node:path';
import { classify } from './classify.js';
import { caseSeed, rng, subjects } from './subjects.js';

const [scratch, seedArg, startArg, countArg, only] = process.argv.slice(2);
const seed = Number(seedArg);
const start = Number(startArg);
const count = Number(countArg);
const all = subjects(path.join(scratch!, 'seeds'));
const list = only ? all.filter((s) => only.split(',').includes(s.name)) : all;
if (list.length === 0) throw new Error(`no such subject: ${only}`);
const say = (line: string): void => void fs.writeSync(1, `${line}\n`);

for (let i = start; i < start + count; i++) {
  const subject = list[i % list.length]!;
  const dir = path.join(scratch!, `case-${i}`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const c = subject.make(rng(caseSeed(seed, i)));
  for (const [name, bytes] of c.files) fs.writeFileSync(path.join(dir, name), bytes);
  say(`B ${i} ${subject.name}`);
  let outcome: string;
  try {
    await c.load(dir);
    outcome = 'ok';
  } catch (e) {
    outcome = classify(e, c.target, dir);
  }
  say(`E ${i} ${outcome}`);
  if (process.env.FUZZ_KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true });
}
