/** Parsers for CLI option values: each rejects bad input with a message naming the flag. */
import { InvalidArgumentError } from 'commander';

export function intOption(name: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got '${value}'`);
    return n;
  };
}

export function floatOption(name: string, min = -Infinity, max = Infinity) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max)
      throw new InvalidArgumentError(
        `${name} must be a number in [${min}, ${max}], got '${value}'`,
      );
    return n;
  };
}

export function choiceOption<T extends string>(name: string, choices: readonly T[]) {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value))
      throw new InvalidArgumentError(
        `${name} must be one of ${choices.join(', ')}, got '${value}'`,
      );
    return value as T;
  };
}

/** The output of a command that takes it as an argument or as -o/--output (one of them). */
export function oneOutput(argument: string | undefined, flag: string | undefined): string {
  if (argument !== undefined && flag !== undefined && argument !== flag)
    throw new Error(`give the output once: '${argument}' or -o '${flag}'`);
  const out = argument ?? flag;
  if (out === undefined) throw new Error('give the output with -o/--output');
  return out;
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export { formatBytes, formatCount } from '../tensor/units.js';

/** Edit distance (insertions, deletions, substitutions, adjacent swaps). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The candidate nearest to `word` when it is plausibly a misspelling of it (else null). */
export function closest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  const lower = word.toLowerCase();
  for (const c of candidates) {
    const cl = c.toLowerCase();
    const dist =
      cl.startsWith(lower) || lower.startsWith(cl)
        ? Math.min(1, editDistance(lower, cl))
        : editDistance(lower, cl);
    if (dist < bestDistance) {
      best = c;
      bestDistance = dist;
    }
  }
  return best !== null && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : null;
}
