// Seeded mutation fuzzer over every parser (see subjects.ts). Cases run in batches inside child
// processes with a heap cap, a resident-memory watch and a per-case deadline; the parent reads each
// child's "B i" / "E i outcome" lines, so a crash, hang or memory blow-up is pinned on its case and
// the child is replaced. Outcomes: ok (loaded), clean (a clear error naming the file), crash, hang,
// blowup, unclear (an error without the file's name, or with raw engine text).
//
//   npm run fuzz -- --cases 100000 [--seed 1] [--jobs 2] [--subjects gguf,data] [--out fuzz-summary.json]
//   npm run fuzz -- --seed 1 --from 1234 --cases 1 --keep     (replay one case, keeping its files)
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const OUTCOMES = ['ok', 'clean', 'crash', 'hang', 'blowup', 'unclear'] as const;
export type Outcome = (typeof OUTCOMES)[number];

export interface FuzzOptions {
  cases: number;
  seed: number;
  /** Index of the first case (for replaying). */
  from?: number;
  jobs?: number;
  /** Cases per child process. */
  batch?: number;
  /** Per-case time limit. */
  caseTimeoutMs?: number;
  /** V8 heap cap and resident-memory limit of a child, in MiB. */
  heapMb?: number;
  rssMb?: number;
  subjects?: string[];
  keep?: boolean;
  /** Called after every case with the summary so far. */
  onProgress?: (done: number, summary: FuzzSummary) => void;
}

export interface FuzzSummary {
  seed: number;
  cases: number;
  counts: Record<Outcome, number>;
  bySubject: Record<string, Record<Outcome, number>>;
  /** Mean milliseconds per case, by subject (as seen by the parent, child start-up excluded). */
  msPerCase: Record<string, number>;
  /** Up to 20 examples of each bad outcome: case index, subject, and message or signal. */
  examples: Record<string, { case: number; subject: string; detail: string }[]>;
  seconds: number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const TSX = import.meta.resolve('tsx');

function rssMbOf(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

const zero = (): Record<Outcome, number> =>
  Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>;

export async function runFuzz(o: FuzzOptions): Promise<FuzzSummary> {
  const t0 = performance.now();
  const first = o.from ?? 0;
  const end = first + o.cases;
  const jobs = Math.max(1, o.jobs ?? Math.min(2, os.cpus().length));
  const batch = o.batch ?? 250;
  const caseTimeoutMs = o.caseTimeoutMs ?? 20_000;
  const heapMb = o.heapMb ?? 1024;
  const rssMb = o.rssMb ?? 2048;
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'qlora-fuzz-run-'));
  const summary: FuzzSummary = {
    seed: o.seed,
    cases: 0,
    counts: zero(),
    bySubject: {},
    msPerCase: {},
    examples: {},
    seconds: 0,
  };
  const totalMs: Record<string, number> = {};
  const finish = (): void => {
    summary.seconds = Math.round((performance.now() - t0) / 100) / 10;
    for (const [subject, counts] of Object.entries(summary.bySubject)) {
      const n = OUTCOMES.reduce((a, k) => a + counts[k], 0);
      summary.msPerCase[subject] = Math.round((totalMs[subject] ?? 0) / Math.max(1, n));
    }
  };
  const record = (i: number, subject: string, outcome: Outcome, detail: string, ms = 0): void => {
    totalMs[subject] = (totalMs[subject] ?? 0) + ms;
    summary.cases++;
    summary.counts[outcome]++;
    (summary.bySubject[subject] ??= zero())[outcome]++;
    if (outcome !== 'ok' && outcome !== 'clean') {
      const list = (summary.examples[outcome] ??= []);
      if (list.length < 20) list.push({ case: i, subject, detail });
    }
    if (o.onProgress) {
      finish();
      o.onProgress(summary.cases, summary);
    }
  };

  let next = first;
  /** Runs cases [from, to) in one child; when the child dies on a case, resumes after it in a new one. */
  const runChild = (from: number, to: number): Promise<number> =>
    new Promise((resolve) => {
      const args = [
        `--max-old-space-size=${heapMb}`,
        '--stack-size=984',
        '--import',
        TSX,
        path.join(here, 'child.ts'),
        scratch,
        String(o.seed),
        String(from),
        String(to - from),
      ];
      if (o.subjects) args.push(o.subjects.join(','));
      const child = spawn(process.execPath, args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, FUZZ_KEEP: o.keep ? '1' : '0' },
      });
      let current: { i: number; subject: string; since: number } | null = null;
      let lastDone = from - 1;
      let killedFor: Outcome | null = null;
      let stderr = '';
      let buffered = '';
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (chunk: string) => {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          const m = /^([BE]) (\d+) (\S+)(?: (.*))?$/.exec(line);
          if (!m) continue;
          const i = Number(m[2]);
          if (m[1] === 'B') current = { i, subject: m[3]!, since: performance.now() };
          else if (current && current.i === i) {
            const outcome = m[3] as Outcome;
            record(i, current.subject, outcome, m[4] ?? '', performance.now() - current.since);
            lastDone = i;
            current = null;
          }
        }
      });
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        stderr = (stderr + chunk).slice(-4000);
      });
      const watch = setInterval(() => {
        if (!current || killedFor) return;
        if (performance.now() - current.since > caseTimeoutMs) killedFor = 'hang';
        else if ((rssMbOf(child.pid!) ?? 0) > rssMb) killedFor = 'blowup';
        if (killedFor) child.kill('SIGKILL');
      }, 100);
      child.on('close', (code, signal) => {
        clearInterval(watch);
        const c = current as { i: number; subject: string } | null;
        if (c) {
          const oom =
            /heap out of memory|Allocation failed|invalid size error|Array buffer allocation failed/.test(
              stderr,
            );
          const outcome: Outcome = killedFor ?? (oom ? 'blowup' : 'crash');
          const detail =
            killedFor === 'hang'
              ? `no result after ${caseTimeoutMs} ms`
              : killedFor === 'blowup'
                ? `resident memory over ${rssMb} MiB`
                : `exit ${code ?? signal}: ${stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 300)}`;
          record(c.i, c.subject, outcome, detail);
          lastDone = c.i;
        } else if (lastDone < to - 1) {
          // Died between cases (e.g. while building seeds): count the rest of the batch as crashes.
          const detail = `child exited ${code ?? signal} before case ${lastDone + 1}: ${stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 300)}`;
          for (let i = lastDone + 1; i < to; i++) record(i, '?', 'crash', detail);
          lastDone = to - 1;
        }
        resolve(lastDone + 1);
      });
    });

  const worker = async (): Promise<void> => {
    while (next < end) {
      const from = next;
      const to = Math.min(end, from + batch);
      next = to;
      let at = from;
      while (at < to) at = await runChild(at, to);
    }
  };
  try {
    await Promise.all(Array.from({ length: jobs }, worker));
  } finally {
    if (!o.keep) fs.rmSync(scratch, { recursive: true, force: true });
    else console.error(`case files kept in ${scratch}`);
  }
  finish();
  return summary;
}

function parseArgs(argv: string[]): FuzzOptions & { out: string } {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (name: string, fallback: number): number => {
    const v = get(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0)
      throw new Error(`--${name} must be a non-negative integer, got ${v}`);
    return n;
  };
  return {
    cases: num('cases', 1000),
    seed: num('seed', 1),
    from: num('from', 0),
    jobs: num('jobs', Math.min(2, os.cpus().length)),
    batch: num('batch', 250),
    caseTimeoutMs: num('timeout-ms', 20_000),
    heapMb: num('heap-mb', 1024),
    rssMb: num('rss-mb', 2048),
    ...(get('subjects') ? { subjects: get('subjects')!.split(',') } : {}),
    keep: argv.includes('--keep'),
    out: get('out') ?? 'fuzz-summary.json',
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const options = parseArgs(process.argv.slice(2));
  const command = `npm run fuzz -- ${process.argv.slice(2).join(' ')}`;
  const save = (summary: FuzzSummary, partial: boolean): void => {
    const tmp = `${options.out}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ command, partial, ...summary }, null, 2)}\n`);
    fs.renameSync(tmp, options.out);
  };
  let last = 0;
  const summary = await runFuzz({
    ...options,
    // Progress on stderr and a partial summary every 500 cases, so a long run stopped early still reports.
    onProgress: (done, s) => {
      if (done - last >= 500 || done === options.cases) {
        last = done;
        console.error(
          `${done}/${options.cases}: ${OUTCOMES.map((k) => `${k} ${s.counts[k]}`).join(', ')}`,
        );
        save(s, done < options.cases);
      }
    },
  });
  save(summary, false);
  console.log(
    `${summary.cases} cases (seed ${summary.seed}) in ${summary.seconds} s: ${OUTCOMES.map((k) => `${k} ${summary.counts[k]}`).join(', ')}; summary in ${options.out}`,
  );
  const bad =
    summary.counts.crash + summary.counts.hang + summary.counts.blowup + summary.counts.unclear;
  process.exitCode = bad > 0 ? 1 : 0;
}
