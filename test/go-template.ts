// A small interpreter for the part of Go's text/template that Ollama Modelfile TEMPLATEs use here:
// text, {{ .Field }}, {{ $v }}, {{ $v := pipe }}, {{ $v = pipe }}, if / else if / else / end,
// range over a list, and the functions not, eq, and, or; {{- and -}} trim whitespace as in Go.
// Unknown syntax throws, so a template outside this subset fails the test instead of passing.

type Value = unknown;
type Node =
  | { kind: 'text'; text: string }
  | { kind: 'print'; expr: string }
  | { kind: 'set'; name: string; expr: string; declare: boolean }
  | { kind: 'if'; branches: { cond: string | null; body: Node[] }[] }
  | { kind: 'range'; expr: string; body: Node[] };

function lex(src: string): ({ text: string } | { action: string })[] {
  const out: ({ text: string } | { action: string })[] = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    if (open < 0) {
      out.push({ text: src.slice(i) });
      break;
    }
    let text = src.slice(i, open);
    const close = src.indexOf('}}', open);
    if (close < 0) throw new Error(`unclosed action at ${open}`);
    let action = src.slice(open + 2, close);
    let next = close + 2;
    if (action.startsWith('- ')) {
      text = text.replace(/\s+$/, '');
      action = action.slice(1);
    }
    if (action.endsWith(' -')) {
      action = action.slice(0, -1);
      const rest = src.slice(next);
      next += rest.length - rest.replace(/^\s+/, '').length;
    }
    if (text) out.push({ text });
    out.push({ action: action.trim() });
    i = next;
  }
  return out;
}

function parse(src: string): Node[] {
  const tokens = lex(src);
  let pos = 0;
  const block = (stops: string[]): { body: Node[]; stop: string } => {
    const body: Node[] = [];
    while (pos < tokens.length) {
      const t = tokens[pos++]!;
      if ('text' in t) {
        body.push({ kind: 'text', text: t.text });
        continue;
      }
      const a = t.action;
      const word = a.split(/\s+/)[0]!;
      if (stops.includes(word)) return { body, stop: a };
      if (word === 'if') {
        const branches: { cond: string | null; body: Node[] }[] = [];
        let cond: string | null = a.slice(2).trim();
        for (;;) {
          const r = block(['else', 'end']);
          branches.push({ cond, body: r.body });
          if (r.stop === 'end') break;
          const rest = r.stop.slice(4).trim();
          cond = rest.startsWith('if ') ? rest.slice(3).trim() : rest === '' ? null : rest;
          if (cond !== null && !rest.startsWith('if ')) throw new Error(`bad else: ${r.stop}`);
        }
        body.push({ kind: 'if', branches });
      } else if (word === 'range') {
        const r = block(['end']);
        body.push({ kind: 'range', expr: a.slice(5).trim(), body: r.body });
      } else {
        const set = /^(\$\w+)\s*(:?=)\s*(.+)$/.exec(a);
        if (set) body.push({ kind: 'set', name: set[1]!, expr: set[3]!, declare: set[2] === ':=' });
        else body.push({ kind: 'print', expr: a });
      }
    }
    if (stops.length) throw new Error(`missing {{ ${stops.join(' / ')} }}`);
    return { body, stop: '' };
  };
  return block([]).body;
}

function words(expr: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|\(|\)|[^\s()]+/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(expr))) out.push(m[0]);
  return out;
}

function truthy(v: Value): boolean {
  if (Array.isArray(v)) return v.length > 0;
  return v !== '' && v !== false && v !== null && v !== undefined && v !== 0;
}

function evaluate(
  expr: string,
  dot: Record<string, Value>,
  root: Record<string, Value>,
  vars: Map<string, Value>,
): Value {
  const ws = words(expr);
  let i = 0;
  const operand = (): Value => {
    const w = ws[i++];
    if (w === undefined) throw new Error(`incomplete expression: ${expr}`);
    if (w === '(') {
      const v = call();
      if (ws[i++] !== ')') throw new Error(`missing ) in ${expr}`);
      return v;
    }
    if (w.startsWith('"')) return JSON.parse(w);
    if (w.startsWith('$.')) return root[w.slice(2)];
    if (w.startsWith('.')) return dot[w.slice(1)];
    if (w.startsWith('$')) {
      if (!vars.has(w)) throw new Error(`undefined variable ${w}`);
      return vars.get(w);
    }
    throw new Error(`unsupported operand ${w} in ${expr}`);
  };
  const call = (): Value => {
    const w = ws[i];
    if (w === 'not') {
      i++;
      return !truthy(operand());
    }
    if (w === 'eq') {
      i++;
      const a = operand();
      return a === operand();
    }
    if (w === 'and' || w === 'or') {
      i++;
      const a = operand();
      const b = operand();
      return w === 'and' ? (truthy(a) ? b : a) : truthy(a) ? a : b;
    }
    return operand();
  };
  const v = call();
  if (i !== ws.length) throw new Error(`unsupported expression: ${expr}`);
  return v;
}

/** Renders `src` with `data` as Go's text/template would (for the subset above). */
export function renderGoTemplate(src: string, data: Record<string, Value>): string {
  const vars = new Map<string, Value>();
  let out = '';
  const run = (nodes: Node[], dot: Record<string, Value>): void => {
    for (const n of nodes) {
      if (n.kind === 'text') out += n.text;
      else if (n.kind === 'print') out += String(evaluate(n.expr, dot, data, vars) ?? '');
      else if (n.kind === 'set') {
        if (!n.declare && !vars.has(n.name)) throw new Error(`assignment to undeclared ${n.name}`);
        vars.set(n.name, evaluate(n.expr, dot, data, vars));
      } else if (n.kind === 'if') {
        const hit = n.branches.find(
          (b) => b.cond === null || truthy(evaluate(b.cond, dot, data, vars)),
        );
        if (hit) run(hit.body, dot);
      } else {
        const list = evaluate(n.expr, dot, data, vars);
        if (!Array.isArray(list)) throw new Error(`range over a non-list: ${n.expr}`);
        for (const item of list) run(n.body, item as Record<string, Value>);
      }
    }
  };
  run(parse(src), data);
  return out;
}
