/**
 * Minimal GGUF v3 writer (docs/formats.md §5.1): typed metadata plus tensors given as
 * already-encoded bytes of a ggml type. Used by tests to build files by hand; a GGUF export can
 * grow from it.
 */
import { writeAll, writeFileAtomic } from './atomic-write.js';
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GgufValueType,
  type GgufValue,
  type GgufValueTypeId,
} from './gguf.js';
import { ggmlByteSize, ggmlTypeName } from './ggml-types.js';

export interface GgufMetadataEntry {
  key: string;
  type: GgufValueTypeId;
  value: GgufValue;
  /**
   * Element type when `type` is ARRAY. For nested arrays give one type per level, outermost first:
   * [ARRAY, I32] is an array of arrays of i32.
   */
  elemType?: GgufValueTypeId | GgufValueTypeId[];
}

export interface GgufTensorToWrite {
  name: string;
  /** Row-major (PyTorch) shape; written reversed as ggml dims. */
  shape: number[];
  /** ggml type id (see GgmlType). */
  type: number;
  /** Encoded bytes, exactly the size the type and shape require. */
  data: Uint8Array;
}

/** Growable little-endian byte sink for the header. */
class ByteSink {
  private buf = new Uint8Array(1024);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private grow(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.grow(1);
    this.view.setUint8(this.length, v);
    this.length += 1;
  }
  i8(v: number): void {
    this.grow(1);
    this.view.setInt8(this.length, v);
    this.length += 1;
  }
  u16(v: number): void {
    this.grow(2);
    this.view.setUint16(this.length, v, true);
    this.length += 2;
  }
  i16(v: number): void {
    this.grow(2);
    this.view.setInt16(this.length, v, true);
    this.length += 2;
  }
  u32(v: number): void {
    this.grow(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.grow(4);
    this.view.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number): void {
    this.grow(4);
    this.view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  f64(v: number): void {
    this.grow(8);
    this.view.setFloat64(this.length, v, true);
    this.length += 8;
  }
  u64(v: number | bigint): void {
    this.grow(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  i64(v: number | bigint): void {
    this.grow(8);
    this.view.setBigInt64(this.length, BigInt(v), true);
    this.length += 8;
  }
  bytes(b: Uint8Array): void {
    this.grow(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  zeros(n: number): void {
    this.grow(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  result(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

function writeValue(
  s: ByteSink,
  type: number,
  value: GgufValue,
  elemTypes: readonly number[],
  key: string,
): void {
  const num = (): number => {
    if (typeof value !== 'number') throw new Error(`GGUF metadata '${key}': expected a number`);
    return value;
  };
  switch (type) {
    case GgufValueType.U8:
      return s.u8(num());
    case GgufValueType.I8:
      return s.i8(num());
    case GgufValueType.U16:
      return s.u16(num());
    case GgufValueType.I16:
      return s.i16(num());
    case GgufValueType.U32:
      return s.u32(num());
    case GgufValueType.I32:
      return s.i32(num());
    case GgufValueType.F32:
      return s.f32(num());
    case GgufValueType.F64:
      return s.f64(num());
    case GgufValueType.U64:
      return s.u64(typeof value === 'bigint' ? value : num());
    case GgufValueType.I64:
      return s.i64(typeof value === 'bigint' ? value : num());
    case GgufValueType.BOOL:
      if (typeof value !== 'boolean') throw new Error(`GGUF metadata '${key}': expected a boolean`);
      return s.u8(value ? 1 : 0);
    case GgufValueType.STRING:
      if (typeof value !== 'string') throw new Error(`GGUF metadata '${key}': expected a string`);
      return s.string(value);
    case GgufValueType.ARRAY: {
      const [elemType, ...inner] = elemTypes;
      if (elemType === undefined)
        throw new Error(`GGUF metadata '${key}': array needs elemType (one per nesting level)`);
      if (!Array.isArray(value) && !ArrayBuffer.isView(value))
        throw new Error(`GGUF metadata '${key}': expected an array`);
      const items = value as ArrayLike<GgufValue>;
      s.u32(elemType);
      s.u64(items.length);
      for (let i = 0; i < items.length; i++) writeValue(s, elemType, items[i]!, inner, key);
      return;
    }
    default:
      throw new Error(`GGUF metadata '${key}': unknown value type ${type}`);
  }
}

/** Writes a GGUF v3 file atomically. `general.alignment` in `metadata` (U32) sets the alignment. */
export function writeGguf(
  filePath: string,
  metadata: GgufMetadataEntry[],
  tensors: GgufTensorToWrite[],
): void {
  writeGgufStreaming(
    filePath,
    metadata,
    tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type, data: () => t.data })),
  );
}

/** A tensor whose bytes are produced only when the writer reaches it (exports of large models). */
export interface GgufTensorPlan {
  name: string;
  /** Row-major (PyTorch) shape; written reversed as ggml dims. */
  shape: number[];
  /** ggml type id (see GgmlType). */
  type: number;
  /** Called once, in file order; must return exactly the bytes the type and shape require. */
  data: () => Uint8Array;
}

/**
 * Like writeGguf, but each tensor's bytes are produced on demand, so only one tensor is in memory
 * at a time. Sizes are known from (type, shape) up front, which is all the header needs.
 */
export function writeGgufStreaming(
  filePath: string,
  metadata: GgufMetadataEntry[],
  tensors: GgufTensorPlan[],
): void {
  const alignEntry = metadata.find((e) => e.key === 'general.alignment');
  const alignment = alignEntry ? (alignEntry.value as number) : GGUF_DEFAULT_ALIGNMENT;
  const pad = (o: number): number => (alignment - (o % alignment)) % alignment;

  const head = new ByteSink();
  head.u32(GGUF_MAGIC);
  head.u32(3);
  head.u64(tensors.length);
  head.u64(metadata.length);
  for (const e of metadata) {
    head.string(e.key);
    head.u32(e.type);
    writeValue(
      head,
      e.type,
      e.value,
      e.elemType === undefined ? [] : ([] as number[]).concat(e.elemType),
      e.key,
    );
  }
  const sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    const nElements = t.shape.reduce((a, b) => a * b, 1);
    const size = ggmlByteSize(t.type, t.shape[t.shape.length - 1] ?? 1, nElements);
    if (typeof size === 'string') throw new Error(`GGUF tensor '${t.name}': ${size}`);
    sizes.push(size);
    head.string(t.name);
    head.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) head.u64(t.shape[d]!);
    head.u32(t.type);
    head.u64(offset);
    offset += size + pad(size);
  }
  head.zeros(pad(head.length));

  writeFileAtomic(filePath, (fd) => {
    writeAll(fd, head.result());
    tensors.forEach((t, i) => {
      const data = t.data();
      if (sizes[i] !== data.byteLength) {
        throw new Error(
          `GGUF tensor '${t.name}': ${ggmlTypeName(t.type)} [${t.shape.join(', ')}] needs ${sizes[i]} bytes, got ${data.byteLength}`,
        );
      }
      writeAll(fd, data);
      const p = pad(data.byteLength);
      if (p) writeAll(fd, new Uint8Array(p));
    });
  });
}
