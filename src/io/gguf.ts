/**
 * GGUF v2/v3 reader (docs/formats.md §5.1, after ggml's own gguf.md). Parses header, metadata and
 * tensor infos through a bounds-checked cursor and reads tensor data on demand with positional
 * reads, so a multi-GB model never sits in memory whole.
 *
 * Metadata value representation (`GgufValue`):
 * - U8, I8, U16, I16, U32, I32, F32, F64 → number; BOOL → boolean; STRING → string (UTF-8).
 * - U64, I64 → number when it is a safe integer, else bigint.
 * - ARRAY of STRING → string[]; of BOOL → boolean[]; of a numeric type → the matching typed array
 *   (Uint8Array, Int8Array, Uint16Array, Int16Array, Uint32Array, Int32Array, Float32Array,
 *   Float64Array, BigUint64Array, BigInt64Array); of ARRAY → GgufValue[] (each a nested array).
 * The value type tag of each key is kept in `metadataTypes` (and `arrayElementTypes` for arrays).
 */
import { ByteCursor, FileFormatError, RandomAccessFile } from './binary-reader.js';
import { canDequantize, dequantize, ggmlByteSize, ggmlTypeName } from './ggml-types.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;

export const GgufValueType = {
  U8: 0,
  I8: 1,
  U16: 2,
  I16: 3,
  U32: 4,
  I32: 5,
  F32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  U64: 10,
  I64: 11,
  F64: 12,
} as const;
export type GgufValueTypeId = (typeof GgufValueType)[keyof typeof GgufValueType];

export type GgufTypedArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array;
export type GgufValue =
  number | bigint | boolean | string | string[] | boolean[] | GgufTypedArray | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** ggml dims, ne[0] fastest (innermost). */
  ne: number[];
  /** Row-major (PyTorch) shape: `ne` reversed, so a [out, in] matrix is [out, in]. */
  shape: number[];
  type: number;
  typeName: string;
  nElements: number;
  /** Offset relative to the start of the tensor data section. */
  relativeOffset: number;
  /** Absolute file offset of the tensor's first byte. */
  offset: number;
  byteSize: number;
}

export interface GgufFile {
  path: string;
  version: number;
  metadata: Map<string, GgufValue>;
  metadataTypes: Map<string, GgufValueTypeId>;
  arrayElementTypes: Map<string, GgufValueTypeId>;
  tensors: GgufTensorInfo[];
  tensorsByName: Map<string, GgufTensorInfo>;
  alignment: number;
  /** Absolute file offset where tensor data begins. */
  dataOffset: number;
  fileSize: number;
}

/** Minimum encoded bytes per element of each value type (used to bound corrupt counts). */
const MIN_BYTES: Record<number, number> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  8: 8,
  9: 12,
  10: 8,
  11: 8,
  12: 8,
};
const MAX_ARRAY_DEPTH = 8;
/** ggml's GGML_MAX_DIMS. */
const MAX_DIMS = 4;

function readString(c: ByteCursor, what: string): string {
  const len = c.u64(`${what} length`);
  return c.utf8(len, what);
}

function readScalar(c: ByteCursor, type: number, what: string): GgufValue {
  switch (type) {
    case 0:
      return c.u8(what);
    case 1:
      return c.i8(what);
    case 2:
      return c.u16(what);
    case 3:
      return c.i16(what);
    case 4:
      return c.u32(what);
    case 5:
      return c.i32(what);
    case 6:
      return c.f32(what);
    case 7: {
      const b = c.u8(what);
      if (b > 1) c.fail(`${what}: bool byte ${b} is not 0 or 1`);
      return b === 1;
    }
    case 8:
      return readString(c, what);
    case 10: {
      const v = c.u64big(what);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    case 11: {
      const v = c.i64big(what);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER)
        ? Number(v)
        : v;
    }
    case 12:
      return c.f64(what);
    default:
      return c.fail(`${what}: unknown GGUF value type ${type}`);
  }
}

function readArray(
  c: ByteCursor,
  what: string,
  depth: number,
): { value: GgufValue; elemType: GgufValueTypeId } {
  if (depth > MAX_ARRAY_DEPTH) c.fail(`${what}: arrays nested deeper than ${MAX_ARRAY_DEPTH}`);
  const elemType = c.u32(`${what} array element type`);
  const minBytes = MIN_BYTES[elemType];
  if (minBytes === undefined) c.fail(`${what}: unknown GGUF array element type ${elemType}`);
  const count = c.u64(`${what} array count`);
  c.checkCount(count, minBytes, `${what} array count`);
  const elemWhat = `${what} element`;
  let value: GgufValue;
  switch (elemType) {
    case 8: {
      const out: string[] = new Array(count);
      for (let i = 0; i < count; i++) out[i] = readString(c, elemWhat);
      value = out;
      break;
    }
    case 7: {
      const out: boolean[] = new Array(count);
      for (let i = 0; i < count; i++) out[i] = readScalar(c, 7, elemWhat) as boolean;
      value = out;
      break;
    }
    case 9: {
      const out: GgufValue[] = new Array(count);
      for (let i = 0; i < count; i++) out[i] = readArray(c, elemWhat, depth + 1).value;
      value = out;
      break;
    }
    default:
      value = readNumericArray(c, elemType, minBytes, count, elemWhat);
  }
  return { value, elemType: elemType as GgufValueTypeId };
}

/** Numeric arrays: read the raw little-endian bytes in one go and view them as a typed array. */
function readNumericArray(
  c: ByteCursor,
  type: number,
  elementBytes: number,
  count: number,
  what: string,
): GgufTypedArray {
  const bytes = c.bytes(count * elementBytes, what);
  const buf = bytes.buffer as ArrayBuffer; // fresh, exactly sized, offset 0 (little-endian host assumed)
  switch (type) {
    case 0:
      return bytes;
    case 1:
      return new Int8Array(buf, 0, count);
    case 2:
      return new Uint16Array(buf, 0, count);
    case 3:
      return new Int16Array(buf, 0, count);
    case 4:
      return new Uint32Array(buf, 0, count);
    case 5:
      return new Int32Array(buf, 0, count);
    case 6:
      return new Float32Array(buf, 0, count);
    case 10:
      return new BigUint64Array(buf, 0, count);
    case 11:
      return new BigInt64Array(buf, 0, count);
    case 12:
      return new Float64Array(buf, 0, count);
    default:
      return c.fail(`${what}: unknown GGUF value type ${type}`);
  }
}

function parseHeader(file: RandomAccessFile): GgufFile {
  const c = new ByteCursor(file);
  if (file.size < 24) file.fail(`too small to be GGUF (${file.size} bytes)`);
  const magic = c.u32('magic');
  if (magic !== GGUF_MAGIC)
    file.fail(`not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')})`);
  const version = c.u32('version');
  if (version === 1) file.fail('GGUF version 1 is not supported (only v2 and v3)');
  if (version !== 2 && version !== 3) {
    const swapped =
      ((version & 0xff) << 24) |
      (((version >>> 8) & 0xff) << 16) |
      (((version >>> 16) & 0xff) << 8) |
      (version >>> 24);
    if (swapped === 2 || swapped === 3) file.fail('big-endian GGUF is not supported');
    file.fail(`unsupported GGUF version ${version}`);
  }
  const tensorCount = c.u64('tensor count');
  const kvCount = c.u64('metadata count');
  // Each kv takes ≥ 13 bytes (key length, value type, 1-byte value); each tensor info ≥ 24.
  c.checkCount(kvCount, 13, 'metadata count');
  c.checkCount(tensorCount, 24, 'tensor count');

  const metadata = new Map<string, GgufValue>();
  const metadataTypes = new Map<string, GgufValueTypeId>();
  const arrayElementTypes = new Map<string, GgufValueTypeId>();
  for (let i = 0; i < kvCount; i++) {
    const key = readString(c, `metadata key #${i}`);
    if (metadata.has(key)) file.fail(`duplicate metadata key '${key}'`);
    const type = c.u32(`metadata '${key}' value type`);
    if (type === GgufValueType.ARRAY) {
      const { value, elemType } = readArray(c, `metadata '${key}'`, 0);
      metadata.set(key, value);
      arrayElementTypes.set(key, elemType);
    } else {
      metadata.set(key, readScalar(c, type, `metadata '${key}'`));
    }
    metadataTypes.set(key, type as GgufValueTypeId);
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const a = metadata.get('general.alignment');
  if (a !== undefined) {
    if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || a % 8 !== 0 || a > 1 << 20) {
      file.fail(`general.alignment ${String(a)} must be a positive multiple of 8`);
    }
    alignment = a;
  }

  const tensors: GgufTensorInfo[] = [];
  const tensorsByName = new Map<string, GgufTensorInfo>();
  const raw: Omit<GgufTensorInfo, 'offset'>[] = [];
  const seenNames = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = readString(c, `tensor #${i} name`);
    const nDims = c.u32(`tensor '${name}' n_dims`);
    if (nDims > MAX_DIMS) file.fail(`tensor '${name}' has ${nDims} dims (max ${MAX_DIMS})`);
    const ne: number[] = [];
    let nElements = 1;
    for (let d = 0; d < nDims; d++) {
      const n = c.u64(`tensor '${name}' dim ${d}`);
      ne.push(n);
      nElements *= n;
      if (!Number.isSafeInteger(nElements))
        file.fail(`tensor '${name}' dims [${ne.join(', ')}...] overflow`);
    }
    const type = c.u32(`tensor '${name}' type`);
    const relativeOffset = c.u64(`tensor '${name}' offset`);
    if (relativeOffset % alignment !== 0)
      file.fail(`tensor '${name}' offset ${relativeOffset} is not aligned to ${alignment}`);
    const size = ggmlByteSize(type, ne[0] ?? 1, nElements);
    if (typeof size === 'string') file.fail(`tensor '${name}': ${size}`);
    if (seenNames.has(name)) file.fail(`duplicate tensor name '${name}'`);
    seenNames.add(name);
    raw.push({
      name,
      ne,
      shape: [...ne].reverse(),
      type,
      typeName: ggmlTypeName(type),
      nElements,
      relativeOffset,
      byteSize: size,
    });
  }
  const dataOffset = align(c.position, alignment);
  for (const t of raw) {
    const info: GgufTensorInfo = { ...t, offset: dataOffset + t.relativeOffset };
    file.checkRange(info.offset, info.byteSize, `tensor '${t.name}' data`);
    tensors.push(info);
    tensorsByName.set(info.name, info);
  }
  checkNoOverlap(file, tensors);
  return {
    path: file.path,
    version,
    metadata,
    metadataTypes,
    arrayElementTypes,
    tensors,
    tensorsByName,
    alignment,
    dataOffset,
    fileSize: file.size,
  };
}

function checkNoOverlap(file: RandomAccessFile, tensors: GgufTensorInfo[]): void {
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev.offset + prev.byteSize > cur.offset)
      file.fail(`tensor '${cur.name}' data overlaps tensor '${prev.name}'`);
  }
}

function align(o: number, a: number): number {
  return o + ((a - (o % a)) % a);
}

/**
 * Reads the header of a GGUF file: metadata plus the tensor table (names, shapes, offsets), but no
 * tensor data (e.g. for a tokenizer). The file is closed on return.
 */
export function readGgufMetadata(path: string): GgufFile {
  const file = RandomAccessFile.open(path);
  try {
    return parseHeader(file);
  } finally {
    file.close();
  }
}

/** An open GGUF file: parsed header plus on-demand tensor reads. Call close() when done. */
export class GgufReader {
  private constructor(
    private readonly file: RandomAccessFile,
    readonly gguf: GgufFile,
  ) {}

  static open(path: string): GgufReader {
    const file = RandomAccessFile.open(path);
    try {
      return new GgufReader(file, parseHeader(file));
    } catch (e) {
      file.close();
      throw e;
    }
  }

  get label(): string {
    return this.file.label;
  }
  get metadata(): Map<string, GgufValue> {
    return this.gguf.metadata;
  }
  get tensors(): GgufTensorInfo[] {
    return this.gguf.tensors;
  }

  tensor(name: string): GgufTensorInfo {
    const t = this.gguf.tensorsByName.get(name);
    if (!t) this.file.fail(`no tensor named '${name}'`);
    return t;
  }

  /** The tensor's stored bytes, read with one positional read. */
  readRaw(name: string): Uint8Array {
    const t = this.tensor(name);
    return this.file.read(t.offset, t.byteSize, `tensor '${name}' data`);
  }

  /** The tensor dequantized to f32, in stored (row-major, ne-reversed) order. */
  readF32(name: string): Float32Array {
    const t = this.tensor(name);
    if (!canDequantize(t.type))
      this.file.fail(
        `tensor '${name}' has type ${t.typeName}, which cannot be loaded (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K)`,
      );
    if (t.type === 0) {
      // F32: read straight into the result's memory (no intermediate copy).
      const out = new Float32Array(t.nElements);
      this.file.readInto(t.offset, new Uint8Array(out.buffer), `tensor '${name}' data`);
      return out;
    }
    const raw = this.readRaw(name);
    const out = new Float32Array(t.nElements);
    dequantize(t.type, raw, t.nElements, out);
    return out;
  }

  close(): void {
    this.file.close();
  }
}

/** Typed metadata accessors that fail with a one-line error naming the file and key. */
export class GgufMetadataView {
  constructor(
    private readonly gguf: GgufFile,
    private readonly label = gguf.path.split(/[\\/]/).pop() ?? gguf.path,
  ) {}

  has(key: string): boolean {
    return this.gguf.metadata.has(key);
  }

  private fail(key: string, problem: string): never {
    throw new FileFormatError(this.label, `metadata '${key}' ${problem}`);
  }

  number(key: string): number;
  number(key: string, fallback: number): number;
  number(key: string, fallback?: number): number {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'is missing');
    }
    if (typeof v !== 'number') this.fail(key, `is not a number (${describe(v)})`);
    return v;
  }

  optionalNumber(key: string): number | undefined {
    return this.gguf.metadata.has(key) ? this.number(key) : undefined;
  }

  string(key: string): string;
  string(key: string, fallback: string): string;
  string(key: string, fallback?: string): string {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'is missing');
    }
    if (typeof v !== 'string') this.fail(key, `is not a string (${describe(v)})`);
    return v;
  }

  optionalString(key: string): string | undefined {
    return this.gguf.metadata.has(key) ? this.string(key) : undefined;
  }

  boolean(key: string, fallback: boolean): boolean {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `is not a bool (${describe(v)})`);
    return v;
  }

  stringArray(key: string): string[] | undefined {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || (v.length > 0 && typeof v[0] !== 'string'))
      this.fail(key, `is not an array of strings (${describe(v)})`);
    return v as string[];
  }

  /** A numeric array as numbers (bigint elements must be safe integers). */
  numberArray(key: string): ArrayLike<number> | undefined {
    const v = this.gguf.metadata.get(key);
    if (v === undefined) return undefined;
    if (v instanceof BigInt64Array || v instanceof BigUint64Array) {
      return Array.from(v, (x) => {
        if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER))
          this.fail(key, `element ${x} is too large`);
        return Number(x);
      });
    }
    if (ArrayBuffer.isView(v)) return v as Exclude<GgufTypedArray, BigInt64Array | BigUint64Array>;
    return this.fail(key, `is not a numeric array (${describe(v)})`);
  }
}

function describe(v: GgufValue): string {
  if (Array.isArray(v)) return `array of ${v.length}`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name} of ${v.length}`;
  return typeof v;
}
