/**
 * A run's dataset rendered the way qlora-ts rendered it (format, columns, prompt template, chat
 * template), written as JSONL that Hugging Face trainers read, for `qlora export --format recipe`:
 *
 * - `text` rows ({"text"}): plain text, and any format trained with loss on every token
 *   (--train-on-prompt); TRL's language-modelling rows, axolotl's `completion` type;
 * - `prompt-completion` rows ({"prompt", "completion"}): prompt/completion and Alpaca rows, the
 *   prompt already rendered (template applied), loss on the completion; TRL's prompt-completion
 *   rows, an axolotl user-defined instruction format;
 * - `segments` rows ({"segments": [{"label", "text"}]}): chats, rendered with the chat template,
 *   loss on the assistant turns. For axolotl (its `input_output` type concatenates segments as they
 *   are) BOS/EOS are written out as text where qlora-ts adds them; the generated TRL script
 *   tokenizes the text whole, adds BOS as qlora-ts does and marks the loss tokens itself.
 *
 * Rows are rendered, not tokenized: each trainer tokenizes with the model's own tokenizer.
 */
import { fs } from '../io/host.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import { describeLocation } from '../data/errors.js';
import type { RenderedExample, RowFormat } from '../data/formats.js';

export type HandOffRowKind = 'text' | 'prompt-completion' | 'segments';

/** Which row kind carries a run's examples exactly. */
export function rowKindFor(format: RowFormat, trainOnPrompt: boolean): HandOffRowKind {
  if (format === 'chat') return 'segments';
  if (format === 'text' || trainOnPrompt) return 'text';
  return 'prompt-completion';
}

export interface SpecialTokens {
  /** BOS as text to write into segments (where qlora-ts prepends it); null: leave it to the reader. */
  readonly bos: string | null;
  readonly eos: string | null;
}

export interface Segment {
  readonly label: boolean;
  readonly text: string;
}

/** One rendered example as a row of `kind`; a row that kind cannot carry is an error naming it. */
export function handOffRow(
  kind: HandOffRowKind,
  ex: Pick<RenderedExample, 'text' | 'loss' | 'bos' | 'eos' | 'location'>,
  special: SpecialTokens,
): Record<string, unknown> {
  const where = () => describeLocation(ex.location);
  if (kind === 'text') {
    if (ex.loss.length !== 1 || ex.loss[0]!.from !== '' || ex.loss[0]!.to !== ex.text)
      throw new Error(`${where()}: this row does not carry loss on all its text`);
    return { text: ex.text };
  }
  if (kind === 'prompt-completion') {
    const span = ex.loss[0];
    if (ex.loss.length !== 1 || span!.to !== ex.text)
      throw new Error(`${where()}: this row's loss is not one completion at its end`);
    return {
      prompt: ex.text.slice(0, span!.from.length),
      completion: ex.text.slice(span!.from.length),
    };
  }
  return { segments: segmentsOf(ex, special) };
}

/** The text cut at every loss boundary, each piece labelled; BOS and EOS as qlora-ts adds them. */
export function segmentsOf(
  ex: Pick<RenderedExample, 'text' | 'loss' | 'bos' | 'eos'>,
  special: SpecialTokens,
): Segment[] {
  const inLoss = new Uint8Array(ex.text.length);
  for (const s of ex.loss) inLoss.fill(1, s.from.length, s.to.length);
  const out: Segment[] = [];
  const push = (label: boolean, text: string) => {
    if (text.length === 0) return;
    const last = out[out.length - 1];
    if (last && last.label === label) out[out.length - 1] = { label, text: last.text + text };
    else out.push({ label, text });
  };
  if (ex.bos && special.bos !== null && !ex.text.startsWith(special.bos)) push(false, special.bos);
  let start = 0;
  for (let i = 1; i <= ex.text.length; i++) {
    if (i === ex.text.length || inLoss[i] !== inLoss[start]) {
      push(inLoss[start] === 1, ex.text.slice(start, i));
      start = i;
    }
  }
  if (ex.eos && special.eos !== null && !ex.text.endsWith(special.eos))
    push(ex.text.length > 0 && inLoss[ex.text.length - 1] === 1, special.eos);
  return out;
}

/**
 * Joins the pieces of long plain-text documents (the text reader cuts them) back into one row each,
 * so a document is a row as the file had it.
 */
export async function* wholeDocuments(
  examples: AsyncIterable<RenderedExample>,
): AsyncGenerator<RenderedExample> {
  let pending: RenderedExample | null = null;
  for await (const ex of examples) {
    if (!ex.document) {
      if (pending) yield pending;
      pending = null;
      yield ex;
      continue;
    }
    const text: string = (pending?.text ?? '') + ex.text;
    pending = { ...(pending ?? ex), text, loss: [{ from: '', to: text }], document: undefined };
    if (ex.document.last) {
      yield pending;
      pending = null;
    }
  }
  if (pending) yield pending;
}

/** Writes rows as JSONL, atomically; returns the number of rows. */
export async function writeJsonl(
  file: string,
  rows: AsyncIterable<Record<string, unknown>>,
): Promise<number> {
  const lines: string[] = [];
  let n = 0;
  for await (const row of rows) {
    lines.push(JSON.stringify(row));
    n++;
  }
  const bytes = new TextEncoder().encode(lines.length > 0 ? `${lines.join('\n')}\n` : '');
  writeFileAtomic(file, (fd) => writeAll(fd, bytes));
  return n;
}

export function removeIfPresent(file: string): void {
  fs.rmSync(file, { force: true });
}
