/**
 * bitsandbytes 4-bit weights inside Hugging Face safetensors checkpoints (docs/formats.md §2.6):
 * the keys `<name>` (packed U8 [(N+1)/2, 1]), `<name>.absmax`, `<name>.quant_map`,
 * `<name>.nested_absmax`, `<name>.nested_quant_map`, `<name>.quant_state.bitsandbytes__<type>`
 * (JSON as U8 bytes), and the `quantization_config` block of config.json. Pre-quantized Hub
 * checkpoints load without a dequantize/requantize round trip.
 */
import type { Quantized4bit } from '../quant/quantize4bit.js';
import type { SafetensorsTensorToWrite } from './safetensors.js';

export const QUANT_STATE_PREFIX = 'quant_state.bitsandbytes__';

/** config.json `quantization_config` as transformers writes it for a 4-bit bnb model. */
export function bnbQuantizationConfig(
  quantType: 'nf4' | 'fp4',
  doubleQuant: boolean,
): Record<string, unknown> {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: 'bfloat16',
    bnb_4bit_quant_storage: 'uint8',
    bnb_4bit_quant_type: quantType,
    bnb_4bit_use_double_quant: doubleQuant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: 6.0,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: 'bitsandbytes',
  };
}

/** Python's json.dumps of a float: integral values keep a ".0". */
function pyFloat(x: number): string {
  if (!Number.isFinite(x)) throw new Error(`cannot serialize ${x} in a quant state`);
  const s = String(x);
  return Number.isInteger(x) && !/e/i.test(s) ? `${s}.0` : s;
}

/** The packed quant-state JSON, byte-for-byte as bnb's pack_dict_to_tensor (json.dumps defaults). */
export function quantStateJson(
  q: Quantized4bit,
  shape: readonly number[],
  originalDtype: string,
): string {
  const parts = [
    `"quant_type": "${q.quantType}"`,
    `"blocksize": ${q.blocksize}`,
    `"dtype": "${originalDtype}"`,
    `"shape": [${shape.join(', ')}]`,
  ];
  if (q.nested) {
    parts.push(
      `"nested_blocksize": ${q.nested.blocksize}`,
      `"nested_dtype": "float32"`,
      `"nested_offset": ${pyFloat(q.nested.offset)}`,
    );
  }
  return `{${parts.join(', ')}}`;
}

/** The safetensors entries bnb writes for one quantized weight `name` (e.g. `...q_proj.weight`). */
export function bnbTensors(
  name: string,
  q: Quantized4bit,
  shape: readonly number[],
  originalDtype = 'float32',
): SafetensorsTensorToWrite[] {
  const out: SafetensorsTensorToWrite[] = [
    { name, dtype: 'U8', shape: [q.packed.length, 1], data: q.packed },
    q.absmax instanceof Uint8Array
      ? { name: `${name}.absmax`, dtype: 'U8', shape: [q.absmax.length], data: q.absmax }
      : { name: `${name}.absmax`, dtype: 'F32', shape: [q.absmax.length], data: q.absmax },
    { name: `${name}.quant_map`, dtype: 'F32', shape: [16], data: q.code },
  ];
  if (q.nested) {
    out.push(
      {
        name: `${name}.nested_absmax`,
        dtype: 'F32',
        shape: [q.nested.absmax.length],
        data: q.nested.absmax,
      },
      {
        name: `${name}.nested_quant_map`,
        dtype: 'F32',
        shape: [q.nested.code.length],
        data: q.nested.code,
      },
    );
  }
  const json = new TextEncoder().encode(quantStateJson(q, shape, originalDtype));
  out.push({
    name: `${name}.${QUANT_STATE_PREFIX}${q.quantType}`,
    dtype: 'U8',
    shape: [json.length],
    data: json,
  });
  return out;
}

/** Reads raw tensor bytes / f32 values by name (a safetensors file or collection). */
export interface RawTensorReader {
  has(name: string): boolean;
  raw(name: string): Uint8Array;
  f32(name: string): Float32Array;
  dtype(name: string): string;
}

/** True when `name` is stored as a bnb 4-bit weight. */
export function isBnb4bit(reader: RawTensorReader, name: string): boolean {
  return (
    reader.has(`${name}.${QUANT_STATE_PREFIX}nf4`) || reader.has(`${name}.${QUANT_STATE_PREFIX}fp4`)
  );
}

/** The bnb 4-bit weight `name` as a host-side Quantized4bit plus its logical shape. */
export function readBnb4bit(
  reader: RawTensorReader,
  name: string,
): { q: Quantized4bit; shape: number[] } {
  const stateKey = [`${name}.${QUANT_STATE_PREFIX}nf4`, `${name}.${QUANT_STATE_PREFIX}fp4`].find(
    (k) => reader.has(k),
  );
  if (!stateKey) throw new Error(`'${name}' is not a bitsandbytes 4-bit weight`);
  let state: Record<string, unknown>;
  try {
    state = JSON.parse(new TextDecoder().decode(reader.raw(stateKey))) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`'${stateKey}': quant state is not valid JSON (${(e as Error).message})`);
  }
  const quantType = state.quant_type;
  if (quantType !== 'nf4' && quantType !== 'fp4')
    throw new Error(`'${stateKey}': unknown quant_type ${JSON.stringify(quantType)}`);
  const blocksize = state.blocksize;
  const shape = state.shape;
  if (typeof blocksize !== 'number' || !Number.isInteger(blocksize) || blocksize < 1)
    throw new Error(`'${stateKey}': invalid blocksize`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0))
    throw new Error(`'${stateKey}': invalid shape`);
  const length = (shape as number[]).reduce((a, b) => a * b, 1);
  const packed = reader.raw(name); // U8, or BF16-typed storage holding the same bytes (FSDP-QLoRA)
  if (packed.length !== Math.ceil(length / 2)) {
    throw new Error(
      `'${name}': ${packed.length} packed bytes for ${length} elements (expected ${Math.ceil(length / 2)})`,
    );
  }
  const nblocks = Math.ceil(length / blocksize);
  const code = reader.f32(`${name}.quant_map`);
  if (code.length !== 16)
    throw new Error(`'${name}.quant_map' must have 16 values, has ${code.length}`);
  const nestedKey = `${name}.nested_absmax`;
  let absmax: Float32Array | Uint8Array;
  let nested: Quantized4bit['nested'] = null;
  if (reader.has(nestedKey)) {
    absmax = reader.raw(`${name}.absmax`);
    const nabs = reader.f32(nestedKey);
    const ncode = reader.f32(`${name}.nested_quant_map`);
    const nb = typeof state.nested_blocksize === 'number' ? state.nested_blocksize : 256;
    const offset = typeof state.nested_offset === 'number' ? Math.fround(state.nested_offset) : NaN;
    if (!Number.isFinite(offset))
      throw new Error(`'${stateKey}': double-quantized weight without nested_offset`);
    if (nabs.length !== Math.ceil(nblocks / nb))
      throw new Error(`'${nestedKey}': ${nabs.length} values, expected ${Math.ceil(nblocks / nb)}`);
    if (ncode.length !== 256) throw new Error(`'${name}.nested_quant_map' must have 256 values`);
    nested = { absmax: nabs, code: ncode, blocksize: nb, offset };
  } else {
    absmax = reader.f32(`${name}.absmax`);
  }
  if (absmax.length !== nblocks)
    throw new Error(`'${name}.absmax': ${absmax.length} values, expected ${nblocks}`);
  return {
    q: { quantType, blocksize, length, packed, code, absmax, nested },
    shape: shape as number[],
  };
}

/** Every key that belongs to a bnb weight other than the weight itself (skipped when listing tensors). */
export function isBnbAuxiliaryKey(name: string): boolean {
  return /\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\.bitsandbytes__(nf4|fp4))$/.test(
    name,
  );
}
