import { alpacaPrompt } from './alpaca.js';
import {
  ChatRenderError,
  ChatTemplateLimitError,
  type ChatMessage,
  type ChatTemplate,
} from './chat-template.js';
import { applyColumnMapping, type ColumnMapping } from './columns.js';
import {
  DatasetError,
  RowError,
  UnknownFormatError,
  preview,
  type SourceLocation,
} from './errors.js';
import type { PromptTemplate } from './prompt-template.js';
import { TEXT_PIECE, type TextRowValue } from './read-text.js';

/** The row shapes TRL and MLX use. */
export type RowFormat = 'text' | 'completion' | 'alpaca' | 'chat';
export const ROW_FORMATS: readonly RowFormat[] = ['text', 'completion', 'alpaca', 'chat'];

/**
 * A row rendered to text, before tokenization. Loss regions are given as two prefixes of `text`
 * rather than character offsets: the tokenizer maps "the tokens of this prefix" onto the tokens of
 * the whole, which stays exact even where a token would straddle a character boundary.
 */
export interface RenderedExample {
  readonly text: string;
  /** Tokens after `from` up to the end of `to` carry loss (both are prefixes of text). */
  readonly loss: readonly { readonly from: string; readonly to: string }[];
  /** Whether to prepend the tokenizer's BOS (when its config asks for one). */
  readonly bos: boolean;
  /** Whether to append EOS (as a loss token when the text ends in loss). */
  readonly eos: boolean;
  readonly location: SourceLocation;
  /** Plain-text pieces of one long document share a document number; only the last gets EOS. */
  readonly document?: { readonly id: number; readonly last: boolean };
}

export interface FormatOptions {
  /** Row format; 'auto' (default) detects it from the first row's fields. */
  readonly format?: RowFormat | 'auto';
  readonly columns?: ColumnMapping;
  /** Builds the prompt from {column} placeholders; the completion comes from the `completion` field. */
  readonly promptTemplate?: PromptTemplate;
  /** Needed for chat rows: the model's template (or an override). Called only once chat rows are seen. */
  readonly chatTemplate?: () => ChatTemplate | null;
  /** Put loss on prompts / user turns too (default: completion and assistant turns only). */
  readonly trainOnPrompt?: boolean;
}

/** A row's prompt for inference, and the answer it carries (null when none). */
export interface PromptRow {
  readonly prompt: string;
  readonly reference: string | null;
  /** Whether to prepend the tokenizer's BOS (when its config asks for one), as training did. */
  readonly bos: boolean;
}

export const CHAT_ROLES = ['system', 'user', 'assistant', 'tool', 'ipython'] as const;
const SHAREGPT_ROLES: Record<string, string> = {
  human: 'user',
  user: 'user',
  gpt: 'assistant',
  assistant: 'assistant',
  system: 'system',
  tool: 'tool',
};

/** Turns raw rows into RenderedExamples under one format, fixed from the first row unless given. */
export class RowRenderer {
  private detected: RowFormat | null;
  /** Which field holds the completion: 'completion', or 'text' for MLX's {prompt, text}. */
  private completionField = 'completion';
  private chatTemplate: ChatTemplate | null | undefined;

  constructor(private readonly options: FormatOptions) {
    this.detected = options.format && options.format !== 'auto' ? options.format : null;
    if (options.promptTemplate) {
      if (this.detected !== null && this.detected !== 'completion') {
        throw new DatasetError(
          `a prompt template makes prompt/completion rows; it cannot be combined with --format ${this.detected}`,
        );
      }
      this.detected = 'completion';
    }
  }

  /** The format in use (null until the first row fixed it). */
  get format(): RowFormat | null {
    return this.detected;
  }

  render(value: unknown, location: SourceLocation): RenderedExample {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new RowError(
        `a row must be an object with named fields, got ${describeType(value)} ${preview(value, 40)}`,
        location,
      );
    }
    let row = value as Record<string, unknown>;
    if (this.options.columns) {
      const mapped = applyColumnMapping(row, this.options.columns);
      if (mapped.missing !== undefined) {
        throw new RowError(
          `has no column '${mapped.missing}' (it has: ${fieldList(row)})`,
          location,
        );
      }
      row = mapped.row;
    }
    const format = (this.detected ??= this.detect(row, location));
    switch (format) {
      case 'text':
        return this.renderText(row, location);
      case 'completion':
        return this.renderCompletion(row, location);
      case 'alpaca':
        return this.renderAlpaca(row, location);
      case 'chat':
        return this.renderChat(row, location);
    }
  }

  /**
   * A row's prompt as training rendered it (the text before the loss), for inference over a dataset,
   * with the reference answer when the row has one: the completion, Alpaca's output, or a chat's
   * final assistant turn (the chat before it is rendered with the generation prompt). A row need
   * not carry the answer, so mapped columns it lacks are skipped rather than an error.
   */
  renderPrompt(value: unknown, location: SourceLocation): PromptRow {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new RowError(
        `a row must be an object with named fields, got ${describeType(value)} ${preview(value, 40)}`,
        location,
      );
    }
    let row = { ...(value as Record<string, unknown>) };
    for (const [target, source] of Object.entries(this.options.columns ?? {})) {
      if (Object.prototype.hasOwnProperty.call(row, source)) row[target] = row[source];
    }
    const has = (k: string) => Object.prototype.hasOwnProperty.call(row, k);
    const reference = (field: string): string | null =>
      typeof row[field] === 'string' ? (row[field] as string) : null;
    if (this.detected === null) {
      // A row without its answer still tells its format by the fields it has.
      if (has('messages') || has('conversations')) this.detected = 'chat';
      else if (has('instruction')) this.detected = 'alpaca';
      else if (has('prompt')) this.detected = 'completion';
      else this.detected = this.detect(row, location);
    }
    switch (this.detected) {
      case 'text':
        throw new RowError(
          'text rows have no prompt to complete: give prompt/completion, Alpaca or chat rows (or map columns with --columns)',
          location,
        );
      case 'completion': {
        const rendered = this.options.promptTemplate
          ? this.options.promptTemplate.render(row)
          : null;
        if (rendered && 'unknownColumn' in rendered)
          throw new RowError(
            `the prompt template uses {${rendered.unknownColumn}} but the row has no such column (it has: ${fieldList(row)})`,
            location,
          );
        if (rendered && 'badValue' in rendered)
          throw new RowError(
            `the prompt template uses {${rendered.badValue}}, which is ${describeType(row[rendered.badValue])}, not text`,
            location,
          );
        const prompt = rendered ? rendered.text : requireString(row, 'prompt', location);
        return {
          prompt,
          reference: reference(has('completion') ? 'completion' : this.completionField),
          bos: true,
        };
      }
      case 'alpaca': {
        const instruction = requireString(row, 'instruction', location);
        const input =
          row.input === undefined || row.input === null
            ? ''
            : requireString(row, 'input', location);
        return {
          prompt: alpacaPrompt(instruction, input),
          reference: reference('output'),
          bos: true,
        };
      }
      case 'chat': {
        const template = (this.chatTemplate ??= this.options.chatTemplate?.() ?? null);
        if (!template)
          throw new DatasetError(
            'chat rows need a chat template, and this model has none: pass one with --chat-template FILE|NAME',
            location,
          );
        let messages: ChatMessage[];
        if (hasMessages(row)) messages = readMessages(row, location);
        else {
          // An Alpaca or prompt/completion row as a chat; without its answer, only the user turn.
          if (!has('output') && !has('completion'))
            row = { ...row, [has('instruction') ? 'output' : 'completion']: '' };
          messages = rowAsChat(row, location);
        }
        const last = messages[messages.length - 1]!;
        const answer = last.role === 'assistant' ? last.content : null;
        const history = last.role === 'assistant' ? messages.slice(0, -1) : messages;
        if (history.length === 0)
          throw new RowError(
            "the chat has no turn before the assistant's to prompt with",
            location,
          );
        try {
          return {
            prompt: template.render(history, true),
            reference: answer === '' ? null : answer,
            bos: true,
          };
        } catch (err) {
          if (err instanceof ChatRenderError) throw new RowError(err.message, location);
          throw err;
        }
      }
    }
  }

  private detect(row: Record<string, unknown>, location: SourceLocation): RowFormat {
    const has = (k: string) => Object.prototype.hasOwnProperty.call(row, k);
    if (has('messages') || has('conversations')) return 'chat';
    if (has('instruction') && has('output')) return 'alpaca';
    if (has('prompt') && has('completion')) return 'completion';
    if (has('prompt') && has('text')) {
      this.completionField = 'text';
      return 'completion';
    }
    if (has('text')) return 'text';
    throw new UnknownFormatError(
      `cannot tell the row format from its fields (${fieldList(row)}). Expected one of: {text}, {prompt, completion}, ` +
        `{instruction, input, output}, {messages}. Map columns with --columns (e.g. prompt=mr,completion=ref) or set --format.`,
      location,
    );
  }

  private renderText(row: Record<string, unknown>, location: SourceLocation): RenderedExample {
    const text = requireString(row, 'text', location);
    const piece = (row as Partial<TextRowValue>)[TEXT_PIECE];
    const document = piece ? { id: piece.document, last: piece.last } : undefined;
    return {
      text,
      loss: [{ from: '', to: text }],
      bos: true,
      eos: true,
      location,
      ...(document ? { document } : {}),
    };
  }

  private renderCompletion(
    row: Record<string, unknown>,
    location: SourceLocation,
  ): RenderedExample {
    let prompt: string;
    if (this.options.promptTemplate) {
      const result = this.options.promptTemplate.render(row);
      if ('unknownColumn' in result) {
        throw new RowError(
          `the prompt template uses {${result.unknownColumn}} but the row has no such column (it has: ${fieldList(row)})`,
          location,
        );
      }
      if ('badValue' in result) {
        throw new RowError(
          `the prompt template uses {${result.badValue}}, which is ${describeType(row[result.badValue])}, not text`,
          location,
        );
      }
      prompt = result.text;
    } else prompt = requireString(row, 'prompt', location);
    const completion = requireString(row, this.completionField, location);
    return this.promptAndCompletion(prompt, completion, location);
  }

  private renderAlpaca(row: Record<string, unknown>, location: SourceLocation): RenderedExample {
    const instruction = requireString(row, 'instruction', location);
    const input =
      row.input === undefined || row.input === null ? '' : requireString(row, 'input', location);
    const output = requireString(row, 'output', location);
    return this.promptAndCompletion(alpacaPrompt(instruction, input), output, location);
  }

  private promptAndCompletion(
    prompt: string,
    completion: string,
    location: SourceLocation,
  ): RenderedExample {
    if (completion.trim() === '')
      throw new RowError('the completion is empty: nothing to learn from this row', location);
    const text = prompt + completion;
    return {
      text,
      loss: [{ from: this.options.trainOnPrompt ? '' : prompt, to: text }],
      bos: true,
      eos: true,
      location,
    };
  }

  private renderChat(row: Record<string, unknown>, location: SourceLocation): RenderedExample {
    const template = (this.chatTemplate ??= this.options.chatTemplate?.() ?? null);
    if (!template) {
      throw new DatasetError(
        'chat rows need a chat template, and this model has none: pass one with --chat-template FILE',
        location,
      );
    }
    const messages = hasMessages(row) ? readMessages(row, location) : rowAsChat(row, location);
    if (!messages.some((m) => m.role === 'assistant')) {
      throw new RowError(
        `the chat has no assistant turn (roles: ${messages.map((m) => m.role).join(', ')}): nothing to learn from it`,
        location,
      );
    }
    try {
      const { text, spans } = template.renderWithAssistantSpans(messages, row.tools);
      const loss = this.options.trainOnPrompt
        ? [{ from: '', to: text }]
        : spans.map((s) => ({ from: s.before, to: s.through }));
      // Templates such as Llama 3's write bos_token themselves; never add a second one.
      return { text, loss, bos: true, eos: false, location };
    } catch (err) {
      if (err instanceof ChatRenderError) throw new RowError(err.message, location);
      // A template past its limits stops loading; say which row it was rendering.
      if (err instanceof ChatTemplateLimitError && err.location === undefined)
        throw new ChatTemplateLimitError(err.message, location);
      throw err;
    }
  }
}

function hasMessages(row: Record<string, unknown>): boolean {
  return (
    Object.prototype.hasOwnProperty.call(row, 'messages') ||
    Object.prototype.hasOwnProperty.call(row, 'conversations')
  );
}

/**
 * An Alpaca row ({instruction, input, output}, optional system) or a prompt/completion row as a
 * one-turn chat, for --format chat: the user turn is the instruction with its input below it
 * (as Alpaca's own prompt places it), the assistant turn the output.
 */
function rowAsChat(row: Record<string, unknown>, location: SourceLocation): ChatMessage[] {
  const has = (k: string) => Object.prototype.hasOwnProperty.call(row, k);
  const system: ChatMessage[] =
    has('system') && row.system !== null && row.system !== ''
      ? [{ role: 'system', content: requireString(row, 'system', location) }]
      : [];
  if (has('instruction') && has('output')) {
    const instruction = requireString(row, 'instruction', location);
    const input =
      row.input === undefined || row.input === null ? '' : requireString(row, 'input', location);
    return [
      ...system,
      { role: 'user', content: input === '' ? instruction : `${instruction}\n\n${input}` },
      { role: 'assistant', content: requireString(row, 'output', location) },
    ];
  }
  if (has('prompt') && has('completion')) {
    return [
      ...system,
      { role: 'user', content: requireString(row, 'prompt', location) },
      { role: 'assistant', content: requireString(row, 'completion', location) },
    ];
  }
  throw new RowError(
    `is missing 'messages' (it has: ${fieldList(row)}); --format chat also takes Alpaca rows (instruction, input, output) and prompt/completion rows`,
    location,
  );
}

function readMessages(row: Record<string, unknown>, location: SourceLocation): ChatMessage[] {
  const has = (k: string) => Object.prototype.hasOwnProperty.call(row, k);
  if (!has('messages') && !has('conversations'))
    throw new RowError(`is missing 'messages' (it has: ${fieldList(row)})`, location);
  const key = has('messages') ? 'messages' : 'conversations';
  const list = row[key];
  if (!Array.isArray(list))
    throw new RowError(`'${key}' must be a list of messages, got ${describeType(list)}`, location);
  if (list.length === 0) throw new RowError(`'${key}' is empty`, location);
  return list.map((m: unknown, i): ChatMessage => {
    const where = `message ${i + 1}`;
    if (m === null || typeof m !== 'object' || Array.isArray(m))
      throw new RowError(
        `${where} must be an object with role and content, got ${describeType(m)}`,
        location,
      );
    const msg = m as Record<string, unknown>;
    // ShareGPT rows: {from: human|gpt|system, value}.
    if (!('role' in msg) && 'from' in msg) {
      const role = SHAREGPT_ROLES[String(msg.from)];
      if (!role)
        throw new RowError(
          `${where} has unknown sender '${String(msg.from)}' (expected human, gpt or system)`,
          location,
        );
      if (typeof msg.value !== 'string')
        throw new RowError(
          `${where}'s value must be text, got ${describeType(msg.value)}`,
          location,
        );
      return { role, content: msg.value };
    }
    if (typeof msg.role !== 'string')
      throw new RowError(`${where} has no role (it has: ${fieldList(msg)})`, location);
    if (!(CHAT_ROLES as readonly string[]).includes(msg.role)) {
      throw new RowError(
        `${where} has unknown role '${msg.role}' (expected ${CHAT_ROLES.join(', ')})`,
        location,
      );
    }
    const content =
      msg.content ?? (msg.role === 'assistant' && Array.isArray(msg.tool_calls) ? '' : undefined);
    if (content === undefined)
      throw new RowError(
        `${where} (${msg.role}) has no content (it has: ${fieldList(msg)})`,
        location,
      );
    if (typeof content !== 'string')
      throw new RowError(
        `${where} (${msg.role}) content must be text, got ${describeType(msg.content)}`,
        location,
      );
    return { ...msg, role: msg.role, content };
  });
}

function requireString(
  row: Record<string, unknown>,
  field: string,
  location: SourceLocation,
): string {
  if (!Object.prototype.hasOwnProperty.call(row, field)) {
    throw new RowError(`is missing '${field}' (it has: ${fieldList(row)})`, location);
  }
  const value = row[field];
  if (typeof value !== 'string')
    throw new RowError(
      `'${field}' must be text, got ${describeType(value)} ${preview(value, 40)}`,
      location,
    );
  return value;
}

function fieldList(row: Record<string, unknown>): string {
  const keys = Object.keys(row);
  return keys.length > 0 ? keys.join(', ') : 'no fields';
}

function describeType(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}
