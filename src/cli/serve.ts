/**
 * `qlora serve -m M [-a NAME=ADAPTER ...]`: the OpenAI-compatible server (src/serve) on 127.0.0.1.
 * The base is loaded once, on the 4-bit settings the adapters were trained on (their
 * qlora_config.json, which must agree) unless --quant says otherwise; each adapter is a model name.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import {
  BACKEND_CHOICES,
  type BackendChoice,
  COMPUTE_DTYPE_CHOICES,
  type ComputeDtypeChoice,
} from '../backends/index.js';
import { resolveChatTemplate } from '../data/chat-template-source.js';
import { describeBase } from '../io/adapter-recipe.js';
import { type AdapterSpec, ModelRegistry } from '../serve/models.js';
import { DEFAULT_MAX_BODY_BYTES, OpenAiServer } from '../serve/server.js';
import {
  addBaseOptions,
  type BaseFlags,
  buildOptionsOf,
  chooseBase,
  resolveModelPath,
} from './base-options.js';
import { loadModel } from '../load/load-model.js';
import { isHubModelId, localModelPath } from './hub-args.js';
import { choiceOption, collect, intOption } from './options.js';

interface ServeFlags extends BaseFlags {
  model?: string;
  tokenizer?: string;
  adapter: string[];
  name?: string;
  port: number;
  chatTemplate?: string;
  backend: BackendChoice;
  computeDtype: ComputeDtypeChoice;
  maxRequestBytes: number;
}

/** NAME=PATH, or PATH alone (named after its folder or file). */
export function parseAdapterSpec(spec: string): AdapterSpec {
  const eq = spec.indexOf('=');
  if (eq > 0) return { name: spec.slice(0, eq), path: spec.slice(eq + 1) };
  if (eq === 0) throw new Error(`--adapter '${spec}': give NAME=PATH or a path`);
  const name = path.basename(path.resolve(spec)).replace(/\.gguf$/, '');
  return { name, path: spec };
}

export function registerServeCommand(program: Command): void {
  const cmd = program
    .command('serve')
    .description(
      'OpenAI-compatible HTTP server on 127.0.0.1: /v1/chat/completions, /v1/completions, /v1/models; each adapter is a model name over one loaded base',
    )
    .option(
      '-m, --model <path>',
      'base model: HF folder, .gguf, llama2.c .bin or a Hub id org/name[@revision] (default: the base the adapters were trained on)',
    )
    .option('--tokenizer <path>', 'tokenizer (default: the one next to the model)')
    .option(
      '-a, --adapter <name=path>',
      'a LoRA adapter served as model NAME (PEFT folder or GGUF LoRA; repeatable; loaded on first use)',
      collect,
      [],
    )
    .option('--name <name>', "the base model's name (default: its file or folder name)")
    .option(
      '-p, --port <n>',
      'port (default 8000; 0 picks a free one)',
      intOption('--port', 0),
      8000,
    )
    .option(
      '--chat-template <file|name>',
      "chat template for every model: a Jinja file, a tokenizer_config.json or a built-in (chatml, llama-3, mistral, zephyr, phi-3, gemma, alpaca); default: the adapter's, else the model's",
    )
    .option(
      '--backend <name>',
      'compute backend: cpu, webgpu (GPU), auto (a hardware GPU when present, else cpu) or ref',
      choiceOption('--backend', BACKEND_CHOICES),
      'cpu',
    )
    .option(
      '--compute-dtype <type>',
      'auto (default: bf16 where the CPU has AVX512_BF16, else f32; as generate), bf16, f32 or f16: precision of the frozen-base matmuls, f32 accumulation (bf16: cpu with AVX512_BF16; f16: webgpu with shader-f16)',
      choiceOption('--compute-dtype', COMPUTE_DTYPE_CHOICES),
      'auto',
    )
    .option(
      '--max-request-bytes <n>',
      'largest request body accepted (413 beyond it)',
      intOption('--max-request-bytes', 1024),
      DEFAULT_MAX_BODY_BYTES,
    );
  addBaseOptions(cmd);
  cmd.action(async (flags: ServeFlags) => {
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const adapters = flags.adapter.map(parseAdapterSpec);
    for (const a of adapters)
      if (!fs.existsSync(a.path))
        throw new Error(`--adapter ${a.name}=${a.path}: no such file or folder`);
    // Each adapter's recorded base; one base is loaded, so those that record one must agree (or --quant decides).
    const choices = adapters
      .map((a) => ({ a, ...chooseBase(cmd, flags, a.path, () => {}) }))
      .filter((c) => c.recipe !== null);
    const first = choices[0] ?? { a: undefined, ...chooseBase(cmd, flags, undefined, log) };
    for (const c of choices.slice(1)) {
      if (JSON.stringify(c.base) !== JSON.stringify(first.base))
        throw new Error(
          `the adapters were trained on different bases (${first.a!.name}: ${describeBase(first.base)}; ${c.a.name}: ${describeBase(c.base)}); one base is loaded: pass --quant to choose it`,
        );
    }
    const modelSpec = resolveModelPath(
      flags.model,
      first.a?.path ?? adapters[0]?.path,
      first.recipe,
    );
    // A Hub id is served from its snapshot in the Hugging Face cache, under its own name.
    const hubName = isHubModelId(modelSpec) ? modelSpec.split('@')[0]! : null;
    const modelPath = await localModelPath(
      modelSpec,
      flags.ggufFile !== undefined ? { ggufFile: flags.ggufFile } : {},
    );
    const chatTemplate = flags.chatTemplate ? resolveChatTemplate(flags.chatTemplate) : null;
    log(`base: ${modelPath}, ${describeBase(first.base)}`);
    const { model, tokenizer, checkpoint } = await loadModel({
      model: modelPath,
      tokenizer: flags.tokenizer,
      backend: flags.backend,
      computeDtype: flags.computeDtype,
      ...buildOptionsOf(first.base),
    });
    const baseName =
      flags.name ??
      (hubName !== null && flags.ggufFile === undefined
        ? hubName
        : path.basename(path.resolve(modelPath)).replace(/\.(gguf|bin)$/, ''));
    const registry = new ModelRegistry({
      base: model,
      baseName,
      config: checkpoint.config,
      tokenizer,
      adapters,
      chatTemplate,
    });
    const server = new OpenAiServer({ registry, maxBodyBytes: flags.maxRequestBytes, log });
    const url = await server.listen(flags.port);
    console.log(`qlora serve: ${url}/v1 (models: ${registry.names().join(', ')}; Ctrl-C stops)`);
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        void server.close().then(resolve);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  });
}
