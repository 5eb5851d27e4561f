/**
 * Renders a parsed Jinja template under limits. A chat template comes with the model files and is
 * untrusted code: @huggingface/jinja's sandbox has no route to JS globals, but nothing bounds its
 * work, so `{% for i in range(1000000000) %}` aborts Node and a recursive macro runs for minutes.
 *
 * The interpreter is instrumented rather than run elsewhere: every evaluated node counts a step,
 * the clock is checked every 1024 steps, `range()` refuses to build huge lists, and the strings and
 * lists that nodes produce are counted against an output budget — so a hostile template fails in
 * well under a second with a TemplateLimitError, while real templates (a few thousand steps per
 * conversation) render synchronously at full speed, with no worker round trip per row.
 */
import { Environment, Interpreter, type Template } from '@huggingface/jinja';

export interface TemplateLimits {
  /**
   * Evaluated nodes per render, beyond 64 per item of input (messages, their fields, tools); a list
   * a node produces counts one step per element, since iterating it costs that much. Real chat
   * templates take about 40 steps per message.
   */
  readonly maxSteps: number;
  /** Longest list range() may build and any node may produce. */
  readonly maxItems: number;
  /** Characters of strings produced per render (every node's string counts), beyond 32 × the input's own characters. */
  readonly maxChars: number;
  /** Wall-clock time per render, in milliseconds (a backstop behind the step budget). */
  readonly maxMillis: number;
}

export const DEFAULT_TEMPLATE_LIMITS: TemplateLimits = {
  maxSteps: 300_000,
  maxItems: 100_000,
  maxChars: 64 << 20,
  maxMillis: 10_000,
};

/** A template ran past a limit: a property of the template, so it stops loading rather than skipping a row. */
export class TemplateLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemplateLimitError';
  }
}

// The package's .d.ts imports "./runtime" without an extension, which NodeNext resolution cannot
// follow, so its classes arrive untyped; these are the members used here.
interface RuntimeValue {
  readonly type: string;
  readonly value: unknown;
}
interface JinjaEnvironment {
  set(name: string, value: unknown): unknown;
}
type Node = unknown;
const InterpreterBase = Interpreter as unknown as new (env: JinjaEnvironment) => {
  run(program: unknown): RuntimeValue;
  evaluate(statement: Node, environment: JinjaEnvironment): RuntimeValue;
};

class BudgetInterpreter extends InterpreterBase {
  private steps = 0;
  private chars = 0;
  private readonly deadline: number;

  constructor(
    env: JinjaEnvironment,
    private readonly limits: TemplateLimits,
    private readonly stepBudget: number,
    private readonly charBudget: number,
  ) {
    super(env);
    this.deadline = performance.now() + limits.maxMillis;
  }

  override evaluate(statement: Node, environment: JinjaEnvironment): RuntimeValue {
    if (++this.steps > this.stepBudget) this.tooManySteps();
    if ((this.steps & 1023) === 0 && performance.now() > this.deadline) {
      throw new TemplateLimitError(
        `the template ran longer than ${this.limits.maxMillis / 1000} s`,
      );
    }
    const value = super.evaluate(statement, environment);
    const v = value;
    if (v.type === 'StringValue') {
      this.chars += (v.value as string).length;
      if (this.chars > this.charBudget)
        throw new TemplateLimitError(
          `the template produced more than ${this.charBudget} characters of text`,
        );
    } else if (v.type === 'ArrayValue' || v.type === 'TupleValue') {
      const n = (v.value as unknown[]).length;
      if (n > this.limits.maxItems)
        throw new TemplateLimitError(
          `the template built a list of ${n} items (more than ${this.limits.maxItems})`,
        );
      // A for loop walks its list once before evaluating any body (building a scope per item).
      this.steps += n;
      if (this.steps > this.stepBudget) this.tooManySteps();
    }
    return value;
  }

  private tooManySteps(): never {
    throw new TemplateLimitError(
      `the template ran more than ${this.stepBudget} steps (a loop or recursion too large for a chat template)`,
    );
  }
}

/** Characters of the strings, and number of values, in a template's input variables (messages, tools). */
function inputSize(
  value: unknown,
  size = { chars: 0, items: 0 },
  depth = 0,
): { chars: number; items: number } {
  size.items++;
  if (typeof value === 'string') size.chars += value.length;
  else if (depth <= 32 && value !== null && typeof value === 'object') {
    for (const v of Array.isArray(value) ? value : Object.values(value))
      inputSize(v, size, depth + 1);
  }
  return size;
}

/** `range()` as Python's, refusing lists longer than the limit before building them. */
function boundedRange(maxItems: number) {
  return (start: unknown, stop?: unknown, step: unknown = 1): number[] => {
    let a = start;
    let b = stop;
    if (b === undefined) {
      b = a;
      a = 0;
    }
    if (
      typeof a !== 'number' ||
      typeof b !== 'number' ||
      typeof step !== 'number' ||
      ![a, b, step].every(Number.isFinite)
    ) {
      throw new Error('range() takes integer arguments');
    }
    if (step === 0) throw new Error('range() step must not be zero');
    const count = Math.max(0, Math.ceil((b - a) / step));
    if (count > maxItems)
      throw new TemplateLimitError(
        `the template asked for range() of ${count} items (more than ${maxItems})`,
      );
    const out: number[] = new Array(count);
    for (let i = 0; i < count; i++) out[i] = a + i * step;
    return out;
  };
}

/**
 * Renders `template` with `variables` under `limits`. The globals are those Template.render sets
 * (true/false/none, raise_exception, range, strftime_now), with range bounded.
 */
export function renderWithLimits(
  template: Template,
  variables: Record<string, unknown>,
  strftimeNow: (format: string) => string,
  limits: TemplateLimits = DEFAULT_TEMPLATE_LIMITS,
): string {
  const env = new Environment() as JinjaEnvironment;
  env.set('false', false);
  env.set('true', true);
  env.set('none', null);
  env.set('raise_exception', (message: unknown) => {
    throw new Error(String(message));
  });
  env.set('range', boundedRange(limits.maxItems));
  env.set('strftime_now', strftimeNow);
  env.set('True', true);
  env.set('False', false);
  env.set('None', null);
  for (const [key, value] of Object.entries(variables)) env.set(key, value);
  const input = inputSize(variables);
  const result = new BudgetInterpreter(
    env,
    limits,
    limits.maxSteps + 64 * input.items,
    limits.maxChars + 32 * input.chars,
  ).run(template.parsed);
  return String(result.value);
}
