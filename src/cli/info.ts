import { GGUF_FILE_HELP, localModelPath } from './hub-args.js';
import type { Command } from 'commander';
import { type BuildConfig, projectionHasBias } from '../models/build.js';
import { familyOf, tensorTable } from '../models/registry.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { loadTokenizer, tokenizerPathFor } from '../tokenizer/index.js';
import { formatBytes, formatCount } from './options.js';
import { loadModel } from '../load/load-model.js';
import { PROJECTIONS } from '../models/llama.js';
import type { Linear4bit } from '../nn/linear.js';

/** Parameter counts by kind, from the config alone (no weights are read). */
export function parameterCounts(
  c: BuildConfig,
): Record<'embedding' | 'attention' | 'mlp' | 'norms' | 'lmHead', number> {
  const counts = { embedding: 0, attention: 0, mlp: 0, norms: 0, lmHead: 0 };
  const attention = new Set(
    familyOf(c)
      .projections.filter((p) => p.module !== 'mlp')
      .map((p) => p.name),
  );
  for (const { shape, role } of tensorTable(c)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (role.kind === 'embedding') counts.embedding += n;
    else if (role.kind === 'lmHead') counts.lmHead += n;
    else if (role.kind === 'norm' || role.kind === 'finalNorm') counts.norms += n;
    else if (attention.has(role.proj)) counts.attention += n;
    else counts.mlp += n;
  }
  return counts;
}

/**
 * Bytes of the weights when projections are NF4 with double quantization (block 64: 4 bits +
 * 8/64 + 32/(64·256) bits per value) and embeddings, norms and lm_head stay at `otherBytesPerValue` bytes per value.
 */
export function nf4Bytes(c: BuildConfig, otherBytesPerValue = 4): number {
  const k = parameterCounts(c);
  const quantized = k.attention + k.mlp;
  return (
    (quantized * (4 + 8 / 64 + 32 / (64 * 256))) / 8 +
    (k.embedding + k.lmHead + k.norms) * otherBytesPerValue
  );
}

export function registerInfoCommand(program: Command): void {
  program
    .command('info')
    .description(
      'describe a model: architecture, parameters by kind, context, tokenizer, memory at f32/bf16/NF4',
    )
    .argument(
      '[path]',
      'model: HF folder, .gguf file, llama2.c .bin, or a Hub id org/name[@revision] (from the Hugging Face cache, else downloaded into it)',
    )
    .option(
      '--devices',
      'list the compute devices instead: cpu, and WebGPU adapters with their features and limits',
    )
    .option('--tokenizer <path>', 'tokenizer (default: the one next to the model)')
    .option(
      '--measure',
      'load the model with an NF4 base and report the bytes its projections really occupy',
    )
    .option('--gguf-file <pattern>', GGUF_FILE_HELP)
    .action(
      async (
        modelArg: string | undefined,
        flags: { tokenizer?: string; measure?: boolean; devices?: boolean; ggufFile?: string },
      ) => {
        if (flags.devices) {
          const { describeDevices } = await import('./devices.js');
          for (const line of await describeDevices()) console.log(line);
          return;
        }
        if (modelArg === undefined) throw new Error('qlora info: give a model path (or --devices)');
        const modelPath = await localModelPath(
          modelArg,
          flags.ggufFile !== undefined ? { ggufFile: flags.ggufFile } : {},
        );
        const ck = openCheckpoint(modelPath);
        const c = ck.config;
        ck.close();
        const k = parameterCounts(c);
        const total = Object.values(k).reduce((a, b) => a + b, 0);
        const lines: [string, string][] = [
          ['path', modelPath],
          ['format', ck.source],
          ['architecture', c.architecture],
          ['layers', String(c.numLayers)],
          ['hidden size', String(c.hiddenSize)],
          ['intermediate size', String(c.intermediateSize)],
          [
            'attention heads',
            `${c.numHeads} query, ${c.numKvHeads} key/value (head dim ${c.headDim})`,
          ],
          ['vocabulary', String(c.vocabSize)],
          ['context length', String(c.maxPositionEmbeddings)],
          [
            'rope',
            `theta ${c.ropeTheta}${c.ropeScaling ? `, ${c.ropeScaling.ropeType} scaling ×${c.ropeScaling.factor}` : ''}`,
          ],
          ['tied embeddings', c.tieWordEmbeddings ? 'yes' : 'no'],
          [
            'biases',
            (['q_proj', 'o_proj', 'gate_proj'] as const)
              .filter((p) => projectionHasBias(c, p))
              .join(', ') || 'none',
          ],
          ['parameters', `${formatCount(total)} (${total})`],
          ['  embedding', formatCount(k.embedding)],
          ['  attention', formatCount(k.attention)],
          ['  mlp', formatCount(k.mlp)],
          ['  norms', formatCount(k.norms)],
          ['  lm_head', k.lmHead ? formatCount(k.lmHead) : 'tied to the embedding'],
          ['memory f32', formatBytes(total * 4)],
          ['memory bf16', formatBytes(total * 2)],
          [
            'memory NF4 (QLoRA)',
            `${formatBytes(nf4Bytes(c, 2))} (projections NF4 + double quant ≈ 4.127 bits/param; embeddings, norms, lm_head bf16)`,
          ],
        ];
        let tokPath: string | undefined;
        try {
          tokPath = flags.tokenizer ?? tokenizerPathFor(modelPath);
          const tok = loadTokenizer(tokPath, { vocabSize: c.vocabSize });
          const special = [
            ['bos', tok.bosToken, tok.bosId],
            ['eos', tok.eosToken, tok.eosId],
          ]
            .filter(([, , id]) => id !== null)
            .map(([n, t, id]) => `${n} ${JSON.stringify(t)}=${id}`)
            .join(', ');
          lines.push([
            'tokenizer',
            `${tokPath} (${tok.vocabSize} tokens${special ? `; ${special}` : ''}${tok.addBos ? '; adds BOS' : ''})`,
          ]);
          lines.push(['chat template', tok.chatTemplate ? 'yes' : 'no']);
        } catch (e) {
          // Not finding a tokenizer and failing to read the one found are different problems.
          lines.push([
            'tokenizer',
            tokPath === undefined
              ? `not found (${(e as Error).message})`
              : `cannot load ${tokPath}: ${(e as Error).message}`,
          ]);
        }
        if (flags.measure) {
          const { model } = await loadModel({
            model: modelPath,
            tokenizer: flags.tokenizer,
            quantization: { quantType: 'nf4', blocksize: 64, doubleQuant: true },
          });
          let bytes = 0;
          let tables = 0;
          let params = 0;
          for (const layer of model.layers) {
            for (const name of PROJECTIONS) {
              const p = layer.proj[name] as Linear4bit | undefined;
              if (!p) continue;
              bytes += p.weightBytes - (p.bias ? p.bias.size * 4 : 0);
              tables +=
                p.weight.code.size * 4 + (p.weight.nested ? p.weight.nested.code.size * 4 : 0);
              params += p.inFeatures * p.outFeatures;
            }
          }
          model.dispose();
          const bits = (b: number) => ((8 * b) / params).toFixed(3);
          lines.push([
            'measured NF4 base',
            `${formatBytes(bytes)} for ${formatCount(params)} projection weights: ${bits(bytes - tables)} bits/param (packed codes + 8-bit absmax + nested absmax), ${bits(bytes)} with each tensor's 16- and 256-entry code tables`,
          ]);
        }
        const width = Math.max(...lines.map(([a]) => a.length));
        for (const [a, b] of lines) console.log(`${a.padEnd(width)}  ${b}`);
      },
    );
}
