/**
 * Bounds-checked positional file access shared by every checkpoint parser.
 *
 * Corrupt files must never crash the process, hang, or make us allocate gigabytes because a count
 * field says so: every length, offset and count is checked against the real file size before any
 * allocation or read, and every failure is a one-line `FileFormatError` naming the file.
 */
import { fs, path } from './host.js';

/** A malformed or unsupported file. The message is one line: `<file>: <problem>`. */
export class FileFormatError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`.replace(/[\r\n]+/g, ' '));
    this.name = 'FileFormatError';
  }
}

/** An open file read only by offset (fs.readSync with a position), never loaded whole. */
export class RandomAccessFile {
  private closed = false;

  private constructor(
    readonly path: string,
    /** Short name used in error messages (the file's base name). */
    readonly label: string,
    private readonly fd: number,
    readonly size: number,
  ) {}

  static open(filePath: string): RandomAccessFile {
    const label = path.basename(filePath);
    let fd: number;
    try {
      fd = fs.openSync(filePath, 'r');
    } catch (e) {
      throw new FileFormatError(label, `cannot open: ${(e as Error).message}`);
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new FileFormatError(label, 'not a regular file');
      return new RandomAccessFile(filePath, label, fd, st.size);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Throws a FileFormatError about this file. */
  fail(problem: string): never {
    throw new FileFormatError(this.label, problem);
  }

  /** Checks that [offset, offset+length) lies inside the file; `what` names the region for the error. */
  checkRange(offset: number, length: number, what: string): void {
    if (
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      !Number.isSafeInteger(length) ||
      length < 0
    ) {
      this.fail(`${what} has invalid offset ${offset} / length ${length}`);
    }
    if (offset + length > this.size) {
      this.fail(
        `${what} [offset ${offset}, ${length} bytes] runs past end of file (size ${this.size})`,
      );
    }
  }

  /** Fills `target` with the bytes at `offset`, after a bounds check. */
  readInto(offset: number, target: Uint8Array, what: string): void {
    this.checkRange(offset, target.byteLength, what);
    if (this.closed) this.fail(`read of ${what} after close`);
    let done = 0;
    while (done < target.byteLength) {
      // Node caps one read at 2 GiB; loop so huge tensors still stream correctly.
      const chunk = Math.min(target.byteLength - done, 1 << 30);
      const n = fs.readSync(this.fd, target, done, chunk, offset + done);
      if (n <= 0) this.fail(`${what}: file shrank while reading (short read at ${offset + done})`);
      done += n;
    }
  }

  /** A fresh buffer holding [offset, offset+length), after a bounds check. */
  read(offset: number, length: number, what: string): Uint8Array {
    this.checkRange(offset, length, what);
    const out = new Uint8Array(length);
    this.readInto(offset, out, what);
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

const utf8 = new TextDecoder('utf-8');

/**
 * Sequential little-endian reader over a RandomAccessFile through a small sliding window, for
 * headers and metadata. Every read is checked against the file size first.
 */
export class ByteCursor {
  private window: Uint8Array = new Uint8Array(0);
  private view = new DataView(this.window.buffer);
  private windowStart = 0;

  constructor(
    readonly file: RandomAccessFile,
    /** Absolute file offset of the next byte to read. */
    public position = 0,
    private readonly windowSize = 1 << 16,
  ) {}

  /** Bytes left between the cursor and the end of the file. */
  get remaining(): number {
    return this.file.size - this.position;
  }

  fail(problem: string): never {
    return this.file.fail(problem);
  }

  /** Makes [position, position+n) resident in the window; returns its index in the window. */
  private ensure(n: number, what: string): number {
    this.file.checkRange(this.position, n, what);
    const rel = this.position - this.windowStart;
    if (rel >= 0 && rel + n <= this.window.byteLength) return rel;
    const len = Math.min(Math.max(n, this.windowSize), this.file.size - this.position);
    this.window = this.file.read(this.position, len, what);
    this.view = new DataView(this.window.buffer, this.window.byteOffset, this.window.byteLength);
    this.windowStart = this.position;
    return 0;
  }

  u8(what = 'u8'): number {
    const i = this.ensure(1, what);
    this.position += 1;
    return this.view.getUint8(i);
  }
  i8(what = 'i8'): number {
    const i = this.ensure(1, what);
    this.position += 1;
    return this.view.getInt8(i);
  }
  u16(what = 'u16'): number {
    const i = this.ensure(2, what);
    this.position += 2;
    return this.view.getUint16(i, true);
  }
  i16(what = 'i16'): number {
    const i = this.ensure(2, what);
    this.position += 2;
    return this.view.getInt16(i, true);
  }
  u32(what = 'u32'): number {
    const i = this.ensure(4, what);
    this.position += 4;
    return this.view.getUint32(i, true);
  }
  i32(what = 'i32'): number {
    const i = this.ensure(4, what);
    this.position += 4;
    return this.view.getInt32(i, true);
  }
  f32(what = 'f32'): number {
    const i = this.ensure(4, what);
    this.position += 4;
    return this.view.getFloat32(i, true);
  }
  f64(what = 'f64'): number {
    const i = this.ensure(8, what);
    this.position += 8;
    return this.view.getFloat64(i, true);
  }
  u64big(what = 'u64'): bigint {
    const i = this.ensure(8, what);
    this.position += 8;
    return this.view.getBigUint64(i, true);
  }
  i64big(what = 'i64'): bigint {
    const i = this.ensure(8, what);
    this.position += 8;
    return this.view.getBigInt64(i, true);
  }

  /** A u64 used as a size/count/offset: must fit a JS safe integer, else the file is rejected. */
  u64(what = 'u64'): number {
    const v = this.u64big(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is absurdly large`);
    return Number(v);
  }

  /**
   * A count of items that each take at least `minItemBytes` in the file: rejected when the rest
   * of the file could not possibly hold them, so a corrupt count never drives an allocation.
   */
  checkCount(count: number, minItemBytes: number, what: string): void {
    if (!Number.isSafeInteger(count) || count < 0) this.fail(`${what} ${count} is invalid`);
    if (count * minItemBytes > this.remaining) {
      this.fail(
        `${what} ${count} needs at least ${count * minItemBytes} bytes at offset ${this.position} ` +
          `but only ${this.remaining} remain (size ${this.file.size})`,
      );
    }
  }

  /** `n` raw bytes (a copy). */
  bytes(n: number, what = 'bytes'): Uint8Array {
    if (n > this.windowSize) {
      const out = this.file.read(this.position, n, what);
      this.position += n;
      return out;
    }
    const i = this.ensure(n, what);
    this.position += n;
    return this.window.slice(i, i + n);
  }

  /** `n` bytes decoded as UTF-8 (invalid sequences become U+FFFD). */
  utf8(n: number, what = 'string'): string {
    if (n > this.windowSize) return utf8.decode(this.bytes(n, what));
    const i = this.ensure(n, what);
    this.position += n;
    return utf8.decode(this.window.subarray(i, i + n));
  }

  skip(n: number, what = 'skipped bytes'): void {
    this.file.checkRange(this.position, n, what);
    this.position += n;
  }
}
