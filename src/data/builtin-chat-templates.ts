/**
 * Chat templates for the common prompt formats, written here as Jinja (rendered by ChatTemplate
 * like a model's own), for models that ship none (base models, llama2.c, many GGUFs) or to train a
 * model into another format. Each is written from the format's published description; every
 * fragment is on its own line only for reading: the lines are joined with nothing between them, and
 * `{%-` strips nothing that the output needs.
 *
 * Conventions shared by all: `messages` with roles system / user / assistant; bos_token / eos_token
 * are the model's; add_generation_prompt appends the assistant header. Formats without a system
 * role (Mistral, Gemma) put the system message at the top of the first user turn.
 */

const join = (...lines: string[]): string => lines.join('');

/** OpenAI ChatML (Qwen, SmolLM, many fine-tunes): <|im_start|>role\ncontent<|im_end|>\n. */
const CHATML = join(
  '{%- for message in messages %}',
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}",
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}",
);

/** Llama 3 / 3.1 / 3.2 instruct: header ids around the role, content trimmed, <|eot_id|> after each turn. */
const LLAMA3 = join(
  '{{- bos_token }}',
  '{%- for message in messages %}',
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}",
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
);

/** Mistral instruct (v0.2 style): <s>[INST] user [/INST]assistant</s>, roles alternating, no generation header. */
const MISTRAL = join(
  '{{- bos_token }}',
  "{%- if messages[0]['role'] == 'system' %}",
  "{%- set system_prefix = messages[0]['content'] + '\\n\\n' %}{%- set loop_messages = messages[1:] %}",
  '{%- else %}',
  "{%- set system_prefix = '' %}{%- set loop_messages = messages %}",
  '{%- endif %}',
  '{%- for message in loop_messages %}',
  "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}",
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
  '{%- endif %}',
  "{%- if message['role'] == 'user' %}",
  "{%- if loop.first %}{{ '[INST] ' + system_prefix + message['content'] + ' [/INST]' }}",
  "{%- else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}",
  '{%- else %}',
  "{{ message['content'] + eos_token }}",
  '{%- endif %}',
  '{%- endfor %}',
);

/** Zephyr, as TinyLlama-1.1B-Chat uses it: <|role|>\ncontent</s>\n. */
const ZEPHYR = join(
  '{%- for message in messages %}',
  "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}",
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}",
);

/** Phi-3 instruct: <|role|>\ncontent<|end|>\n, and eos_token after a finished conversation. */
const PHI3 = join(
  '{%- for message in messages %}',
  "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}",
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- else %}{{ eos_token }}{%- endif %}",
);

/** Gemma instruct: <start_of_turn>user|model\ncontent<end_of_turn>\n, roles alternating. */
const GEMMA = join(
  '{{- bos_token }}',
  "{%- if messages[0]['role'] == 'system' %}",
  "{%- set system_prefix = messages[0]['content'] + '\\n\\n' %}{%- set loop_messages = messages[1:] %}",
  '{%- else %}',
  "{%- set system_prefix = '' %}{%- set loop_messages = messages %}",
  '{%- endif %}',
  '{%- for message in loop_messages %}',
  "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}",
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}",
  '{%- endif %}',
  "{%- if message['role'] == 'assistant' %}{%- set role = 'model' %}{%- else %}{%- set role = message['role'] %}{%- endif %}",
  "{%- if loop.first %}{%- set prefix = system_prefix %}{%- else %}{%- set prefix = '' %}{%- endif %}",
  "{{ '<start_of_turn>' + role + '\\n' + prefix + message['content'] | trim + '<end_of_turn>\\n' }}",
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}",
);

/**
 * Stanford Alpaca's prompt as a chat: the preamble (or the system message in its place), then
 * "### Instruction:" / "### Response:" blocks. One user turn and its reply render byte for byte as
 * the Alpaca row format does (src/data/alpaca.ts), followed by eos_token.
 */
const ALPACA = join(
  "{%- if messages[0]['role'] == 'system' %}",
  "{{ messages[0]['content'] + '\\n\\n' }}{%- set loop_messages = messages[1:] %}",
  '{%- else %}',
  "{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\\n\\n' }}",
  '{%- set loop_messages = messages %}',
  '{%- endif %}',
  '{%- for message in loop_messages %}',
  "{%- if message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}",
  "{%- elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}",
  '{%- endif %}',
  '{%- endfor %}',
  "{%- if add_generation_prompt %}{{ '### Response:\\n' }}{%- endif %}",
);

/** Built-in templates by name. */
export const BUILTIN_CHAT_TEMPLATES: Readonly<Record<string, string>> = {
  chatml: CHATML,
  'llama-3': LLAMA3,
  mistral: MISTRAL,
  zephyr: ZEPHYR,
  'phi-3': PHI3,
  gemma: GEMMA,
  alpaca: ALPACA,
};

/** Other names people use for the same formats. */
const ALIASES: Readonly<Record<string, string>> = {
  llama3: 'llama-3',
  'llama-3.1': 'llama-3',
  'llama-3.2': 'llama-3',
  tinyllama: 'zephyr',
  phi3: 'phi-3',
  qwen: 'chatml',
  qwen2: 'chatml',
};

/**
 * The built-in template `name` (or an alias) stands for, or null when it is none. Own keys only:
 * `in` or a plain lookup would take 'toString' or 'constructor' for a template.
 */
export function builtinChatTemplate(name: string): { name: string; source: string } | null {
  const lower = name.toLowerCase();
  const key = Object.hasOwn(ALIASES, lower) ? ALIASES[lower] : lower;
  if (key === undefined || !Object.hasOwn(BUILTIN_CHAT_TEMPLATES, key)) return null;
  const source = BUILTIN_CHAT_TEMPLATES[key];
  return source === undefined ? null : { name: key, source };
}
