import { Template } from '@huggingface/jinja';
import { DatasetError } from './errors.js';
import {
  DEFAULT_TEMPLATE_LIMITS,
  TemplateLimitError,
  renderWithLimits,
  type TemplateLimits,
} from './template-budget.js';

export interface ChatMessage {
  readonly role: string;
  readonly content: string;
  readonly [extra: string]: unknown;
}

/** Where one assistant turn's loss begins and ends, as prefixes of the rendered text (see RenderedExample). */
export interface AssistantSpan {
  /** Rendered text up to where the assistant's own output begins (after its header). */
  readonly before: string;
  /**
   * The conversation rendered through this turn. Its tokens agree with the full rendering's up to
   * the end of this turn's end-of-turn marker; the tokenizer takes the loss up to that point.
   */
  readonly through: string;
}

export interface ChatTemplateOptions {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /**
   * Date the template sees as date_string (Llama 3.x print "Today Date: 26 Jul 2024"). Fixed by
   * default so rendered training text does not change from one day to the next. (A template that
   * calls strftime_now without checking date_string still gets the real date.)
   */
  readonly date?: Date;
  /** Where the template came from (e.g. ".../tokenizer_config.json"), named in every error about it. */
  readonly file?: string;
  /** Bounds on each render's work (steps, list sizes, output, time); defaults: DEFAULT_TEMPLATE_LIMITS. */
  readonly limits?: TemplateLimits;
}

/** A message list rendering failed; the message says why (the caller adds the row). */
export class ChatRenderError extends Error {}

/**
 * The template itself ran past a limit (loop, recursion or output too large): not a problem of one
 * row, so loading stops. The message names the template's file.
 */
export class ChatTemplateLimitError extends DatasetError {}

/**
 * A model's Jinja chat template, rendered with @huggingface/jinja (which applies the trim_blocks /
 * lstrip_blocks settings Hugging Face uses) and the variables transformers passes:
 * messages, bos_token, eos_token, add_generation_prompt, tools when a row has them, and date_string.
 */
export class ChatTemplate {
  private readonly template: Template;
  private readonly date: Date;

  constructor(
    readonly source: string,
    private readonly options: ChatTemplateOptions,
  ) {
    try {
      this.template = new Template(source);
    } catch (err) {
      // The parser meets a template that ends inside a tag or expression as a TypeError.
      const why =
        err instanceof TypeError
          ? 'it ends inside a tag or expression (an unclosed {% %}, {{ }} or bracket?)'
          : err instanceof Error
            ? err.message
            : String(err);
      throw new DatasetError(`${this.origin}: the chat template does not parse: ${why}`);
    }
    this.date = options.date ?? new Date(Date.UTC(2024, 6, 26));
  }

  render(messages: readonly ChatMessage[], addGenerationPrompt: boolean, tools?: unknown): string {
    const variables: Record<string, unknown> = {
      messages: messages.map((m) => ({ ...m })),
      bos_token: this.options.bosToken ?? '',
      eos_token: this.options.eosToken ?? '',
      add_generation_prompt: addGenerationPrompt,
      // Llama 3.x templates print "Today Date: {date_string}" when it is defined (else the real date).
      date_string: strftime(this.date, '%d %b %Y'),
    };
    if (tools !== undefined) variables.tools = tools;
    try {
      return renderWithLimits(
        this.template,
        variables,
        (format) => strftime(new Date(), format, false),
        this.options.limits ?? DEFAULT_TEMPLATE_LIMITS,
      );
    } catch (err) {
      if (err instanceof TemplateLimitError)
        throw new ChatTemplateLimitError(`${this.origin}: chat template stopped: ${err.message}`);
      // Deep recursion in a template (a macro calling itself) ends in a RangeError: a template limit too.
      if (
        err instanceof RangeError &&
        /call stack|string length|array length|allocation/i.test(err.message)
      )
        throw new ChatTemplateLimitError(
          `${this.origin}: chat template stopped: ${err.message} (recursion or output too large for a chat template)`,
        );
      // Jinja's own messages ("Cannot perform operation + on undefined values") speak of the template's variables.
      throw new ChatRenderError(
        `chat template error: ${err instanceof Error ? err.message : String(err)} (template from ${this.origin})`,
      );
    }
  }

  /** The template's file for messages ("chat template" when unknown). */
  get origin(): string {
    return this.options.file ?? 'chat template';
  }

  /**
   * Renders a conversation and locates each assistant turn by rendering prefixes of it: a turn
   * starts where "the conversation before it + the generation prompt" ends, and ends where "the
   * conversation through it" stops agreeing with the full rendering. This asks the template itself
   * where turns are, so it works for any template whose rendering of a prefix of the conversation
   * is a prefix of the whole (all common ones); when the generation prompt is not (templates that
   * render the last turn differently), the turn's content is searched for instead.
   *
   * So the loss covers what the model must write after the generation prompt: the reply and the
   * template's end-of-turn marker (e.g. "Hello!</s>\n", "Hello!<|eot_id|>"). A template without
   * a generation prompt leaves the assistant header to the model, and the header is learned too.
   */
  renderWithAssistantSpans(
    messages: readonly ChatMessage[],
    tools?: unknown,
  ): { text: string; spans: AssistantSpan[] } {
    const text = this.render(messages, false, tools);
    const spans: AssistantSpan[] = [];
    let searchFrom = 0;
    for (let i = 0; i < messages.length; i++) {
      if (messages[i]!.role !== 'assistant') continue;
      const content = messages[i]!.content;
      let start = -1;
      if (i > 0) {
        const withPrompt = this.tryRender(messages.slice(0, i), true, tools);
        if (withPrompt !== null && text.startsWith(withPrompt)) start = withPrompt.length;
      }
      if (start < 0) {
        // Search after everything the conversation before this turn renders to.
        const history = i > 0 ? this.tryRender(messages.slice(0, i), false, tools) : null;
        const from = Math.max(searchFrom, history === null ? 0 : commonPrefixLength(history, text));
        const at = text.indexOf(content.trim(), from);
        if (at < 0)
          throw new ChatRenderError(
            `could not find assistant message ${i + 1} in the rendered chat`,
          );
        start = at;
      }
      const through = this.render(messages.slice(0, i + 1), false, tools);
      const end = Math.max(start, commonPrefixLength(through, text));
      if (!text.slice(start, end).includes(content.trim())) {
        throw new ChatRenderError(
          `the chat template renders assistant message ${i + 1} differently in the full conversation than in its prefix; ` +
            "cannot tell which tokens are the assistant's",
        );
      }
      spans.push({ before: text.slice(0, start), through });
      searchFrom = end;
    }
    return { text, spans };
  }

  private tryRender(
    messages: readonly ChatMessage[],
    addGenerationPrompt: boolean,
    tools?: unknown,
  ): string | null {
    try {
      return this.render(messages, addGenerationPrompt, tools);
    } catch (err) {
      if (err instanceof ChatTemplateLimitError) throw err;
      return null;
    }
  }
}

export function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

const MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];

/**
 * The subset of Python strftime chat templates use: in UTC for the fixed date_string, in local time
 * for strftime_now (as Python's and @huggingface/jinja's strftime_now do).
 */
function strftime(date: Date, format: string, utc = true): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const d = utc
    ? {
        date: date.getUTCDate(),
        month: date.getUTCMonth(),
        year: date.getUTCFullYear(),
        h: date.getUTCHours(),
        m: date.getUTCMinutes(),
        s: date.getUTCSeconds(),
        day: date.getUTCDay(),
      }
    : {
        date: date.getDate(),
        month: date.getMonth(),
        year: date.getFullYear(),
        h: date.getHours(),
        m: date.getMinutes(),
        s: date.getSeconds(),
        day: date.getDay(),
      };
  return format.replace(/%([dbBmyYHMSaAj%])/g, (_, c: string) => {
    switch (c) {
      case 'd':
        return pad(d.date);
      case 'b':
        return MONTHS[d.month]!.slice(0, 3);
      case 'B':
        return MONTHS[d.month]!;
      case 'm':
        return pad(d.month + 1);
      case 'y':
        return pad(d.year % 100);
      case 'Y':
        return String(d.year);
      case 'H':
        return pad(d.h);
      case 'M':
        return pad(d.m);
      case 'S':
        return pad(d.s);
      case 'a':
        return DAYS[d.day]!.slice(0, 3);
      case 'A':
        return DAYS[d.day]!;
      case 'j':
        return String(
          Math.floor((Date.UTC(d.year, d.month, d.date) - Date.UTC(d.year, 0, 1)) / 86400000) + 1,
        ).padStart(3, '0');
      default:
        return '%';
    }
  });
}
