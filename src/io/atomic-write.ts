/** Writes a file through a temporary sibling and a rename, so readers never see a half-written file. */
import { fs, hostProcess, path } from './host.js';

/**
 * Calls `write(fd)` on a fresh temporary file next to `target`, fsyncs it, then renames it over
 * `target`. On any error the temporary file is removed and the target is left untouched.
 */
export function writeFileAtomic(target: string, write: (fd: number) => void): void {
  const dir = path.dirname(target);
  const tmp = path.join(dir, `.${path.basename(target)}.${hostProcess.pid}.${Date.now()}.tmp`);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx');
  } catch (e) {
    throw naming(e, target);
  }
  try {
    write(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    fs.rmSync(tmp, { force: true });
    throw naming(e, target);
  }
  try {
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw naming(e, target);
  }
}

/**
 * A system error from writing (ENOSPC, EIO, EBADF …) names no file, or names the temporary one:
 * say which file was being written. Errors of our own pass through unchanged.
 */
function naming(e: unknown, target: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof err.code !== 'string' || err.message.startsWith(target))
    return e;
  const named = new Error(`${target}: cannot write: ${err.message}`, {
    cause: e,
  }) as NodeJS.ErrnoException;
  named.code = err.code;
  return named;
}

/** Writes all of `data` at the fd's current position (writeSync may write less than asked). */
export function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength)
    done += fs.writeSync(fd, data, done, Math.min(data.byteLength - done, 1 << 30));
}

/**
 * A file written piece by piece (e.g. one prediction at a time) that appears under its name only
 * when complete: pieces go to a temporary sibling, `commit` fsyncs and renames it, `abort` removes it.
 */
export class AtomicFileWriter {
  private readonly tmp: string;
  private fd: number | null;

  constructor(readonly target: string) {
    this.tmp = path.join(
      path.dirname(target),
      `.${path.basename(target)}.${process.pid}.${Date.now()}.tmp`,
    );
    this.fd = fs.openSync(this.tmp, 'wx');
  }

  write(text: string): void {
    if (this.fd === null) throw new Error(`${this.target}: already closed`);
    writeAll(this.fd, Buffer.from(text, 'utf8'));
  }

  commit(): void {
    if (this.fd === null) throw new Error(`${this.target}: already closed`);
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    this.fd = null;
    try {
      fs.renameSync(this.tmp, this.target);
    } catch (e) {
      fs.rmSync(this.tmp, { force: true });
      throw e;
    }
  }

  abort(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    fs.rmSync(this.tmp, { force: true });
  }
}
