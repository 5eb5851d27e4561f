/**
 * Your own data → training batches. Typical use:
 *   const data = await loadDataset(path, tokenizer, { maxSeqLen: 512 });
 *   const batches = new Batcher(data.train, { batchSize: 8, seqLen: 512, padId, seed });
 *   const { batch, cursor } = batches.next({ epoch: 0, index: 0 });
 */
export {
  loadDataset,
  holdOut,
  type DatasetOptions,
  type LoadedDataset,
  type SplitStats,
} from './dataset.js';
export {
  Batcher,
  IGNORE_INDEX,
  type Batch,
  type BatcherOptions,
  type DataCursor,
} from './batching.js';
export { ChatTemplate, type ChatMessage } from './chat-template.js';
export type { DatasetRows } from './sources.js';
export { parseColumnMapping, type ColumnMapping } from './columns.js';
export { DatasetError, RowError, UnknownFormatError, type SourceLocation } from './errors.js';
export { RowRenderer, ROW_FORMATS, type RowFormat, type RenderedExample } from './formats.js';
export { inspectReport, renderMasked, BRACKET_STYLE, DIM_STYLE } from './inspect.js';
export { PromptTemplate, unescapeCommandLine } from './prompt-template.js';
export { tokenizeExample, countTargets, type TokenizedExample } from './tokenize.js';
export { TRUNCATION_POLICIES, type TruncationPolicy } from './truncate.js';
