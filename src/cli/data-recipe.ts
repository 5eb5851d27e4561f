/**
 * How rows become text for commands that read data with an adapter (eval, generate --data): each
 * part from its flag when given, else as the adapter was trained (its qlora_config.json and
 * chat_template.jinja), else the defaults — so evaluation and prediction see prompts exactly as
 * training rendered them.
 */
import type { Command } from 'commander';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { type ColumnMapping, parseColumnMapping } from '../data/columns.js';
import type { RowFormat } from '../data/formats.js';
import { PromptTemplate, unescapeCommandLine } from '../data/prompt-template.js';
import type { AdapterRecipe } from '../io/adapter-recipe.js';

export interface DataFlags {
  format?: RowFormat | 'auto';
  columns?: string;
  template?: string;
  chatTemplate?: string;
}

export interface DataRecipeOptions {
  readonly format: RowFormat | 'auto';
  readonly columns?: ColumnMapping;
  readonly promptTemplate?: PromptTemplate;
  /** Jinja source; undefined = the tokenizer's own. */
  readonly chatTemplate?: string;
}

export function dataOptionsFor(
  cmd: Command,
  flags: DataFlags,
  recipe: AdapterRecipe | null,
  log: (line: string) => void,
): DataRecipeOptions {
  const given = (key: keyof DataFlags) =>
    cmd.getOptionValueSource(key) === 'cli' && flags[key] !== undefined;
  const d = recipe?.data ?? null;
  const fromRecipe: string[] = [];
  let format: RowFormat | 'auto' = flags.format ?? 'auto';
  let columns = flags.columns !== undefined ? parseColumnMapping(flags.columns) : undefined;
  let template = flags.template !== undefined ? unescapeCommandLine(flags.template) : undefined;
  let chatTemplate =
    flags.chatTemplate !== undefined ? resolveChatTemplate(flags.chatTemplate).source : undefined;
  if (d) {
    // A prompt template fixes the format to completion; take the recipe's format only when neither was given.
    if (!given('format') && !given('template')) {
      format = d.format;
      fromRecipe.push(`format ${d.format}`);
    }
    if (!given('columns') && d.columns) {
      columns = d.columns;
      fromRecipe.push(
        `columns ${Object.entries(d.columns)
          .map(([k, v]) => `${k}=${v}`)
          .join(',')}`,
      );
    }
    if (!given('template') && !given('format') && d.template !== null) {
      template = d.template;
      fromRecipe.push('its prompt template');
    }
  }
  if (!given('chatTemplate') && recipe?.chatTemplate) {
    chatTemplate = recipe.chatTemplate;
    if (format === 'chat' || format === 'auto')
      fromRecipe.push(`chat template ${d?.chatTemplateName ?? "(the model's, as saved)"}`);
  }
  if (fromRecipe.length > 0) log(`data: ${fromRecipe.join(', ')}, as the adapter was trained`);
  return {
    format,
    ...(columns ? { columns } : {}),
    ...(template !== undefined ? { promptTemplate: new PromptTemplate(template) } : {}),
    ...(chatTemplate !== undefined ? { chatTemplate } : {}),
  };
}
