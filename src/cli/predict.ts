/**
 * `qlora generate --data FILE [--split test] -o preds.jsonl`: a prediction for every row of a
 * dataset, its prompt rendered as training rendered it (the adapter's format, columns, prompt and
 * chat template), one JSON line per row with the prompt, the prediction and the reference when the
 * row has one. The output file appears only once every row is done (written atomically).
 */
import path from 'node:path';
import { ChatTemplate } from '../data/chat-template.js';
import { RowError } from '../data/errors.js';
import { RowRenderer } from '../data/formats.js';
import { readSplit, resolveSources, type SplitName } from '../data/sources.js';
import { generate, type GenerateOptions } from '../generate/generate.js';
import { AtomicFileWriter } from '../io/atomic-write.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { DataRecipeOptions } from './data-recipe.js';
import { ProgressLine } from './progress.js';

export interface PredictOptions {
  readonly data: string;
  /** Which split of a folder dataset; default: test, else valid, else train. */
  readonly split?: SplitName;
  /** JSONL file to write; null = stdout. */
  readonly output: string | null;
  readonly recipe: DataRecipeOptions;
  readonly generation: GenerateOptions;
  /** Model context: prompts longer than this minus maxTokens are an error naming the row. */
  readonly contextLength: number;
}

export async function predictDataset(
  model: CausalLM,
  tokenizer: Tokenizer,
  o: PredictOptions,
  log: (line: string) => void,
): Promise<number> {
  const sources = await resolveSources(o.data);
  const available = (['test', 'valid', 'train'] as const).filter((s) =>
    s === 'train' ? true : sources[s] !== undefined,
  );
  const split = o.split ?? available[0] ?? 'train';
  const files = split === 'train' ? sources.train : sources[split];
  if (!files) throw new Error(`${o.data}: no '${split}' split (it has: ${available.join(', ')})`);
  const renderer = new RowRenderer({
    format: o.recipe.format,
    columns: o.recipe.columns,
    promptTemplate: o.recipe.promptTemplate,
    chatTemplate: () => {
      const source = o.recipe.chatTemplate ?? tokenizer.chatTemplate;
      return source
        ? new ChatTemplate(source, { bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken })
        : null;
    },
  });
  const maxTokens = o.generation.maxTokens ?? 256;
  const writer = o.output !== null ? new AtomicFileWriter(path.resolve(o.output)) : null;
  const emit = (line: string) => (writer ? writer.write(line) : process.stdout.write(line));
  const arena = model.backend.createArena(1 << 22, 'predict');
  const progress = new ProgressLine();
  let rows = 0;
  try {
    for await (const raw of readSplit(files)) {
      if (raw.error) throw raw.error;
      const { prompt, reference, bos } = renderer.renderPrompt(raw.value, raw.location);
      let ids = tokenizer.encode(prompt, { addSpecialTokens: false });
      if (bos && tokenizer.addBos && tokenizer.bosId !== null && ids[0] !== tokenizer.bosId)
        ids = [tokenizer.bosId, ...ids];
      if (ids.length + maxTokens > o.contextLength) {
        throw new RowError(
          `the prompt has ${ids.length} tokens: with --max-tokens ${maxTokens} that exceeds the model's context of ${o.contextLength}`,
          raw.location,
        );
      }
      arena.reset();
      const r = await generate(model, tokenizer, ids, arena, o.generation);
      emit(
        `${JSON.stringify({ prompt, prediction: r.text, ...(reference !== null ? { reference } : {}) })}\n`,
      );
      rows++;
      progress.update(`${split}: ${rows} rows predicted`);
    }
    writer?.commit();
  } catch (err) {
    writer?.abort();
    throw err;
  } finally {
    progress.done();
    arena.dispose();
  }
  log(`predicted ${rows} rows of ${o.data} (${split})${o.output !== null ? ` → ${o.output}` : ''}`);
  return rows;
}
