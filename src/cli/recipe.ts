/**
 * What `qlora train` adds to an output folder beyond the adapter (src/io/model-name.ts names the
 * base): the resolved settings as a `config.yaml` that `qlora train --config` reads back, and a
 * short model card (README.md).
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import { VERSION } from '../version.js';
import type { TrainConfig } from './train-config.js';

export const RECIPE_FILE = 'config.yaml';
export const MODEL_CARD_FILE = 'README.md';

/** Settings that steer this invocation, not the recipe: left out of config.yaml. */
const NOT_RECIPE = new Set(['resume', 'overwrite']);
/** Settings that are paths: written absolute, so the file works from the output folder. */
const PATHS = new Set(['model', 'data', 'output', 'tokenizer']);

function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The resolved settings of a run as YAML that `qlora train --config` reads back to the same settings. */
export function trainConfigYaml(config: TrainConfig): string {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (NOT_RECIPE.has(key) || value === undefined) continue;
    out[snake(key)] = PATHS.has(key) && typeof value === 'string' ? path.resolve(value) : value;
  }
  return (
    `# The settings of this run, resolved (defaults included), written by qlora-ts ${VERSION}.\n` +
    `# Run it again: qlora train --config ${RECIPE_FILE} -o NEW_FOLDER\n` +
    YAML.stringify(out, { lineWidth: 0 })
  );
}

/** The base model path recorded in an adapter folder's config.yaml, when it still exists here. */
export function recipeModelPath(adapterDir: string): string | null {
  try {
    const parsed = YAML.parse(fs.readFileSync(path.join(adapterDir, RECIPE_FILE), 'utf8')) as {
      model?: unknown;
    } | null;
    return typeof parsed?.model === 'string' && fs.existsSync(parsed.model) ? parsed.model : null;
  } catch {
    return null;
  }
}

export interface ModelCardFacts {
  readonly config: TrainConfig;
  readonly baseName: string;
  readonly format: string;
  readonly trainExamples: number;
  readonly validExamples: number;
  readonly steps: number;
  readonly tokens: number;
  readonly lossTokens: number;
  readonly finalTrainLoss: number | null;
  readonly finalEvalLoss: number | null;
  readonly finalEvalStep: number | null;
  readonly bestStep: number | null;
  readonly bestEvalLoss: number | null;
  readonly stoppedBy: string;
}

const fmt = (x: number | null, digits = 4) =>
  x === null || !Number.isFinite(x) ? 'n/a' : x.toFixed(digits);

/** A short model card in the Hugging Face layout (YAML front matter + Markdown). */
export function modelCard(f: ModelCardFacts): string {
  const c = f.config;
  const dir = path.resolve(c.output);
  const base =
    c.quant === 'none'
      ? 'full precision'
      : `${c.quant.toUpperCase()}, block ${c.blocksize}${c.doubleQuant ? ', double quant' : ''}`;
  const targets = c.targets === 'all-linear' ? 'all linear projections' : c.targets.join(', ');
  const length =
    c.epochs !== undefined ? `${f.steps} steps (${c.epochs} epochs)` : `${f.steps} steps`;
  const evalLine =
    f.finalEvalLoss === null
      ? 'no evaluation'
      : `${fmt(f.finalEvalLoss)} at step ${f.finalEvalStep}`;
  const best =
    c.loadBest && f.bestStep !== null
      ? `\n| adapter weights | step ${f.bestStep}, the lowest eval loss (${fmt(f.bestEvalLoss)}; \`--load-best\`) |`
      : '';
  return `---
base_model: ${JSON.stringify(f.baseName)}
library_name: peft
tags:
  - lora
  - qlora
  - qlora-ts
---

# LoRA adapter for ${f.baseName}

Trained with [qlora-ts](https://www.npmjs.com/package/qlora-ts) ${VERSION}: the base quantized to ${base},
LoRA r=${c.rank}, alpha=${c.alpha}${c.rslora ? ' (rsLoRA)' : ''}, dropout ${c.dropout} on ${targets}.

| | |
|---|---|
| base model | ${f.baseName} |
| data | ${path.basename(c.data)} (${f.format} format, ${f.trainExamples} training examples, ${f.validExamples} validation) |
| training | ${length}, ${c.batchSize} × ${c.seqLen} tokens per micro-batch × ${c.gradAccum} accumulation, lr ${c.lr} ${c.schedule}, ${c.optimizer}, seed ${c.seed} |
| tokens | ${f.tokens} processed, ${f.lossTokens} with loss |
| final train loss | ${fmt(f.finalTrainLoss)} |
| eval loss | ${evalLine} |${best}
| stopped by | ${f.stoppedBy} |

Every setting is in [\`${RECIPE_FILE}\`](${RECIPE_FILE}); \`qlora train --config ${RECIPE_FILE} -o NEW_FOLDER\` runs it again.
The loss curve is \`loss.svg\`; each step and evaluation is in \`metrics.jsonl\` (Hugging Face Trainer names).

## Use

With qlora-ts:

\`\`\`sh
qlora generate -m ${c.model} -a ${dir} -p "..."
\`\`\`

With PEFT (Python):

\`\`\`python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained("${f.baseName}")
model = PeftModel.from_pretrained(base, "${dir}")
\`\`\`

With llama.cpp (a GGUF LoRA adapter on a GGUF base):

\`\`\`sh
qlora export -m ${c.model} -a ${dir} --format gguf-lora -o adapter.gguf
llama-cli -m base.gguf --lora adapter.gguf -p "..."
\`\`\`
`;
}

/** Writes config.yaml and README.md into the output folder (temp + rename: never through a symlink). */
export function writeRecipe(dir: string, config: TrainConfig, card: string): void {
  for (const [name, text] of [
    [RECIPE_FILE, trainConfigYaml(config)],
    [MODEL_CARD_FILE, card],
  ] as const) {
    const bytes = new TextEncoder().encode(text);
    writeFileAtomic(path.join(dir, name), (fd) => writeAll(fd, bytes));
  }
}
