/**
 * safetensors reader/writer (docs/formats.md §4.1–4.2; huggingface/safetensors tensor.rs rules):
 * `u64 LE N | N-byte JSON header | byte buffer`. The header is fully validated before any tensor
 * read: offsets in range, no overlaps or holes, buffer exactly covered, dtypes known, and each
 * tensor's shape × dtype size equal to its byte span. Tensors are read one at a time by position.
 * Sharded checkpoints (`model.safetensors.index.json`) are presented as one collection.
 */
import { fs, path } from './host.js';
import { writeAll, writeFileAtomic } from './atomic-write.js';
import { FileFormatError, RandomAccessFile } from './binary-reader.js';
import { jsonMemberCount, jsonNestingBeyond } from './json-scan.js';
import { decodeBF16, decodeF16, f32ToBF16, f32ToF16 } from './half.js';

/** Bits per element of every dtype the format defines. */
const DTYPE_BITS: Record<string, number> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  F64: 64,
  I64: 64,
  U64: 64,
  C64: 64,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
};
export type SafetensorsDType = keyof typeof DTYPE_BITS | string;

export const SAFETENSORS_MAX_HEADER = 100_000_000;
/**
 * 4 members per tensor entry: room for 65,536 tensors in one file (the largest checkpoints have a
 * few thousand per shard). JSON.parse of a flat object with millions of keys takes many seconds.
 */
const SAFETENSORS_MAX_HEADER_MEMBERS = 1 << 18;

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  nElements: number;
  /** Absolute file offset of the first byte. */
  offset: number;
  byteSize: number;
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** One .safetensors file, open for positional tensor reads. Call close() when done. */
export class SafetensorsFile {
  private constructor(
    private readonly file: RandomAccessFile,
    readonly tensors: Map<string, SafetensorsTensorInfo>,
    readonly metadata: Record<string, string>,
  ) {}

  get path(): string {
    return this.file.path;
  }
  get label(): string {
    return this.file.label;
  }

  static open(filePath: string): SafetensorsFile {
    const file = RandomAccessFile.open(filePath);
    try {
      const { tensors, metadata } = parseHeader(file);
      return new SafetensorsFile(file, tensors, metadata);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  tensor(name: string): SafetensorsTensorInfo {
    const t = this.tensors.get(name);
    if (!t) this.file.fail(`no tensor named '${name}'`);
    return t;
  }

  /** The stored bytes of a tensor (little-endian, C order). */
  readRaw(name: string): Uint8Array {
    const t = this.tensor(name);
    return this.file.read(t.offset, t.byteSize, `tensor '${name}' data`);
  }

  /** A floating tensor (F32, F16, BF16, F64) converted to f32. */
  readF32(name: string): Float32Array {
    const t = this.tensor(name);
    const what = `tensor '${name}' data`;
    switch (t.dtype) {
      case 'F32': {
        const out = new Float32Array(t.nElements);
        this.file.readInto(t.offset, new Uint8Array(out.buffer), what);
        return out;
      }
      case 'F16':
      case 'BF16': {
        const raw = this.file.read(t.offset, t.byteSize, what);
        const out = new Float32Array(t.nElements);
        (t.dtype === 'F16' ? decodeF16 : decodeBF16)(raw, 0, t.nElements, out);
        return out;
      }
      case 'F64': {
        const raw = this.file.read(t.offset, t.byteSize, what);
        return Float32Array.from(new Float64Array(raw.buffer, 0, t.nElements));
      }
      default:
        return this.file.fail(
          `tensor '${name}' has dtype ${t.dtype}, which cannot be read as f32 (F32, F16, BF16, F64)`,
        );
    }
  }

  close(): void {
    this.file.close();
  }
}

function parseHeader(file: RandomAccessFile): {
  tensors: Map<string, SafetensorsTensorInfo>;
  metadata: Record<string, string>;
} {
  if (file.size < 8) file.fail(`too small to be safetensors (${file.size} bytes)`);
  const lenBytes = file.read(0, 8, 'header length');
  const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n > BigInt(SAFETENSORS_MAX_HEADER))
    file.fail(`header length ${n} exceeds the ${SAFETENSORS_MAX_HEADER}-byte limit`);
  const headerLen = Number(n);
  if (8 + headerLen > file.size)
    file.fail(`header length ${headerLen} runs past end of file (size ${file.size})`);
  const headerBytes = file.read(8, headerLen, 'header');
  if (headerLen < 2 || headerBytes[0] !== 0x7b) file.fail("header does not start with '{'");
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    return file.fail('header is not valid UTF-8 JSON (invalid UTF-8)');
  }
  // Bound the parsing work before JSON.parse builds anything: a header is an object of tensor
  // entries ({dtype, shape: [...], data_offsets: [...]}) and one flat __metadata__ object, so it
  // never nests deeper than 3, and has a few members per tensor.
  const deep = jsonNestingBeyond(text, 3);
  if (deep !== null)
    file.fail(`header nests deeper than a safetensors header can (3 levels) at byte ${8 + deep}`);
  const members = jsonMemberCount(text);
  if (members > SAFETENSORS_MAX_HEADER_MEMBERS)
    file.fail(
      `header has ${members} JSON members, more than the ${SAFETENSORS_MAX_HEADER_MEMBERS} any real checkpoint needs`,
    );
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    file.fail(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    file.fail('header is not a JSON object');

  const dataStart = 8 + headerLen;
  const bufferSize = file.size - dataStart;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, entry);
      continue;
    }
    const where = `tensor '${name}'`;
    if (typeof entry !== 'object' || entry === null) file.fail(`${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    for (const [field, value] of [
      ['dtype', dtype],
      ['shape', shape],
      ['data_offsets', offsets],
    ] as const) {
      if (value === undefined)
        file.fail(
          `${where}: field '${field}' is missing (an entry needs dtype, shape and data_offsets)`,
        );
    }
    // Own keys only: `in` would accept 'toString' or '__proto__' from the file.
    const dtypeBits =
      typeof dtype === 'string' && Object.hasOwn(DTYPE_BITS, dtype) ? DTYPE_BITS[dtype] : undefined;
    if (dtypeBits === undefined) {
      file.fail(
        `${where}: unknown dtype ${JSON.stringify(dtype).slice(0, 40)} (expected one of ${Object.keys(DTYPE_BITS).join(', ')})`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      file.fail(
        `${where}: shape ${JSON.stringify(shape).slice(0, 80)} is not a list of non-negative integers`,
      );
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      file.fail(
        `${where}: data_offsets ${JSON.stringify(offsets).slice(0, 80)} is not [begin, end] with begin <= end`,
      );
    }
    const [begin, end] = offsets as [number, number];
    if (end > bufferSize)
      file.fail(`${where} data [${begin}, ${end}) runs past end of buffer (${bufferSize} bytes)`);
    const nElements = product(shape as number[]);
    if (!Number.isSafeInteger(nElements))
      file.fail(`${where}: shape ${JSON.stringify(shape)} overflows`);
    const bits = nElements * dtypeBits;
    if (bits % 8 !== 0)
      file.fail(`${where}: ${nElements} ${dtype} elements are not a whole number of bytes`);
    if (bits / 8 !== end - begin) {
      file.fail(
        `${where}: shape ${JSON.stringify(shape)} × ${dtype} is ${bits / 8} bytes but data_offsets span ${end - begin}`,
      );
    }
    spans.push({ name, begin, end });
    tensors.set(name, {
      name,
      dtype: dtype as string, // a key of DTYPE_BITS (checked above)
      shape: shape as number[],
      nElements,
      offset: dataStart + begin,
      byteSize: end - begin,
    });
  }
  // The buffer must be covered exactly: sorted spans are contiguous from 0 to bufferSize.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const s of spans) {
    if (s.begin < cursor)
      file.fail(
        `tensor '${s.name}' data [${s.begin}, ${s.end}) overlaps the previous tensor (ends at ${cursor})`,
      );
    if (s.begin > cursor)
      file.fail(`buffer has a hole [${cursor}, ${s.begin}) before tensor '${s.name}'`);
    cursor = s.end;
  }
  if (cursor !== bufferSize)
    file.fail(`tensors cover ${cursor} bytes but the buffer holds ${bufferSize}`);
  return { tensors, metadata };
}

function parseMetadata(file: RandomAccessFile, entry: unknown): Record<string, string> {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
    file.fail('__metadata__ is not an object');
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== 'string') file.fail(`__metadata__ '${k}' is not a string`);
  }
  return entry as Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Sharded checkpoints

/** Name of the index file that maps tensor names to shard files. */
export const SAFETENSORS_INDEX = 'model.safetensors.index.json';

/**
 * A set of safetensors files seen as one: either a single file or the shards an index names.
 * Shards open on first use and stay open until close().
 */
export class SafetensorsCollection {
  private readonly open = new Map<string, SafetensorsFile>();

  private constructor(
    readonly dir: string,
    /** tensor name → shard file name (relative to dir). */
    readonly weightMap: Map<string, string>,
    readonly metadata: Record<string, unknown>,
  ) {}

  /** A single safetensors file as a collection. */
  static fromFile(filePath: string): SafetensorsCollection {
    const f = SafetensorsFile.open(filePath);
    const map = new Map([...f.tensors.keys()].map((k) => [k, path.basename(filePath)]));
    const c = new SafetensorsCollection(path.dirname(filePath), map, { ...f.metadata });
    c.open.set(path.basename(filePath), f);
    return c;
  }

  /** The shards listed by a `model.safetensors.index.json`. Every shard is opened and checked. */
  static fromIndex(indexPath: string): SafetensorsCollection {
    const label = path.basename(indexPath);
    let json: unknown;
    try {
      const st = fs.statSync(indexPath);
      if (st.size > SAFETENSORS_MAX_HEADER) throw new Error(`index is ${st.size} bytes, too large`);
      const text = fs.readFileSync(indexPath, 'utf8');
      const deep = jsonNestingBeyond(text, 8);
      if (deep !== null) throw new Error(`JSON nests deeper than 8 levels at offset ${deep}`);
      json = JSON.parse(text);
    } catch (e) {
      throw new FileFormatError(label, `cannot read index: ${(e as Error).message}`);
    }
    const o = json as { weight_map?: unknown; metadata?: unknown };
    if (
      typeof o !== 'object' ||
      o === null ||
      typeof o.weight_map !== 'object' ||
      o.weight_map === null
    ) {
      throw new FileFormatError(label, 'index has no weight_map object');
    }
    const map = new Map<string, string>();
    for (const [name, shard] of Object.entries(o.weight_map)) {
      if (
        typeof shard !== 'string' ||
        shard === '' ||
        shard.includes('/') ||
        shard.includes('\\') ||
        shard === '..' ||
        shard === '.'
      ) {
        throw new FileFormatError(
          label,
          `weight_map '${name}' names invalid shard ${JSON.stringify(shard)}`,
        );
      }
      map.set(name, shard);
    }
    const meta =
      typeof o.metadata === 'object' && o.metadata !== null
        ? (o.metadata as Record<string, unknown>)
        : {};
    const c = new SafetensorsCollection(path.dirname(indexPath), map, meta);
    try {
      for (const shard of new Set(map.values())) {
        const f = c.shard(shard);
        for (const [name, s] of map) {
          if (s === shard && !f.tensors.has(name))
            throw new FileFormatError(
              label,
              `weight_map puts '${name}' in ${shard}, which lacks it`,
            );
        }
      }
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  private shard(file: string): SafetensorsFile {
    let f = this.open.get(file);
    if (!f) {
      f = SafetensorsFile.open(path.join(this.dir, file));
      this.open.set(file, f);
    }
    return f;
  }

  get tensorNames(): string[] {
    return [...this.weightMap.keys()];
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  private fileOf(name: string): SafetensorsFile {
    const shard = this.weightMap.get(name);
    if (shard === undefined)
      throw new FileFormatError(path.basename(this.dir), `no tensor named '${name}'`);
    return this.shard(shard);
  }

  info(name: string): SafetensorsTensorInfo {
    return this.fileOf(name).tensor(name);
  }
  readF32(name: string): Float32Array {
    return this.fileOf(name).readF32(name);
  }
  readRaw(name: string): Uint8Array {
    return this.fileOf(name).readRaw(name);
  }

  close(): void {
    for (const f of this.open.values()) f.close();
    this.open.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface SafetensorsTensorToWrite {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /**
   * Either the encoded little-endian bytes (any dtype), or f32 values to be encoded as the
   * dtype (F32, F16, BF16 only).
   */
  data: Uint8Array | Float32Array;
}

function encode(t: SafetensorsTensorToWrite): Uint8Array {
  const n = product(t.shape);
  if (t.data instanceof Uint8Array) return t.data;
  if (t.data.length !== n)
    throw new Error(
      `safetensors tensor '${t.name}': ${t.data.length} values for shape [${t.shape.join(', ')}]`,
    );
  switch (t.dtype) {
    case 'F32':
      return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    case 'F16':
    case 'BF16': {
      const bits = new Uint16Array(n);
      const conv = t.dtype === 'F16' ? f32ToF16 : f32ToBF16;
      for (let i = 0; i < n; i++) bits[i] = conv(t.data[i]!);
      return new Uint8Array(bits.buffer);
    }
    default:
      throw new Error(
        `safetensors tensor '${t.name}': f32 data can only be written as F32, F16 or BF16, not ${t.dtype}`,
      );
  }
}

/**
 * Writes a .safetensors file atomically (temp file + rename). Tensors are laid out by descending
 * element size then name, as the reference writer does; the header is space-padded to 8 bytes.
 */
export function writeSafetensors(
  filePath: string,
  tensors: SafetensorsTensorToWrite[],
  metadata?: Record<string, string>,
): void {
  const ordered = [...tensors].sort(
    (a, b) =>
      (DTYPE_BITS[b.dtype] ?? 0) - (DTYPE_BITS[a.dtype] ?? 0) ||
      (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const encoded: Uint8Array[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of ordered) {
    if (t.name === '__metadata__' || names.has(t.name))
      throw new Error(`safetensors: invalid or duplicate tensor name '${t.name}'`);
    names.add(t.name);
    const bits = DTYPE_BITS[t.dtype];
    if (bits === undefined)
      throw new Error(`safetensors tensor '${t.name}': unknown dtype ${t.dtype}`);
    const bytes = encode(t);
    const expected = (product(t.shape) * bits) / 8;
    if (bytes.byteLength !== expected) {
      throw new Error(
        `safetensors tensor '${t.name}': ${t.dtype} [${t.shape.join(', ')}] needs ${expected} bytes, got ${bytes.byteLength}`,
      );
    }
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + bytes.byteLength],
    };
    offset += bytes.byteLength;
    encoded.push(bytes);
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
  writeFileAtomic(filePath, (fd) => {
    writeAll(fd, len);
    writeAll(fd, json);
    for (const b of encoded) writeAll(fd, b);
  });
}

/** Writes a `model.safetensors.index.json` for shards already written into `dir`. */
export function writeSafetensorsIndex(
  dir: string,
  weightMap: Record<string, string>,
  totalSize: number,
): void {
  const body =
    JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n';
  writeFileAtomic(path.join(dir, SAFETENSORS_INDEX), (fd) =>
    writeAll(fd, new TextEncoder().encode(body)),
  );
}
