/**
 * `qlora export -a RUN --format recipe --to axolotl|trl -o DIR`: the run recorded in a training
 * output folder (config.yaml: every resolved setting; qlora_config.json: the base and how rows
 * became text) written for another trainer (src/export/recipe.ts), with its dataset rendered as
 * training rendered it (src/export/recipe-data.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { ChatTemplate } from '../data/chat-template.js';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { parseColumnMapping } from '../data/columns.js';
import { RowError } from '../data/errors.js';
import { type RenderedExample, RowRenderer } from '../data/formats.js';
import { PromptTemplate } from '../data/prompt-template.js';
import { readSplit, resolveSources, type SplitFiles } from '../data/sources.js';
import {
  type HandOffRowKind,
  type SpecialTokens,
  handOffRow,
  removeIfPresent,
  rowKindFor,
  wholeDocuments,
  writeJsonl,
} from '../export/recipe-data.js';
import {
  type HandOffRun,
  RECIPE_TARGETS,
  type RecipeTarget,
  accelerateFsdpConfig,
  axolotlConfig,
  handOffWarnings,
  trlScript,
} from '../export/recipe.js';
import { readAdapterRecipe } from '../io/adapter-recipe.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { loadTokenizer, tokenizerPathFor } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { TrainSettings } from '../train/settings.js';
import { VERSION } from '../version.js';
import { resolveModelLocally } from './base-options.js';
import { localDataPath } from './hub-args.js';
import { RECIPE_FILE as RUN_CONFIG } from './recipe.js';
import { readConfigFile, resolveTrainConfig } from './train-config.js';

export const AXOLOTL_FILE = 'axolotl.yaml';
export const AXOLOTL_FSDP_FILE = 'axolotl-fsdp.yaml';
export const TRL_FILE = 'train_trl.py';
export const ACCELERATE_FSDP_FILE = 'accelerate_fsdp.yaml';
export const DATA_DIR = 'data';

function writeText(file: string, text: string): void {
  const bytes = new TextEncoder().encode(text);
  writeFileAtomic(file, (fd) => writeAll(fd, bytes));
}

/**
 * Python's YAML (PyYAML, YAML 1.1: what axolotl and accelerate read with) takes `1e-8` for a string;
 * a float needs a dot. So numbers the writer put in exponent form are written out in decimals (a
 * plain scalar in that form can only be a number: a string that looks like one is quoted).
 */
export function pyYaml(value: unknown): string {
  return YAML.stringify(value, { lineWidth: 0 }).replace(
    /^(\s*(?:- |[\w.-]+: )(?:- )?)(-?\d+(?:\.\d+)?e[-+]?\d+)$/gm,
    (_m, lead: string, num: string) => lead + decimal(num),
  );
}

/** A number's exponent form (as JS prints it: the shortest that reads back exactly) in decimals. */
export function decimal(text: string): string {
  const [mantissa = '', exponent = '0'] = text.toLowerCase().split('e');
  const negative = mantissa.startsWith('-');
  const [int = '', frac = ''] = (negative ? mantissa.slice(1) : mantissa).split('.');
  const digits = int + frac;
  const point = int.length + Number(exponent);
  const out =
    point <= 0
      ? `0.${'0'.repeat(-point)}${digits}`
      : point >= digits.length
        ? `${digits}${'0'.repeat(point - digits.length)}.0`
        : `${digits.slice(0, point)}.${digits.slice(point)}`;
  return (negative ? '-' : '') + out;
}

function yamlText(header: string, value: unknown): string {
  return `${header}\n${pyYaml(value)}`;
}

/** The settings of a training output folder, as config.yaml records them. */
export function readRunSettings(runDir: string): {
  settings: TrainSettings;
  model: string;
  data: string;
  split: string | undefined;
  ggufFile: string | undefined;
} {
  const file = path.join(runDir, RUN_CONFIG);
  if (!fs.existsSync(file))
    throw new Error(
      `${file}: not found; --format recipe takes the output folder of a qlora train run (-a RUN), which holds ${RUN_CONFIG}`,
    );
  const { values, keys } = readConfigFile(file);
  const config = resolveTrainConfig(values, file, keys);
  const {
    model,
    data,
    output: _o,
    split,
    ggufFile,
    samplePrompt: _s,
    sampleTokens: _t,
    ...settings
  } = config;
  return { settings, model, data, split, ggufFile };
}

/** Every row of a split rendered as training rendered it (bad rows skipped only if training skipped them). */
async function* renderedRows(
  files: SplitFiles,
  renderer: RowRenderer,
  settings: TrainSettings,
): AsyncGenerator<RenderedExample> {
  for await (const raw of readSplit(files, {}, { maxRowBytes: settings.maxRowBytes })) {
    try {
      if (raw.error) throw raw.error;
      yield renderer.render(raw.value, raw.location);
    } catch (err) {
      if (!(err instanceof RowError) || !settings.skipBadRows) throw err;
    }
  }
}

/**
 * axolotl's segment rows are concatenated as they are, so BOS/EOS go in as text; the TRL script
 * adds them as token ids the way qlora-ts does (BOS when the tokenizer adds one and the text does
 * not start with it), which keeps SentencePiece's start-of-text handling identical.
 */
function specialTokensFor(target: RecipeTarget, tokenizer: Tokenizer): SpecialTokens {
  if (target === 'trl') return { bos: null, eos: null };
  return { bos: tokenizer.addBos ? tokenizer.bosToken : null, eos: tokenizer.eosToken };
}

async function* asRows(
  examples: AsyncIterable<RenderedExample>,
  kind: () => HandOffRowKind,
  special: SpecialTokens,
): AsyncGenerator<Record<string, unknown>> {
  for await (const ex of wholeDocuments(examples)) yield handOffRow(kind(), ex, special);
}

export interface RecipeExportResult {
  readonly files: string[];
  readonly warnings: string[];
  readonly rows: { train: number; valid: number | null };
  readonly rowKind: HandOffRowKind;
}

export async function exportRecipe(
  runDir: string,
  target: RecipeTarget,
  out: string,
): Promise<RecipeExportResult> {
  if (!RECIPE_TARGETS.includes(target))
    throw new Error(`--to must be one of ${RECIPE_TARGETS.join(', ')} (got '${target}')`);
  const { settings, model, data, split, ggufFile } = readRunSettings(runDir);
  const recipe = readAdapterRecipe(runDir);
  // The Hub id when the run had one (it works on the other machine); else the local path.
  const baseModel = recipe?.baseModelPath ?? model;
  const modelPath = await resolveModelLocally(
    recipe?.baseModelPath ? undefined : model,
    runDir,
    recipe,
    ggufFile,
  );
  const ck = openCheckpoint(modelPath);
  const config = ck.config;
  ck.close();
  const tokenizer = loadTokenizer(settings.tokenizer ?? tokenizerPathFor(modelPath), {
    vocabSize: config.vocabSize,
  });

  const dataPath = fs.existsSync(data)
    ? data
    : await localDataPath(data, split !== undefined ? { split } : {});
  const sources = await resolveSources(dataPath, split !== undefined ? { split } : {});
  const chatSource =
    recipe?.chatTemplate ??
    (settings.chatTemplate !== undefined
      ? resolveChatTemplate(settings.chatTemplate).source
      : null) ??
    tokenizer.chatTemplate;
  const renderer = new RowRenderer({
    format: recipe?.data?.format ?? settings.format,
    ...(settings.columns ? { columns: parseColumnMapping(settings.columns) } : {}),
    ...(settings.template ? { promptTemplate: new PromptTemplate(settings.template) } : {}),
    chatTemplate: () =>
      chatSource
        ? new ChatTemplate(chatSource, {
            bosToken: tokenizer.bosToken,
            eosToken: tokenizer.eosToken,
          })
        : null,
    trainOnPrompt: settings.trainOnPrompt,
  });
  // The format is fixed by the first row when the run detected it.
  const kind = () => rowKindFor(renderer.format ?? 'text', settings.trainOnPrompt);

  const special = specialTokensFor(target, tokenizer);
  const validFiles = sources.valid;
  checkOutputFolder(out, target);
  const created = !fs.existsSync(out);
  try {
    return await writeHandOff(out, target, {
      settings,
      baseModel,
      architecture: config.architecture,
      runDir,
      dataPath,
      train: () => asRows(renderedRows(sources.train, renderer, settings), kind, special),
      valid: validFiles
        ? () => asRows(renderedRows(validFiles, renderer, settings), kind, special)
        : null,
      kind,
    });
  } catch (e) {
    // A folder this export made goes with the failure; files written are whole or absent.
    if (created) fs.rmSync(out, { recursive: true, force: true });
    throw e;
  }
}

/** The files each target writes (besides data/ and README.md): a re-export may replace them. */
const TARGET_FILES: Record<RecipeTarget, readonly string[]> = {
  axolotl: [AXOLOTL_FILE, AXOLOTL_FSDP_FILE],
  trl: [TRL_FILE, ACCELERATE_FSDP_FILE],
};

/**
 * The output folder is new, empty, or an earlier export for the same trainer: the data rows differ
 * per trainer (BOS/EOS as text for axolotl only), so two trainers' files never share a folder.
 */
function checkOutputFolder(out: string, target: RecipeTarget): void {
  if (!fs.existsSync(out)) return;
  if (!fs.statSync(out).isDirectory()) throw new Error(`${out}: exists and is not a folder`);
  const mine = new Set([DATA_DIR, 'README.md', ...TARGET_FILES[target]]);
  const other = fs
    .readdirSync(out)
    .filter((f) => !mine.has(f))
    .sort();
  if (other.length > 0)
    throw new Error(
      `${out}: not empty (${other.slice(0, 3).join(', ')}${other.length > 3 ? ', …' : ''}); give a new folder for the ${target} recipe`,
    );
}

interface HandOffSource {
  readonly settings: TrainSettings;
  readonly baseModel: string;
  readonly architecture: HandOffRun['architecture'];
  readonly runDir: string;
  readonly dataPath: string;
  readonly train: () => AsyncIterable<Record<string, unknown>>;
  readonly valid: (() => AsyncIterable<Record<string, unknown>>) | null;
  readonly kind: () => HandOffRowKind;
}

async function writeHandOff(
  out: string,
  target: RecipeTarget,
  src: HandOffSource,
): Promise<RecipeExportResult> {
  const { settings, baseModel, runDir, dataPath, kind } = src;
  fs.mkdirSync(path.join(out, DATA_DIR), { recursive: true });
  const trainFile = `${DATA_DIR}/train.jsonl`;
  const validFile = `${DATA_DIR}/valid.jsonl`;
  const trainRows = await writeJsonl(path.join(out, trainFile), src.train());
  if (trainRows === 0) throw new Error(`${dataPath}: the training data has no rows`);
  let validRows: number | null = null;
  if (src.valid) validRows = await writeJsonl(path.join(out, validFile), src.valid());
  else removeIfPresent(path.join(out, validFile));

  const run: HandOffRun = {
    baseModel,
    architecture: src.architecture,
    settings,
    rowKind: kind(),
    trainFile,
    validFile: validRows !== null ? validFile : null,
    sourceRun: path.resolve(runDir),
  };
  const header = `# The qlora-ts run in ${run.sourceRun}, for ${target} (qlora export --format recipe, qlora-ts ${VERSION}).`;
  const files = [trainFile, ...(run.validFile ? [run.validFile] : [])];
  if (target === 'axolotl') {
    writeText(path.join(out, AXOLOTL_FILE), yamlText(header, axolotlConfig(run)));
    writeText(
      path.join(out, AXOLOTL_FSDP_FILE),
      yamlText(
        `${header}\n# FSDP (version 2) over the GPUs of the machine.`,
        axolotlConfig(run, true),
      ),
    );
    files.push(AXOLOTL_FILE, AXOLOTL_FSDP_FILE);
  } else {
    writeText(path.join(out, TRL_FILE), trlScript(run));
    fs.chmodSync(path.join(out, TRL_FILE), 0o755);
    writeText(
      path.join(out, ACCELERATE_FSDP_FILE),
      yamlText(
        `${header}\n# FSDP-QLoRA with accelerate: set num_processes to the number of GPUs.`,
        accelerateFsdpConfig(run),
      ),
    );
    files.push(TRL_FILE, ACCELERATE_FSDP_FILE);
  }
  const warnings = handOffWarnings(run);
  writeText(path.join(out, 'README.md'), readme(run, target, warnings));
  files.push('README.md');
  return { files, warnings, rows: { train: trainRows, valid: validRows }, rowKind: run.rowKind };
}

function readme(run: HandOffRun, target: RecipeTarget, warnings: readonly string[]): string {
  const rows = {
    text: '`{"text"}` rows (loss on every token)',
    'prompt-completion':
      '`{"prompt", "completion"}` rows (the prompt rendered as qlora-ts rendered it; loss on the completion)',
    segments:
      '`{"segments": [{"label", "text"}]}` rows (the chat rendered with its template; `label: true` pieces carry loss; BOS/EOS written out)',
  }[run.rowKind];
  const how =
    target === 'axolotl'
      ? `One GPU (or DDP):

\`\`\`sh
axolotl train ${AXOLOTL_FILE}
\`\`\`

Several GPUs with FSDP-QLoRA (the base sharded across them):

\`\`\`sh
axolotl train ${AXOLOTL_FSDP_FILE}
\`\`\``
      : `One GPU:

\`\`\`sh
python ${TRL_FILE}
\`\`\`

Several GPUs with FSDP-QLoRA (set \`num_processes\` in ${ACCELERATE_FSDP_FILE} to the number of GPUs):

\`\`\`sh
accelerate launch --config_file ${ACCELERATE_FSDP_FILE} ${TRL_FILE}
\`\`\`

A quick check without a GPU or bitsandbytes: \`python ${TRL_FILE} --no-4bit --cpu --max-steps 3\`;
\`python ${TRL_FILE} --print-config\` prints the arguments it passes to transformers, PEFT and TRL.
The adapter is written to \`trl-output/\` (\`--output-dir\`).`;
  return `# ${run.baseModel}: a qlora-ts run for ${target === 'axolotl' ? 'axolotl' : 'TRL + PEFT'}

Written by \`qlora export --format recipe --to ${target}\` (qlora-ts ${VERSION}) from ${run.sourceRun}.

${how}

The data is in \`${DATA_DIR}/\` as ${rows}.
${run.validFile ? 'The validation split is its own file, as the run had it.' : `The run held out ${run.settings.validFraction} of the rows for validation, seeded; the other trainer holds out the same fraction with its own shuffle.`}
The result is a PEFT adapter: \`qlora generate -m ${run.baseModel} -a ADAPTER_FOLDER --quant ${run.settings.quant}\` runs it
(an adapter trained on a 4-bit base by bitsandbytes runs best on the same 4-bit base).
${warnings.length > 0 ? `\nNot carried over:\n\n${warnings.map((w) => `- ${w}`).join('\n')}\n` : ''}`;
}
