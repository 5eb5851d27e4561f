/**
 * The Stanford Alpaca prompt (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), byte for byte.
 * The model learns the response that follows "### Response:\n".
 * As in the original, an empty `input` (exactly "") selects the shorter prompt.
 */
const HEAD_WITH_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n';
const HEAD_WITHOUT_INPUT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n';

export function alpacaPrompt(instruction: string, input: string): string {
  if (input === '')
    return `${HEAD_WITHOUT_INPUT}### Instruction:\n${instruction}\n\n### Response:\n`;
  return `${HEAD_WITH_INPUT}### Instruction:\n${instruction}\n\n### Input:\n${input}\n\n### Response:\n`;
}
