/** A one-line progress display: redrawn in place on a terminal, a line every few seconds otherwise. */
export class ProgressLine {
  private lastPrint = 0;
  private readonly tty: boolean;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly everyMs = 5000,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update(text: string, force = false): void {
    const now = Date.now();
    if (this.tty) {
      this.stream.write(`\r\x1b[2K${text}`);
    } else if (force || now - this.lastPrint >= this.everyMs) {
      this.stream.write(`${text}\n`);
      this.lastPrint = now;
    }
  }

  /** Prints a message on its own line without losing the progress line. */
  log(text: string): void {
    if (this.tty) this.stream.write(`\r\x1b[2K${text}\n`);
    else this.stream.write(`${text}\n`);
  }

  done(): void {
    if (this.tty) this.stream.write('\n');
  }
}

export function bar(fraction: number, width = 24): string {
  const f = Math.min(1, Math.max(0, fraction));
  const full = Math.round(f * width);
  return `${'█'.repeat(full)}${'░'.repeat(width - full)}`;
}

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`
    : `${m}:${String(sec).padStart(2, '0')}`;
}
