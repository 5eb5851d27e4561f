import type { Tokenizer } from '../tokenizer/types.js';
import { ChatTemplate } from './chat-template.js';
import { DatasetError, RowError } from './errors.js';
import {
  RowRenderer,
  type FormatOptions,
  type RenderedExample,
  type RowFormat,
} from './formats.js';
import { TEXT_PIECE, type TextReadOptions } from './read-text.js';
import { seededPermutation } from './shuffle.js';
import { type DatasetRows, readSplit, resolveSources, type SplitFiles } from './sources.js';
import { countTargets, tokenizeExample, type TokenizedExample } from './tokenize.js';
import { fitToLength, type TruncationPolicy } from './truncate.js';

export interface DatasetOptions extends Omit<FormatOptions, 'chatTemplate'> {
  /** Longest example, in tokens, after BOS/EOS. */
  readonly maxSeqLen: number;
  /** Default: 'split' for plain text (language modelling), 'truncate-right' otherwise. */
  readonly truncation?: TruncationPolicy;
  /** Count bad rows and go on, instead of stopping at the first. */
  readonly skipBadRows?: boolean;
  /** Jinja chat template overriding the tokenizer's own. */
  readonly chatTemplate?: string;
  /** Where chatTemplate came from, for messages. */
  readonly chatTemplateFile?: string;
  readonly text?: TextReadOptions;
  /** Fraction of train examples held out for validation when there is no validation file (default 0.05; 0 for none). */
  readonly validFraction?: number;
  readonly seed?: number;
  /** The split of a Hugging Face dataset folder to train on (default train); see sources.ts. */
  readonly split?: string;
  /** Read at most this many rows per split (for quick inspection). */
  readonly maxRows?: number;
  /** Longest row in UTF-8 bytes (default 1 MiB, DEFAULT_MAX_ROW_BYTES); a longer row is a row error. */
  readonly maxRowBytes?: number;
}

export interface SplitStats {
  /** Rows read from the files (for plain text: documents). */
  rows: number;
  /** Rows skipped as bad (only with skipBadRows), and the first few reasons. */
  badRows: number;
  readonly badRowMessages: string[];
  /** Examples longer than maxSeqLen (shortened, split or dropped per the policy). */
  overLength: number;
  droppedTooLong: number;
  /** Pieces left with no loss token after truncation (or splitting). */
  droppedNoLoss: number;
  /** Examples that had loss tokens and lost every one of them to the length limit (dropped, or truncated away). */
  lostAllLoss: number;
  /** Loss tokens removed by the length limit. */
  lossTokensCut: number;
  /** Token length of every example before the length limit, in reading order (for length advice: p95 and max). */
  readonly lengths: number[];
  /** Loss boundaries that fell inside a token. */
  inexactBoundaries: number;
  examples: number;
  tokens: number;
  lossTokens: number;
}

export interface LoadedDataset {
  readonly format: RowFormat;
  readonly truncation: TruncationPolicy;
  readonly train: TokenizedExample[];
  readonly valid: TokenizedExample[];
  readonly test: TokenizedExample[] | null;
  /** Where validation examples came from. */
  readonly validSource: 'file' | 'held-out' | 'none';
  readonly stats: {
    readonly train: SplitStats;
    readonly valid: SplitStats;
    readonly test: SplitStats | null;
  };
}

const MAX_BAD_ROW_MESSAGES = 5;

function emptyStats(): SplitStats {
  return {
    rows: 0,
    badRows: 0,
    badRowMessages: [],
    overLength: 0,
    droppedTooLong: 0,
    droppedNoLoss: 0,
    lostAllLoss: 0,
    lossTokensCut: 0,
    lengths: [],
    inexactBoundaries: 0,
    examples: 0,
    tokens: 0,
    lossTokens: 0,
  };
}

/**
 * Loads a dataset path (file or MLX-style directory), or rows in memory, into tokenized train / validation / test
 * examples, with counts of everything that was skipped, shortened or dropped.
 */
export async function loadDataset(
  path: string | DatasetRows,
  tokenizer: Tokenizer,
  options: DatasetOptions,
): Promise<LoadedDataset> {
  if (!Number.isInteger(options.maxSeqLen) || options.maxSeqLen < 2) {
    throw new DatasetError(`max sequence length must be an integer >= 2, got ${options.maxSeqLen}`);
  }
  if (
    options.maxRowBytes !== undefined &&
    !(Number.isSafeInteger(options.maxRowBytes) && options.maxRowBytes >= 1)
  ) {
    throw new DatasetError(`max row bytes must be a positive integer, got ${options.maxRowBytes}`);
  }
  const sources = await resolveSources(
    path,
    options.split !== undefined ? { split: options.split } : {},
  );
  const renderer = new RowRenderer({
    ...options,
    chatTemplate: () => {
      const source = options.chatTemplate ?? tokenizer.chatTemplate;
      const file =
        options.chatTemplate !== undefined
          ? (options.chatTemplateFile ?? 'the --chat-template file')
          : tokenizer.chatTemplateFile;
      return source
        ? new ChatTemplate(source, {
            bosToken: tokenizer.bosToken,
            eosToken: tokenizer.eosToken,
            ...(file !== undefined ? { file } : {}),
          })
        : null;
    },
  });
  const loader = new SplitLoader(renderer, tokenizer, options);

  const train = await loader.load(sources.train, 'train');
  let valid: { examples: TokenizedExample[]; stats: SplitStats };
  let validSource: LoadedDataset['validSource'];
  if (sources.valid) {
    valid = await loader.load(sources.valid, 'validation');
    validSource = 'file';
  } else {
    const held = holdOut(train.examples, options.validFraction ?? 0.05, options.seed ?? 0);
    train.examples = held.train;
    valid = { examples: held.valid, stats: statsOf(held.valid) };
    validSource = held.valid.length > 0 ? 'held-out' : 'none';
    train.stats.examples = held.train.length;
    train.stats.tokens -= valid.stats.tokens;
    train.stats.lossTokens -= valid.stats.lossTokens;
  }
  const test = sources.test ? await loader.load(sources.test, 'test') : null;
  return {
    format: renderer.format!,
    truncation: loader.policy!,
    train: train.examples,
    valid: valid.examples,
    test: test ? test.examples : null,
    validSource,
    stats: { train: train.stats, valid: valid.stats, test: test ? test.stats : null },
  };
}

class SplitLoader {
  policy: TruncationPolicy | null = null;

  constructor(
    private readonly renderer: RowRenderer,
    private readonly tokenizer: Tokenizer,
    private readonly options: DatasetOptions,
  ) {}

  async load(
    files: SplitFiles,
    name: string,
  ): Promise<{ examples: TokenizedExample[]; stats: SplitStats }> {
    const stats = emptyStats();
    const examples: TokenizedExample[] = [];
    // Pieces of one plain-text document, joined before truncation.
    let pending: {
      ids: number[];
      targets: number[];
      first: RenderedExample;
      context: string;
    } | null = null;

    const finish = (ids: number[], targets: number[], location: RenderedExample['location']) => {
      const policy = (this.policy ??=
        this.options.truncation ?? (this.renderer.format === 'text' ? 'split' : 'truncate-right'));
      const example: TokenizedExample = {
        ids: Int32Array.from(ids),
        targets: Uint8Array.from(targets),
        location,
      };
      const fit = fitToLength(example, this.options.maxSeqLen, policy, this.tokenizer.bosId);
      stats.lengths.push(ids.length);
      if (fit.overLength) stats.overLength++;
      if (fit.dropped) stats.droppedTooLong++;
      const lossBefore = countTargets(example.targets);
      let lossKept = 0;
      for (const piece of fit.examples) {
        const loss = countTargets(piece.targets);
        if (loss === 0) {
          stats.droppedNoLoss++;
          continue;
        }
        examples.push(piece);
        stats.tokens += piece.ids.length;
        stats.lossTokens += loss;
        lossKept += loss;
      }
      if (lossBefore > 0 && lossKept === 0) stats.lostAllLoss++;
      stats.lossTokensCut += Math.max(0, lossBefore - lossKept);
    };

    for await (const raw of readSplit(
      files,
      this.options.text,
      this.options.maxRowBytes !== undefined ? { maxRowBytes: this.options.maxRowBytes } : {},
    )) {
      // Pieces of a text document after its first are not rows of their own.
      const continuation = pending !== null && isTextPiece(raw.value);
      if (!continuation) {
        if (this.options.maxRows !== undefined && stats.rows >= this.options.maxRows) break;
        stats.rows++;
      }
      try {
        if (raw.error) throw raw.error;
        const rendered = this.renderer.render(raw.value, raw.location);
        if (rendered.document) {
          // A piece of a longer text document: BOS before the first piece only, EOS after the last only.
          const part = this.tokenizePiece(rendered, pending?.context ?? null);
          pending ??= { ids: [], targets: [], first: rendered, context: '' };
          for (let i = 0; i < part.ids.length; i++) {
            pending.ids.push(part.ids[i]!);
            pending.targets.push(part.targets[i]!);
          }
          pending.context = lastLine(rendered.text);
          if (rendered.document.last) {
            const eosId = this.tokenizer.eosId;
            if (eosId !== null && pending.ids[pending.ids.length - 1] !== eosId) {
              pending.ids.push(eosId);
              pending.targets.push(1);
            }
            finish(pending.ids, pending.targets, pending.first.location);
            pending = null;
          }
          continue;
        }
        const result = this.tokenize(rendered);
        stats.inexactBoundaries += result.inexactBoundaries;
        if (countTargets(result.targets) === 0) {
          throw new RowError(
            'every token is masked (no completion or assistant tokens carry loss): nothing to learn from this row',
            raw.location,
          );
        }
        finish(result.ids, result.targets, rendered.location);
      } catch (err) {
        if (!(err instanceof RowError) || !this.options.skipBadRows) throw err;
        stats.badRows++;
        if (stats.badRowMessages.length < MAX_BAD_ROW_MESSAGES)
          stats.badRowMessages.push(err.message);
      }
    }
    if (pending) finish(pending.ids, pending.targets, pending.first.location);
    stats.examples = examples.length;
    if (examples.length === 0) {
      const where = files.files.map((f) => f.path).join(', ');
      const why =
        stats.rows === 0
          ? 'it has no rows'
          : `${stats.rows} row(s) read, ${stats.badRows} bad, ${stats.droppedTooLong} dropped as longer than ${this.options.maxSeqLen} tokens, ` +
            `${stats.droppedNoLoss} left with no loss token after truncation to ${this.options.maxSeqLen} tokens` +
            (stats.droppedNoLoss > 0
              ? ' (raise the max sequence length, or truncate from the left)'
              : '') +
            (stats.badRowMessages.length > 0 ? `; first bad row: ${stats.badRowMessages[0]}` : '');
      throw new DatasetError(`the ${name} data is empty: ${why}`, { file: where });
    }
    return { examples, stats };
  }

  /**
   * Tokens of one piece of a long text document. Pieces after the first are tokenized behind the
   * last line of the piece before (then that context's tokens are dropped), so the joined tokens
   * equal those of the whole document: a tokenizer that treats the start of a text specially
   * (SentencePiece's "▁" prefix) sees the piece in context.
   */
  private tokenizePiece(
    rendered: RenderedExample,
    context: string | null,
  ): { ids: number[]; targets: number[] } {
    if (context === null) return this.tokenize({ ...rendered, bos: true, eos: false });
    const text = context + rendered.text;
    const result = this.tokenize({
      text,
      loss: [{ from: context, to: text }],
      bos: false,
      eos: false,
      location: rendered.location,
    });
    const start = result.targets.indexOf(1);
    if (start < 0) return { ids: [], targets: [] };
    return { ids: result.ids.slice(start), targets: result.targets.slice(start) };
  }

  /** A tokenizer that rejects a row's text (e.g. unpaired surrogates from a JSON escape) is a problem of that row. */
  private tokenize(rendered: Pick<RenderedExample, 'text' | 'loss' | 'bos' | 'eos' | 'location'>) {
    try {
      return tokenizeExample(this.tokenizer, rendered);
    } catch (err) {
      throw new RowError(
        `the tokenizer failed on this row: ${err instanceof Error ? err.message : String(err)}`,
        rendered.location,
      );
    }
  }
}

/** Deterministically moves a seeded random `fraction` of examples (at least one, never all) to validation. */
export function holdOut(
  examples: readonly TokenizedExample[],
  fraction: number,
  seed: number,
): { train: TokenizedExample[]; valid: TokenizedExample[] } {
  if (!(fraction >= 0 && fraction < 1))
    throw new DatasetError(`validation fraction must be in [0, 1), got ${fraction}`);
  if (fraction === 0 || examples.length < 2) return { train: [...examples], valid: [] };
  const count = Math.min(examples.length - 1, Math.max(1, Math.round(fraction * examples.length)));
  const order = seededPermutation(examples.length, seed ^ 0x5eed);
  const validIndex = new Set(order.slice(0, count));
  const train: TokenizedExample[] = [];
  const valid: TokenizedExample[] = [];
  examples.forEach((ex, i) => (validIndex.has(i) ? valid : train).push(ex));
  return { train, valid };
}

function isTextPiece(value: unknown): boolean {
  return typeof value === 'object' && value !== null && TEXT_PIECE in value;
}

/** The last line of a text that ends in a line break, with its break. */
function lastLine(text: string): string {
  return text.slice(text.lastIndexOf('\n', text.length - 2) + 1);
}

function statsOf(examples: readonly TokenizedExample[]): SplitStats {
  const stats = emptyStats();
  stats.examples = examples.length;
  for (const ex of examples) {
    stats.tokens += ex.ids.length;
    stats.lossTokens += countTargets(ex.targets);
  }
  return stats;
}
