import type { Tokenizer } from '../tokenizer/types.js';
import type { SourceLocation } from './errors.js';
import type { RenderedExample } from './formats.js';

/**
 * A training example: token ids and, per token, whether it is a training target (the model's
 * prediction of that token, made at the position before it, carries loss). The flag of the first
 * token is never used: nothing precedes it in the example.
 */
export interface TokenizedExample {
  readonly ids: Int32Array;
  readonly targets: Uint8Array;
  readonly location: SourceLocation;
}

export interface TokenizeResult {
  readonly ids: number[];
  readonly targets: number[];
  /** Loss boundaries that fell inside a token (the tokenizer merged across them). */
  readonly inexactBoundaries: number;
}

/**
 * Tokenizes a rendered example and marks its loss tokens.
 *
 * The text is tokenized once, whole, so tokens are exactly what the model sees at inference. A
 * loss boundary is given as a prefix of the text; its token index is how far the prefix's own
 * tokens agree with the whole text's. When the tokenizer merges across the boundary, the tokens
 * stop agreeing one token early: a loss region then starts at the straddling token (so every
 * character of the completion is learned) and ends before it (so no character of the following
 * turn is), and the boundary is counted as inexact.
 *
 * BOS is prepended when the example wants it, the tokenizer config adds one and the text does not
 * already start with it (Llama 3 templates write <|begin_of_text|> themselves). EOS is appended when
 * the example asks for it (completions, documents) or the tokenizer config adds one; it is a target
 * when the text ends inside a loss region, so the model learns to stop.
 */
export function tokenizeExample(
  tokenizer: Tokenizer,
  example: Pick<RenderedExample, 'text' | 'loss' | 'bos' | 'eos'>,
): TokenizeResult {
  const body = tokenizer.encode(example.text, { addSpecialTokens: false });
  const targets = new Array<number>(body.length).fill(0);
  let inexact = 0;
  const boundary = (prefix: string): number => {
    if (prefix.length === 0) return 0;
    if (prefix === example.text) return body.length;
    const own = tokenizer.encode(prefix, { addSpecialTokens: false });
    let k = 0;
    while (k < own.length && k < body.length && own[k] === body[k]) k++;
    // `to` prefixes may legitimately diverge from the text after their turn (Phi-3 appends EOS
    // when a conversation ends there); only a disagreement inside the text itself is a straddle.
    if (k < own.length && example.text.startsWith(prefix)) inexact++;
    return k;
  };
  for (const span of example.loss) {
    const start = boundary(span.from);
    const end = boundary(span.to);
    for (let i = start; i < end; i++) targets[i] = 1;
  }

  const ids = body;
  const bosId = tokenizer.bosId;
  if (example.bos && tokenizer.addBos && bosId !== null && ids[0] !== bosId) {
    ids.unshift(bosId);
    targets.unshift(0);
  }
  const eosId = tokenizer.eosId;
  if ((example.eos || tokenizer.addEos) && eosId !== null && ids[ids.length - 1] !== eosId) {
    const endsInLoss = targets.length > 0 && targets[targets.length - 1] === 1;
    ids.push(eosId);
    targets.push(endsInLoss ? 1 : 0);
  }
  return { ids, targets, inexactBoundaries: inexact };
}

/** Number of tokens that carry loss. */
export function countTargets(targets: ArrayLike<number>): number {
  let n = 0;
  for (let i = 1; i < targets.length; i++) n += targets[i]! ? 1 : 0;
  return n;
}
