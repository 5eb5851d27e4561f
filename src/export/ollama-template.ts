/**
 * An Ollama Modelfile's TEMPLATE (Go text/template over `.System` and `.Messages`), its stop
 * parameters and default SYSTEM prompt, derived from a model's Jinja chat template by rendering it.
 *
 * Rather than recognising template sources by name, the Jinja template is rendered on a few probe
 * conversations whose contents are unique marker words; the text around the markers gives each
 * role's wrapping (what comes before and after a user / assistant / system message), the
 * generation prompt, whatever the template prints when no system message is given (a default
 * system prompt, or a fixed header such as Llama 3.1's dates), and whether the system message is a
 * turn of its own (ChatML, Llama 3, Phi-3, Zephyr) or folded into the first user turn (Mistral,
 * Gemma). The derived pieces are then checked by rendering longer conversations both ways; a
 * template that does not fit this shape is refused with the conversation that differs.
 *
 * The Go template renders what the Jinja template renders with add_generation_prompt, minus a
 * leading BOS token: llama.cpp (and so Ollama) adds BOS itself when the GGUF says add_bos_token.
 */
import { ChatTemplate, type ChatMessage } from '../data/chat-template.js';

export interface OllamaChatFormat {
  /** The TEMPLATE text (Go text/template). */
  readonly template: string;
  /** PARAMETER stop values: the end-of-turn marker and the next user turn's header. */
  readonly stop: readonly string[];
  /** SYSTEM: the system prompt the Jinja template uses when a conversation has none (null if none). */
  readonly system: string | null;
}

/** The pieces one turn-structured chat template is made of. */
export interface ChatPieces {
  /** Printed first when the conversation has no system message (after BOS is dropped). */
  readonly head: string;
  /** The system message: its own turn (before/after), or text put before the first user message followed by `fold`. */
  readonly system:
    | { readonly kind: 'turn'; readonly before: string; readonly after: string }
    | { readonly kind: 'fold'; readonly separator: string };
  readonly userBefore: string;
  readonly userAfter: string;
  readonly assistantBefore: string;
  readonly assistantAfter: string;
  /** The generation prompt (what add_generation_prompt appends). */
  readonly generation: string;
}

const S = 'qlorasysmarker';
const U1 = 'qlorauseronemarker';
const A1 = 'qloraassistantmarker';
const U2 = 'qlorausertwomarker';

const BOS_MARK = '\u0002';
const EOS_MARK = '\u0003';

export class OllamaTemplateError extends Error {}

/** Splits `text` at each marker in order: [before the first, between, ..., after the last]. */
function splitAt(text: string, markers: readonly string[], what: string): string[] {
  const parts: string[] = [];
  let from = 0;
  for (const m of markers) {
    const at = text.indexOf(m, from);
    if (at < 0 || text.indexOf(m, at + m.length) >= 0)
      throw new OllamaTemplateError(
        `rendering ${what}, the message text "${m}" ${at < 0 ? 'is missing or out of order' : 'appears twice'}: the template does not print each message once, in order`,
      );
    parts.push(text.slice(from, at));
    from = at + m.length;
  }
  parts.push(text.slice(from));
  return parts;
}

function commonPrefix(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return a.slice(0, i);
}

/** Derives the pieces of a chat template by rendering probe conversations (see the module comment). */
export function chatPieces(
  source: string,
  tokens: { bosToken: string | null; eosToken: string | null },
): ChatPieces {
  // BOS and EOS render as one-character stand-ins, so that where a piece ends is never blurred by
  // the tokens' own text (Phi-3's "<|end|>\n</s>" and "<|end|>\n<|assistant|>" share a "<").
  const template = new ChatTemplate(source, { bosToken: BOS_MARK, eosToken: EOS_MARK });
  const render = (messages: ChatMessage[], generation: boolean, what: string): string => {
    let text: string;
    try {
      text = template.render(messages, generation);
    } catch (e) {
      throw new OllamaTemplateError(`rendering ${what}: ${(e as Error).message}`);
    }
    return text.startsWith(BOS_MARK) ? text.slice(BOS_MARK.length) : text;
  };
  const real = (s: string): string =>
    s.replaceAll(BOS_MARK, tokens.bosToken ?? '').replaceAll(EOS_MARK, tokens.eosToken ?? '');
  const user = (content: string): ChatMessage => ({ role: 'user', content });
  const assistant = (content: string): ChatMessage => ({ role: 'assistant', content });

  // One user message, with and without the generation prompt.
  const [beforeU, afterUGen] = splitAt(
    render([user(U1)], true, 'one user message'),
    [U1],
    'one user message',
  ) as [string, string];
  const [, afterU] = splitAt(
    render([user(U1)], false, 'one user message'),
    [U1],
    'one user message',
  ) as [string, string];
  // What follows a user message in both renderings is its end; the rest of the prompted one is the
  // generation prompt (Phi-3 adds eos_token only to the unprompted one, so take the common part).
  const userAfter = commonPrefix(afterU, afterUGen);
  const generation = afterUGen.slice(userAfter.length);
  // user, assistant, user: the assistant's wrapping and the user header in the middle of a chat.
  const what3 = 'user, assistant, user';
  const [p0, p1, p2, p3] = splitAt(
    render([user(U1), assistant(A1), user(U2)], true, what3),
    [U1, A1, U2],
    what3,
  ) as [string, string, string, string];
  if (p0 !== beforeU || p3 !== afterUGen)
    throw new OllamaTemplateError(
      `the first user turn renders differently in a longer chat (${JSON.stringify(p0)} vs ${JSON.stringify(beforeU)})`,
    );
  if (!p1.startsWith(userAfter))
    throw new OllamaTemplateError(
      `a user turn's end differs when an assistant turn follows (${JSON.stringify(p1)})`,
    );
  const assistantBefore = p1.slice(userAfter.length);
  const what2 = 'user, assistant';
  const [, , afterA] = splitAt(
    render([user(U1), assistant(A1)], false, what2),
    [U1, A1],
    what2,
  ) as [string, string, string];
  const assistantAfter = commonPrefix(afterA, p2);
  const userBefore = p2.slice(assistantAfter.length);
  if (!beforeU.endsWith(userBefore))
    throw new OllamaTemplateError(
      `the first user turn's header ${JSON.stringify(beforeU)} does not end like the later ones (${JSON.stringify(userBefore)})`,
    );
  const head = beforeU.slice(0, beforeU.length - userBefore.length);

  // A system message: a turn of its own, or folded into the first user message.
  const whatS = 'system, user';
  const [s0, s1, s2] = splitAt(
    render([{ role: 'system', content: S }, user(U1)], true, whatS),
    [S, U1],
    whatS,
  ) as [string, string, string];
  if (s2 !== afterUGen)
    throw new OllamaTemplateError(`a user turn ends differently after a system message`);
  let system: ChatPieces['system'];
  if (s0.endsWith(userBefore) && s0.slice(0, s0.length - userBefore.length) === head) {
    system = { kind: 'fold', separator: s1 };
  } else if (s1.endsWith(userBefore)) {
    system = { kind: 'turn', before: s0, after: s1.slice(0, s1.length - userBefore.length) };
  } else {
    throw new OllamaTemplateError(
      `cannot tell where the system message's turn ends (${JSON.stringify(s1)} does not end with the user header ${JSON.stringify(userBefore)})`,
    );
  }
  return {
    head: real(head),
    system:
      system.kind === 'fold'
        ? { kind: 'fold', separator: real(system.separator) }
        : { kind: 'turn', before: real(system.before), after: real(system.after) },
    userBefore: real(userBefore),
    userAfter: real(userAfter),
    assistantBefore: real(assistantBefore),
    assistantAfter: real(assistantAfter),
    generation: real(generation),
  };
}

/** Renders the pieces the way the Go template does (used to check them against the Jinja template). */
export function renderPieces(p: ChatPieces, messages: readonly ChatMessage[]): string {
  const systems = messages.filter((m) => m.role === 'system').map((m) => m.content);
  // A folded system message comes after the head; a system turn replaces it.
  let out = systems.length === 0 || p.system.kind === 'fold' ? p.head : '';
  let pendingSystem = p.system.kind === 'fold' ? systems.join('\n\n') : '';
  for (const m of messages) {
    if (m.role === 'system' && p.system.kind === 'turn')
      out += p.system.before + m.content + p.system.after;
    else if (m.role === 'user') {
      out += p.userBefore;
      if (pendingSystem && p.system.kind === 'fold') {
        out += pendingSystem + p.system.separator;
        pendingSystem = '';
      }
      out += m.content + p.userAfter;
    } else if (m.role === 'assistant') out += p.assistantBefore + m.content + p.assistantAfter;
  }
  return out + p.generation;
}

/** Go template text for the pieces: literal text must not hold template delimiters. */
function goTemplate(p: ChatPieces): string {
  const lit = (s: string): string => {
    if (s.includes('{{') || s.includes('}}'))
      throw new OllamaTemplateError(
        `the template's text ${JSON.stringify(s)} holds "{{" or "}}", which Go templates cannot print literally here`,
      );
    return s;
  };
  const head = !p.head
    ? ''
    : p.system.kind === 'fold'
      ? lit(p.head)
      : `{{ if not .System }}${lit(p.head)}{{ end }}`;
  const user =
    p.system.kind === 'fold'
      ? `${lit(p.userBefore)}{{ if $system }}{{ $system }}${lit(p.system.separator)}{{ $system = "" }}{{ end }}{{ .Content }}${lit(p.userAfter)}`
      : `${lit(p.userBefore)}{{ .Content }}${lit(p.userAfter)}`;
  const systemBranch =
    p.system.kind === 'turn'
      ? `{{ if eq .Role "system" }}${lit(p.system.before)}{{ .Content }}${lit(p.system.after)}{{ else if eq .Role "user" }}`
      : '{{ if eq .Role "user" }}';
  return (
    (p.system.kind === 'fold' ? '{{ $system := .System }}' : '') +
    head +
    '{{ range .Messages }}' +
    systemBranch +
    user +
    `{{ else if eq .Role "assistant" }}${lit(p.assistantBefore)}{{ .Content }}${lit(p.assistantAfter)}{{ end }}` +
    '{{ end }}' +
    lit(p.generation)
  );
}

/** The default system prompt: `head` when it is a system turn around some text. */
function defaultSystem(p: ChatPieces): string | null {
  if (p.system.kind !== 'turn' || !p.head) return null;
  const { before, after } = p.system;
  if (
    p.head.length > before.length + after.length &&
    p.head.startsWith(before) &&
    p.head.endsWith(after)
  )
    return p.head.slice(before.length, p.head.length - after.length);
  return null;
}

/** Conversations the derived pieces must render exactly as the Jinja template does. */
const CHECKS: readonly (readonly ChatMessage[])[] = [
  [{ role: 'user', content: 'Hi there' }],
  [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Name a colour.' },
    { role: 'assistant', content: 'Blue.' },
    { role: 'user', content: 'Another one?' },
  ],
  [
    { role: 'user', content: 'One' },
    { role: 'assistant', content: 'Two' },
    { role: 'user', content: 'Three' },
    { role: 'assistant', content: 'Four' },
    { role: 'user', content: 'Five' },
  ],
];

/**
 * The Ollama TEMPLATE, stop parameters and SYSTEM for a Jinja chat template (see the module comment).
 * Throws OllamaTemplateError saying what did not fit.
 */
export function ollamaChatFormat(
  source: string,
  tokens: { bosToken: string | null; eosToken: string | null },
): OllamaChatFormat {
  const template = new ChatTemplate(source, tokens);
  const pieces = chatPieces(source, tokens);
  for (const messages of CHECKS) {
    let want = template.render(messages, true);
    if (tokens.bosToken && want.startsWith(tokens.bosToken))
      want = want.slice(tokens.bosToken.length);
    const got = renderPieces(pieces, messages);
    if (got !== want)
      throw new OllamaTemplateError(
        `the derived template renders ${messages.map((m) => m.role).join(', ')} as ${JSON.stringify(got)}, the chat template as ${JSON.stringify(want)}`,
      );
  }
  const system = defaultSystem(pieces);
  const stop = [
    ...new Set([pieces.assistantAfter, pieces.userBefore].map((s) => s.trim().split('\n')[0]!)),
  ].filter((s) => s !== '');
  const withDefault = system !== null ? { ...pieces, head: '' } : pieces;
  return { template: goTemplate(withDefault), stop, system };
}

/** A Modelfile string literal: Ollama reads """...""" verbatim, so the text must not hold """. */
function quoted(text: string, what: string): string {
  if (text.includes('"""'))
    throw new OllamaTemplateError(`the ${what} holds """, which a Modelfile cannot quote`);
  return `"""${text}"""`;
}

/** The Modelfile text: FROM the GGUF beside it, and the chat format when there is one. */
export function modelfileText(ggufFile: string, format: OllamaChatFormat | null): string {
  const lines = [`FROM ./${ggufFile}`];
  if (format) {
    lines.push(`TEMPLATE ${quoted(format.template, 'template')}`);
    // Ollama strips the quotes and reads the rest verbatim (no escapes).
    for (const s of format.stop) {
      if (s.includes('"')) throw new OllamaTemplateError(`the stop text ${s} holds a quote`);
      lines.push(`PARAMETER stop "${s}"`);
    }
    if (format.system !== null) lines.push(`SYSTEM ${quoted(format.system, 'system prompt')}`);
  }
  return `${lines.join('\n')}\n`;
}
