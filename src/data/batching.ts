import { mix32 } from '../tensor/rng.js';
import { DatasetError } from './errors.js';
import { seededPermutation } from './shuffle.js';
import type { TokenizedExample } from './tokenize.js';

/** Label value for positions that carry no loss (PyTorch's ignore_index). */
export const IGNORE_INDEX = -100;

/**
 * One training batch, row-major [batchSize, seqLen].
 *
 * Labels are PRE-SHIFTED: the logits at position t are scored against labels[t], which is the
 * token at t+1 when that token is a training target, else -100. So the trainer never shifts.
 * labels[t] is -100 at prompt / non-assistant tokens, padding, and the last position of each
 * example (its next token, if any, belongs to another example).
 *
 * positions restart at 0 for every example packed into a row (RoPE positions); segmentIds are
 * distinct for each example within a row, and padding has a segment of its own, so passing
 * segmentIds to attention (AttentionOptions.segmentIds) keeps each example from seeing another.
 */
export interface Batch {
  readonly batchSize: number;
  readonly seqLen: number;
  readonly inputIds: Int32Array;
  readonly labels: Int32Array;
  readonly positions: Int32Array;
  readonly segmentIds: Int32Array;
  /** Labels that are not -100. */
  readonly numLossTokens: number;
  /** Examples in the batch (several per row when packing). */
  readonly numExamples: number;
}

/** Where the trainer is in the data: batches already taken in this epoch. Checkpoint it to resume. */
export interface DataCursor {
  readonly epoch: number;
  readonly index: number;
}

export interface BatcherOptions {
  readonly batchSize: number;
  /** Packing: the fixed row length. Padding: the longest allowed row (examples are never longer). */
  readonly seqLen: number;
  /** Pack several examples per row (default) or pad one example per row. */
  readonly packing?: boolean;
  /** Shuffle each epoch (train); off keeps file order (validation). Default true. */
  readonly shuffle?: boolean;
  readonly seed?: number;
  /** Padding mode: batch examples of similar length together (less padding). Default true when shuffling. */
  readonly groupByLength?: boolean;
  /** Padding mode: round each batch's length up to a multiple of this (default 8). */
  readonly padToMultipleOf?: number;
  /** Token id written into padding (its value is never scored or attended from real tokens). */
  readonly padId: number;
  /** Leave out a final batch with fewer than batchSize rows. Default false. */
  readonly dropLast?: boolean;
}

/** Rows of one batch: each row lists the examples placed in it, in order. */
type BatchPlan = readonly (readonly number[])[];

/** How many open rows packing keeps filling at once: more packs tighter, fewer keeps order closer to the shuffle. */
const OPEN_ROWS = 16;
/** Epoch plans kept in memory (the current epoch, the next one, and one counted ahead). */
const PLAN_CACHE_EPOCHS = 3;
/** Padding mode length grouping sorts within windows of this many batches (as transformers' LengthGroupedSampler). */
const GROUP_WINDOW_BATCHES = 50;

/**
 * Turns tokenized examples into batches. Each epoch's plan depends only on (seed, epoch), so a run
 * resumed from a DataCursor sees exactly the batches it would have seen.
 */
export class Batcher {
  private readonly options: Required<BatcherOptions>;
  /** The few most recent epoch plans (next() and counting may alternate between two epochs). */
  private readonly planCache = new Map<number, BatchPlan[]>();

  constructor(
    private readonly examples: readonly TokenizedExample[],
    options: BatcherOptions,
  ) {
    // Field by field, so an option passed as undefined still gets its default.
    const shuffle = options.shuffle ?? true;
    this.options = {
      batchSize: options.batchSize,
      seqLen: options.seqLen,
      padId: options.padId,
      packing: options.packing ?? true,
      shuffle,
      seed: options.seed ?? 0,
      groupByLength: options.groupByLength ?? shuffle,
      padToMultipleOf: options.padToMultipleOf ?? 8,
      dropLast: options.dropLast ?? false,
    };
    if (!Number.isInteger(options.batchSize) || options.batchSize < 1)
      throw new DatasetError(`batch size must be a positive integer, got ${options.batchSize}`);
    if (!Number.isInteger(options.seqLen) || options.seqLen < 2)
      throw new DatasetError(`sequence length must be an integer >= 2, got ${options.seqLen}`);
    if (!Number.isInteger(this.options.padToMultipleOf) || this.options.padToMultipleOf < 1) {
      throw new DatasetError(
        `padToMultipleOf must be a positive integer, got ${this.options.padToMultipleOf}`,
      );
    }
    if (examples.length === 0) throw new DatasetError('no examples to batch');
    const longest = examples.reduce((m, e) => Math.max(m, e.ids.length), 0);
    if (longest > options.seqLen) {
      throw new DatasetError(
        `an example has ${longest} tokens but batches hold ${options.seqLen}; load the data with maxSeqLen <= seqLen`,
      );
    }
  }

  /**
   * Batches in the first epoch. With packing and shuffling, later epochs can differ by a batch or so
   * (another order packs differently): count a whole run with batchesInEpochs.
   */
  get batchesPerEpoch(): number {
    return this.plan(0).length;
  }

  /** Batches in epoch `epoch` (each epoch's own plan). */
  batchesInEpoch(epoch: number): number {
    return this.plan(epoch).length;
  }

  /**
   * Batches in the first `epochs` epochs, each counted from its own plan; a fractional last epoch
   * contributes that share of its batches (rounded up). This is the exact number of next() calls
   * that take a run from {epoch 0, index 0} to the end of those epochs.
   */
  batchesInEpochs(epochs: number): number {
    if (!(epochs > 0) || !Number.isFinite(epochs))
      throw new DatasetError(`epochs must be a positive number, got ${epochs}`);
    let total = 0;
    const whole = Math.floor(epochs);
    for (let e = 0; e < whole; e++) total += this.batchesInEpoch(e);
    const part = epochs - whole;
    if (part > 0) total += Math.ceil(part * this.batchesInEpoch(whole));
    return total;
  }

  /**
   * The batch at `cursor`, and the cursor after it (rolling into the next epoch). Every bound comes
   * from the cursor's own epoch plan: epochs of one packed dataset need not have the same length.
   */
  next(cursor: DataCursor): { batch: Batch; cursor: DataCursor } {
    let { epoch, index } = cursor;
    let plan = this.plan(epoch);
    if (index >= plan.length) {
      epoch++;
      index = 0;
      plan = this.plan(epoch);
    }
    const batch = this.makeBatch(plan[index]!);
    index++;
    return {
      batch,
      cursor: index >= plan.length ? { epoch: epoch + 1, index: 0 } : { epoch, index },
    };
  }

  /** Where `cursor` is in the run, in epochs (e.g. 1.25 = a quarter into the second epoch). */
  epochPosition(cursor: DataCursor): number {
    const n = this.batchesInEpoch(cursor.epoch);
    return cursor.epoch + Math.min(1, cursor.index / n);
  }

  /** The batches in order from the start, as a resumable source (the Trainer's BatchSource). */
  source(): BatcherSource {
    return new BatcherSource(this);
  }

  /** Every batch of one epoch, in order (for validation). */
  *epoch(epoch = 0): Generator<Batch> {
    for (const rows of this.plan(epoch)) yield this.makeBatch(rows);
  }

  private plan(epoch: number): BatchPlan[] {
    const cached = this.planCache.get(epoch);
    if (cached) return cached;
    const { shuffle, seed, packing, batchSize, dropLast } = this.options;
    const order = shuffle
      ? seededPermutation(this.examples.length, mix32((seed >>> 0) ^ mix32(epoch + 1)))
      : this.examples.map((_, i) => i);
    let rows: number[][];
    let batches: number[][][];
    if (packing) {
      rows = this.pack(order);
      batches = chunk(rows, batchSize);
    } else if (shuffle && this.options.groupByLength) {
      batches = this.groupByLength(order, mix32(seed ^ mix32(epoch + 0x9e37)));
    } else {
      batches = chunk(
        order.map((i) => [i]),
        batchSize,
      );
    }
    if (dropLast && batches.length > 1 && batches[batches.length - 1]!.length < batchSize)
      batches.pop();
    if (this.planCache.size >= PLAN_CACHE_EPOCHS)
      this.planCache.delete(this.planCache.keys().next().value!);
    this.planCache.set(epoch, batches);
    return batches;
  }

  /** First-fit over a few open rows, in shuffled order; a row is closed when an example does not fit any open row. */
  private pack(order: readonly number[]): number[][] {
    const { seqLen } = this.options;
    const done: number[][] = [];
    const open: { items: number[]; used: number }[] = [];
    for (const i of order) {
      const len = this.examples[i]!.ids.length;
      let row = open.find((r) => r.used + len <= seqLen);
      if (!row) {
        if (open.length >= OPEN_ROWS) {
          // Close the fullest open row to make room.
          let fullest = 0;
          for (let r = 1; r < open.length; r++)
            if (open[r]!.used > open[fullest]!.used) fullest = r;
          done.push(open.splice(fullest, 1)[0]!.items);
        }
        row = { items: [], used: 0 };
        open.push(row);
      }
      row.items.push(i);
      row.used += len;
    }
    for (const row of open) done.push(row.items);
    return done;
  }

  /** Sorts windows of the shuffled order by length, cuts them into batches, then shuffles the batches. */
  private groupByLength(order: readonly number[], seed: number): number[][][] {
    const { batchSize } = this.options;
    const window = batchSize * GROUP_WINDOW_BATCHES;
    const batches: number[][][] = [];
    for (let w = 0; w < order.length; w += window) {
      const sorted = order
        .slice(w, w + window)
        .sort((a, b) => this.examples[b]!.ids.length - this.examples[a]!.ids.length || a - b);
      batches.push(
        ...chunk(
          sorted.map((i) => [i]),
          batchSize,
        ),
      );
    }
    const batchOrder = seededPermutation(batches.length, seed);
    return batchOrder.map((b) => batches[b]!);
  }

  private makeBatch(rows: readonly (readonly number[])[]): Batch {
    const { packing, padId, padToMultipleOf } = this.options;
    let seqLen = this.options.seqLen;
    if (!packing) {
      const longest = Math.max(...rows.map((r) => this.examples[r[0]!]!.ids.length));
      seqLen = Math.min(
        this.options.seqLen,
        Math.ceil(longest / padToMultipleOf) * padToMultipleOf,
      );
    }
    const batchSize = rows.length;
    const inputIds = new Int32Array(batchSize * seqLen).fill(padId);
    const labels = new Int32Array(batchSize * seqLen).fill(IGNORE_INDEX);
    const positions = new Int32Array(batchSize * seqLen);
    const segmentIds = new Int32Array(batchSize * seqLen);
    let numLossTokens = 0;
    let numExamples = 0;
    rows.forEach((row, r) => {
      const base = r * seqLen;
      let offset = 0;
      row.forEach((exampleIndex, segment) => {
        const { ids, targets } = this.examples[exampleIndex]!;
        const at = base + offset;
        inputIds.set(ids, at);
        for (let t = 0; t < ids.length; t++) {
          positions[at + t] = t;
          segmentIds[at + t] = segment;
          // Pre-shifted: position t learns the next token when that token is a target.
          if (t + 1 < ids.length && targets[t + 1]) {
            labels[at + t] = ids[t + 1]!;
            numLossTokens++;
          }
        }
        offset += ids.length;
        numExamples++;
      });
      // Padding: its own segment, positions counting from 0, no labels.
      for (let t = offset; t < seqLen; t++) {
        positions[base + t] = t - offset;
        segmentIds[base + t] = row.length;
      }
    });
    return {
      batchSize,
      seqLen,
      inputIds,
      labels,
      positions,
      segmentIds,
      numLossTokens,
      numExamples,
    };
  }
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** A Batcher read in order, with its cursor: saved in checkpoints so a resumed run sees the same data. */
export class BatcherSource {
  private position: DataCursor = { epoch: 0, index: 0 };

  constructor(private readonly batcher: Batcher) {}

  next(): Batch {
    const { batch, cursor } = this.batcher.next(this.position);
    this.position = cursor;
    return batch;
  }

  cursor(): DataCursor {
    return this.position;
  }

  /** Where the stream is, in epochs (1.5 = half-way through the second pass). */
  epoch(): number {
    return this.batcher.epochPosition(this.position);
  }

  restore(cursor: unknown): void {
    const c = cursor as DataCursor;
    if (!c || !Number.isInteger(c.epoch) || !Number.isInteger(c.index))
      throw new Error('checkpoint has an invalid data cursor');
    this.position = { epoch: c.epoch, index: c.index };
  }
}
