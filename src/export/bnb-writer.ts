/**
 * `qlora quantize`: an HF folder whose projection weights are stored the way bitsandbytes and
 * transformers save a 4-bit model (docs/formats.md §2.6), so it loads directly here and in
 * transformers. Tensors are quantized one at a time; shards of ≤ 2 GiB are written as they fill.
 */
import { fs, path } from '../io/host.js';
import { writeAll, writeFileAtomic } from '../io/atomic-write.js';
import { bnbQuantizationConfig, bnbTensors } from '../io/bnb4bit.js';
import {
  type SafetensorsTensorToWrite,
  writeSafetensors,
  writeSafetensorsIndex,
} from '../io/safetensors.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { configToHf } from '../io/config.js';
import { tensorTable } from '../models/registry.js';
import {
  quantize4bit,
  quantizedBytes as quantizedBytesOf,
  type Quantize4bitOptions,
} from '../quant/quantize4bit.js';
import type { VocabMetadata } from './gguf-vocab.js';
import { type HfDtype, writeTokenizerFiles } from './hf-writer.js';

const SHARD_BYTES = 2 * 1024 ** 3;
const TORCH_DTYPE = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' } as const;
const ST_DTYPE = { f32: 'F32', f16: 'F16', bf16: 'BF16' } as const;

export interface BnbFolderOptions {
  readonly quantization: Required<Quantize4bitOptions>;
  /** dtype of everything that stays unquantized (embeddings, norms, lm_head, biases). */
  readonly dtype: HfDtype;
  readonly vocab: VocabMetadata | null;
  readonly onTensor?: (name: string, index: number, total: number) => void;
}

export function writeBnb4bitFolder(
  ck: Checkpoint,
  dir: string,
  o: BnbFolderOptions,
): {
  files: string[];
  warnings: string[];
  /** Bytes of packed codes + absmax (+ nested absmax) of the projections (the shared code tables excluded). */ quantizedBytes: number;
  quantizedParams: number;
} {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  const shards: SafetensorsTensorToWrite[][] = [];
  let pending: SafetensorsTensorToWrite[] = [];
  let pendingBytes = 0;
  let total = 0;
  let quantizedBytes = 0;
  let quantizedParams = 0;
  const flush = () => {
    if (pending.length === 0) return;
    shards.push(pending);
    pending = [];
    pendingBytes = 0;
  };
  // Shard names need the shard count, so shards are written to temporary names and renamed at the end.
  const tmpName = (i: number) => `.shard-${i}.tmp.safetensors`;
  let written = 0;
  const writeFull = () => {
    while (shards.length > 0) {
      const tensors = shards.shift()!;
      writeSafetensors(path.join(dir, tmpName(written)), tensors, { format: 'pt' });
      for (const t of tensors) weightMap[t.name] = tmpName(written);
      written++;
    }
  };
  // The projection weights of the family's table are what bitsandbytes stores in 4-bit.
  const projectionWeights = new Set(
    tensorTable(ck.config)
      .filter((e) => e.role.kind === 'weight')
      .map((e) => e.hf),
  );
  ck.tensorNames.forEach((name, index) => {
    o.onTensor?.(name, index, ck.tensorNames.length);
    const shape = [...ck.shapeOf(name)];
    let tensors: SafetensorsTensorToWrite[];
    if (projectionWeights.has(name)) {
      const q = ck.loadQuantized(name) ?? quantize4bit(ck.loadTensor(name), o.quantization);
      tensors = bnbTensors(name, q, shape, TORCH_DTYPE[o.dtype]);
      quantizedParams += q.length;
      quantizedBytes += quantizedBytesOf(q);
    } else {
      tensors = [{ name, dtype: ST_DTYPE[o.dtype], shape, data: ck.loadTensor(name) }];
    }
    const bytes = tensors.reduce(
      (s, t) =>
        s +
        (t.data instanceof Uint8Array
          ? t.data.byteLength
          : t.data.length * (o.dtype === 'f32' ? 4 : 2)),
      0,
    );
    if (pendingBytes > 0 && pendingBytes + bytes > SHARD_BYTES) {
      flush();
      writeFull();
    }
    pending.push(...tensors);
    pendingBytes += bytes;
    total += bytes;
  });
  flush();
  writeFull();
  if (written === 1) {
    fs.renameSync(path.join(dir, tmpName(0)), path.join(dir, 'model.safetensors'));
    files.push('model.safetensors');
  } else {
    const finalName = (i: number) =>
      `model-${String(i + 1).padStart(5, '0')}-of-${String(written).padStart(5, '0')}.safetensors`;
    for (let i = 0; i < written; i++) {
      fs.renameSync(path.join(dir, tmpName(i)), path.join(dir, finalName(i)));
      files.push(finalName(i));
    }
    for (const [k, v] of Object.entries(weightMap))
      weightMap[k] = finalName(Number(/\.shard-(\d+)\./.exec(v)![1]));
    writeSafetensorsIndex(dir, weightMap, total);
    files.push('model.safetensors.index.json');
  }
  const config = {
    ...configToHf(ck.config),
    torch_dtype: TORCH_DTYPE[o.dtype],
    quantization_config: bnbQuantizationConfig(
      o.quantization.quantType,
      o.quantization.doubleQuant,
    ),
  };
  const bytes = new TextEncoder().encode(`${JSON.stringify(config, null, 2)}\n`);
  writeFileAtomic(path.join(dir, 'config.json'), (fd) => writeAll(fd, bytes));
  files.push('config.json');
  const warnings: string[] = [];
  writeTokenizerFiles(ck, dir, o.vocab, files, warnings);
  return { files, warnings, quantizedBytes, quantizedParams };
}
