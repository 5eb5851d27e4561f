import type { Tokenizer } from '../tokenizer/types.js';
import { Batcher } from './batching.js';
import type { LoadedDataset, SplitStats } from './dataset.js';
import { describeLocation } from './errors.js';
import { countTargets, type TokenizedExample } from './tokenize.js';

/** How masked (no-loss) text is marked in rendered examples. */
export interface MaskStyle {
  readonly open: string;
  readonly close: string;
  /** Shown once, explaining the marks. */
  readonly legend: string;
}

/** Terminal: dim. */
export const DIM_STYLE: MaskStyle = {
  open: '\x1b[2m',
  close: '\x1b[22m',
  legend: 'dim text carries no loss (prompt, non-assistant turns, BOS)',
};
/** Plain text: brackets that do not occur in ordinary data. */
export const BRACKET_STYLE: MaskStyle = {
  open: '⟦',
  close: '⟧',
  legend: '⟦bracketed⟧ text carries no loss (prompt, non-assistant turns, BOS)',
};

export interface InspectOptions {
  readonly path: string;
  readonly tokenizerPath: string;
  readonly formatWasGiven: boolean;
  readonly maxSeqLen: number;
  /** Rendered examples to show. */
  readonly show: number;
  readonly style: MaskStyle;
  /** Longest rendering of one example, in characters. */
  readonly maxExampleChars?: number;
}

const FORMAT_NOTES: Record<string, string> = {
  text: 'plain text; loss on every token',
  completion: 'prompt/completion; loss on the completion only',
  alpaca: 'Alpaca instruction/input/output with the Stanford prompt; loss on the output only',
  chat: 'chat messages rendered with the chat template; loss on assistant turns only',
};

/** The `qlora data inspect` report, as lines of text. */
export function inspectReport(
  data: LoadedDataset,
  tokenizer: Tokenizer,
  options: InspectOptions,
): string[] {
  const lines: string[] = [];
  const st = data.stats.train;
  const sv = data.stats.valid;
  const field = (name: string, value: string) => lines.push(`${name.padEnd(14)}${value}`);
  const pct = (a: number, b: number) => (b === 0 ? '0%' : `${((100 * a) / b).toFixed(1)}%`);
  const specials = [
    tokenizer.addBos && tokenizer.bosToken ? `adds BOS ${tokenizer.bosToken}` : 'no BOS added',
    tokenizer.eosToken ? `EOS ${tokenizer.eosToken}` : 'no EOS',
  ].join(', ');

  field('dataset', options.path);
  field(
    'format',
    `${data.format} (${options.formatWasGiven ? 'as given' : 'detected'}): ${FORMAT_NOTES[data.format]}`,
  );
  field('tokenizer', `${options.tokenizerPath} (${tokenizer.vocabSize} tokens; ${specials})`);
  field('max length', `${options.maxSeqLen} tokens; longer examples: ${data.truncation}`);
  const validNote =
    data.validSource === 'file'
      ? 'from the validation file'
      : data.validSource === 'held-out'
        ? 'held out from train with the seed'
        : 'none';
  const test = data.stats.test;
  field(
    'examples',
    `train ${st.examples}, validation ${data.valid.length} (${validNote})${test ? `, test ${test.examples}` : ''}`,
  );
  field(
    'rows read',
    `train ${st.rows}${data.validSource === 'file' ? `, validation ${sv.rows}` : ''}${test ? `, test ${test.rows}` : ''}`,
  );
  for (const [name, s] of splits(data)) {
    if (s.badRows === 0) continue;
    field('bad rows', `${name}: ${s.badRows} skipped`);
    for (const m of s.badRowMessages) lines.push(`${' '.repeat(16)}${m}`);
    if (s.badRows > s.badRowMessages.length)
      lines.push(`${' '.repeat(16)}… and ${s.badRows - s.badRowMessages.length} more`);
  }
  for (const [name, s] of splits(data)) {
    if (s.overLength === 0 && s.droppedNoLoss === 0) continue;
    const what =
      data.truncation === 'drop'
        ? 'dropped'
        : data.truncation === 'split'
          ? 'split into windows'
          : `cut (${data.truncation})`;
    const noLoss = s.droppedNoLoss ? `; ${s.droppedNoLoss} dropped with no loss token left` : '';
    field(
      'over-long',
      `${name}: ${s.overLength} longer than ${options.maxSeqLen} tokens, ${what}${noLoss}`,
    );
  }
  const trainTokens = data.train.reduce((n, e) => n + e.ids.length, 0);
  const trainLoss = data.train.reduce((n, e) => n + countTargets(e.targets), 0);
  field(
    'loss tokens',
    `${trainLoss} of ${trainTokens} train tokens (${pct(trainLoss, trainTokens)}) carry loss`,
  );
  if (st.inexactBoundaries > 0) {
    field(
      'boundaries',
      `${st.inexactBoundaries} loss boundaries fell inside a token (e.g. a prompt ending in a space); loss starts at that token`,
    );
  }
  const packed = new Batcher(data.train, {
    batchSize: 1,
    seqLen: options.maxSeqLen,
    padId: 0,
    shuffle: false,
  }).batchesPerEpoch;
  field(
    'packing',
    `train packs into ${packed} rows of ${options.maxSeqLen} tokens (${pct(trainTokens, packed * options.maxSeqLen)} filled)`,
  );

  lines.push('', `token lengths (train): ${lengthSummary(data.train)}`);
  lines.push(...histogram(data.train.map((e) => e.ids.length)).map((l) => `  ${l}`));

  const shown = data.train.slice(0, options.show);
  if (shown.length > 0)
    lines.push('', `first ${shown.length} train example(s); ${options.style.legend}:`);
  shown.forEach((ex, i) => {
    lines.push(
      '',
      `example ${i + 1}: ${describeLocation(ex.location)}, ${ex.ids.length} tokens, ${countTargets(ex.targets)} with loss`,
    );
    const text = renderMasked(tokenizer, ex, options.style, options.maxExampleChars ?? 1500);
    lines.push(...text.split('\n').map((l) => `  │ ${l}`));
  });
  return lines;
}

function splits(data: LoadedDataset): [string, SplitStats][] {
  const out: [string, SplitStats][] = [['train', data.stats.train]];
  if (data.validSource === 'file') out.push(['validation', data.stats.valid]);
  if (data.stats.test) out.push(['test', data.stats.test]);
  return out;
}

function lengthSummary(examples: readonly TokenizedExample[]): string {
  const lengths = examples.map((e) => e.ids.length).sort((a, b) => a - b);
  const at = (q: number) => lengths[Math.min(lengths.length - 1, Math.floor(q * lengths.length))]!;
  const mean = lengths.reduce((a, b) => a + b, 0) / lengths.length;
  return `min ${lengths[0]}, median ${at(0.5)}, mean ${mean.toFixed(1)}, p95 ${at(0.95)}, max ${lengths.at(-1)}`;
}

/** Text histogram with about ten bins of a round width (1, 2, 5 × 10^k). */
export function histogram(values: readonly number[], bins = 10, barWidth = 40): string[] {
  if (values.length === 0) return [];
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const width = niceWidth((max - min + 1) / bins);
  const start = Math.floor(min / width) * width;
  const counts = new Array<number>(Math.floor((max - start) / width) + 1).fill(0);
  for (const v of values) counts[Math.floor((v - start) / width)]!++;
  const most = Math.max(...counts);
  const labels = counts.map((_, i) =>
    width === 1 ? `${start + i}` : `${start + i * width}-${start + (i + 1) * width - 1}`,
  );
  const labelWidth = Math.max(...labels.map((l) => l.length));
  return counts.map(
    (c, i) =>
      `${labels[i]!.padStart(labelWidth)} │${'█'.repeat(Math.round((c / most) * barWidth)).padEnd(barWidth)} ${c}`,
  );
}

function niceWidth(raw: number): number {
  if (raw <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5]) if (m * power >= raw) return m * power;
  return 10 * power;
}

/** A stretch of an example's text and whether its tokens carry loss. */
export interface MaskedSegment {
  readonly text: string;
  readonly loss: boolean;
}

/**
 * An example's text in stretches of loss / no-loss tokens, at most `maxChars` characters (then
 * `truncated`). Each stretch is decoded as the difference of decoded prefixes, so multi-byte
 * characters split across tokens come out whole.
 */
export function maskedSegments(
  tokenizer: Tokenizer,
  ex: TokenizedExample,
  maxChars: number,
): { segments: MaskedSegment[]; truncated: boolean } {
  const ids = Array.from(ex.ids);
  // Whether token i carries loss; the first token never does (nothing precedes it).
  const loss = (i: number) => i > 0 && ex.targets[i] === 1;
  const segments: MaskedSegment[] = [];
  let shownChars = 0;
  let previous = '';
  let i = 0;
  while (i < ids.length) {
    const masked = !loss(i);
    let j = i;
    while (j < ids.length && !loss(j) === masked) j++;
    const upto = tokenizer.decode(ids.slice(0, j));
    let piece = upto.startsWith(previous)
      ? upto.slice(previous.length)
      : tokenizer.decode(ids.slice(i, j));
    const room = maxChars - shownChars;
    const cut = piece.length > room;
    if (cut) piece = piece.slice(0, room);
    segments.push({ text: piece, loss: !masked });
    shownChars += piece.length;
    previous = upto;
    if (cut) return { segments, truncated: true };
    i = j;
  }
  return { segments, truncated: false };
}

/**
 * Decodes an example with its masked runs marked. Each run's text is the difference between
 * decoding the example up to the run's end and up to its start, so spaces that a tokenizer only
 * produces in context (SentencePiece's leading "▁") come out right.
 */
export function renderMasked(
  tokenizer: Tokenizer,
  ex: TokenizedExample,
  style: MaskStyle,
  maxChars: number,
): string {
  const { segments, truncated } = maskedSegments(tokenizer, ex, maxChars);
  const out = segments
    .map((s) => (s.loss ? s.text : `${style.open}${s.text}${style.close}`))
    .join('');
  return truncated ? `${out} … (not all shown: ${ex.ids.length} tokens)` : out;
}
