/**
 * Finds where and why JSON.parse rejected a text. V8's messages only sometimes carry a position,
 * so on the (rare) failure path we re-scan the text with a small validator that always reports
 * the offset of the first offending character. Iterative (explicit stack) so that hostile nesting
 * depth cannot overflow the call stack.
 */

export interface JsonSyntaxProblem {
  /** 0-based offset into the text (== text.length when the input ends too early). */
  readonly offset: number;
  readonly message: string;
}

/** 1-based line and column of a 0-based offset. Columns count UTF-16 code units, like editors mostly do. */
export function lineColumnOf(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

function describeChar(text: string, i: number): string {
  if (i >= text.length) return 'end of input';
  const c = text[i]!;
  const code = c.charCodeAt(0);
  if (code < 0x20 || code === 0x7f)
    return `control character U+${code.toString(16).padStart(4, '0').toUpperCase()}`;
  return `'${c}'`;
}

/** Returns the first syntax problem in `text`, or null when it is valid JSON. */
export function findJsonSyntaxProblem(text: string): JsonSyntaxProblem | null {
  let i = 0;
  const n = text.length;
  // Stack of open containers: 'a' array, 'o' object.
  const stack: ('a' | 'o')[] = [];
  const skipWs = () => {
    while (i < n && WS.has(text.charCodeAt(i))) i++;
  };
  const fail = (message: string): JsonSyntaxProblem => ({ offset: i, message });

  const scanString = (): JsonSyntaxProblem | null => {
    i++; // opening quote
    while (i < n) {
      const code = text.charCodeAt(i);
      if (code === 0x22) {
        i++;
        return null;
      }
      if (code < 0x20)
        return fail(`${describeChar(text, i)} inside a string (write it escaped, e.g. \\n)`);
      if (code === 0x5c) {
        const e = text[i + 1];
        if (e === undefined) {
          i++;
          return fail('unterminated string');
        }
        if ('"\\/bfnrt'.includes(e)) i += 2;
        else if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6)))
            return fail('bad \\u escape in string');
          i += 6;
        } else return fail(`bad escape '\\${e}' in string`);
        continue;
      }
      i++;
    }
    return fail('unterminated string');
  };

  const scanNumber = (): JsonSyntaxProblem | null => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0] === '-' || m[0].length === 0) return fail(`unexpected ${describeChar(text, i)}`);
    i += m[0].length;
    return null;
  };

  // A state machine rather than recursion: containers push onto `stack`.
  let expect: 'value' | 'key' | 'after' = 'value';
  for (;;) {
    if (expect === 'value') {
      skipWs();
      if (i >= n) return fail('unexpected end of input, expected a value');
      const c = text[i]!;
      if (c === '{' || c === '[') {
        i++;
        skipWs();
        if (text[i] === (c === '{' ? '}' : ']')) {
          i++;
          expect = 'after';
        } else {
          stack.push(c === '{' ? 'o' : 'a');
          expect = c === '{' ? 'key' : 'value';
        }
        continue;
      }
      let p: JsonSyntaxProblem | null = null;
      if (c === '"') p = scanString();
      else if (c === '-' || (c >= '0' && c <= '9')) p = scanNumber();
      else {
        const word = ['true', 'false', 'null'].find((w) => text.startsWith(w, i));
        if (!word) return fail(`unexpected ${describeChar(text, i)}, expected a value`);
        i += word.length;
      }
      if (p) return p;
      expect = 'after';
    } else if (expect === 'key') {
      skipWs();
      if (text[i] !== '"')
        return fail(
          `unexpected ${describeChar(text, i)}, expected a property name in double quotes`,
        );
      const p = scanString();
      if (p) return p;
      skipWs();
      if (text[i] !== ':')
        return fail(`unexpected ${describeChar(text, i)}, expected ':' after property name`);
      i++;
      expect = 'value';
    } else {
      if (stack.length === 0) break;
      skipWs();
      const top = stack[stack.length - 1]!;
      const close = top === 'o' ? '}' : ']';
      if (text[i] === ',') {
        i++;
        expect = top === 'o' ? 'key' : 'value';
      } else if (text[i] === close) {
        i++;
        stack.pop();
      } else {
        return fail(`unexpected ${describeChar(text, i)}, expected ',' or '${close}'`);
      }
    }
  }
  skipWs();
  if (i < n) return fail(`unexpected ${describeChar(text, i)} after the end of the JSON value`);
  return null;
}
