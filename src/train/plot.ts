/** A small dependency-free SVG line chart of training and evaluation loss. */

export interface Series {
  readonly label: string;
  readonly color: string;
  readonly points: ReadonlyArray<readonly [number, number]>;
}

export interface AxisLabels {
  readonly x: string;
  readonly y: string;
}

/**
 * Ticks at "nice" values (1, 2 or 5 × 10^k apart) from at or below `lo` to at or above `hi`, about
 * `count` intervals, as a person would draw an axis. `integer` keeps the step at 1 or more.
 */
export function niceTicks(lo: number, hi: number, count = 5, integer = false): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi - lo < 1e-12) {
    const d = Math.abs(lo) > 1e-12 ? Math.abs(lo) * 0.1 : 1;
    [lo, hi] = [lo - d, hi + d];
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw * 0.999) ?? 10 * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const ticks: number[] = [];
  for (let k = first; k <= last; k++) ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

/** A tick's text: no more digits than the step between ticks needs. */
function tickText(v: number, step: number): string {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(Math.min(decimals, 10));
}

export function lossCurveSvg(
  series: readonly Series[],
  title = 'loss',
  axes: AxisLabels = { x: 'step', y: 'loss' },
): string {
  const W = 720;
  const H = 420;
  const m = { left: 72, right: 20, top: 36, bottom: 52 };
  const all = series
    .flatMap((s) => s.points)
    .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  // The axes span their nice ticks, so the first and last tick sit on the frame.
  const xTicks = niceTicks(Math.min(...xs, 0), Math.max(...xs, 1), 6, true);
  const yTicks =
    ys.length > 0 ? niceTicks(Math.min(...ys), Math.max(...ys), 5) : niceTicks(0, 1, 5);
  const xStep = xTicks.length > 1 ? xTicks[1]! - xTicks[0]! : 1;
  const yStep = yTicks.length > 1 ? yTicks[1]! - yTicks[0]! : 1;
  const [x0, x1] = [xTicks[0]!, xTicks.at(-1)!];
  const [y0, y1] = [yTicks[0]!, yTicks.at(-1)!];
  const px = (x: number) => m.left + ((x - x0) / (x1 - x0 || 1)) * (W - m.left - m.right);
  const py = (y: number) => H - m.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - m.top - m.bottom);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escape(title)}</text>`);
  for (const y of yTicks) {
    const yy = py(y).toFixed(1);
    out.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${yy}" y2="${yy}" stroke="#e5e5e5"/>`);
    out.push(
      `<text class="y-tick" x="${m.left - 6}" y="${(py(y) + 4).toFixed(1)}" text-anchor="end">${tickText(y, yStep)}</text>`,
    );
  }
  for (const x of xTicks) {
    const xx = px(x).toFixed(1);
    out.push(
      `<line x1="${xx}" x2="${xx}" y1="${H - m.bottom}" y2="${H - m.bottom + 4}" stroke="#333"/>`,
    );
    out.push(
      `<text class="x-tick" x="${xx}" y="${H - m.bottom + 18}" text-anchor="middle">${tickText(x, xStep)}</text>`,
    );
  }
  out.push(
    `<text class="x-label" x="${(m.left + W - m.right) / 2}" y="${H - 12}" text-anchor="middle">${escape(axes.x)}</text>`,
  );
  out.push(
    `<text class="y-label" x="16" y="${(m.top + H - m.bottom) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(m.top + H - m.bottom) / 2})">${escape(axes.y)}</text>`,
  );
  out.push(
    `<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${H - m.bottom}" stroke="#333"/>`,
  );
  out.push(
    `<line x1="${m.left}" x2="${W - m.right}" y1="${H - m.bottom}" y2="${H - m.bottom}" stroke="#333"/>`,
  );
  series.forEach((s, i) => {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    out.push(`<g class="series" data-label="${escape(s.label)}" data-points="${pts.length}">`);
    if (pts.length > 0) {
      const d = pts
        .map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(y).toFixed(1)}`)
        .join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
      if (pts.length < 60)
        for (const [x, y] of pts)
          out.push(
            `<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="2.5" fill="${s.color}"/>`,
          );
    }
    out.push('</g>');
    const lx = W - m.right - 150;
    const ly = m.top + 8 + i * 18;
    out.push(
      `<line x1="${lx}" x2="${lx + 20}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"/>`,
    );
    out.push(`<text x="${lx + 26}" y="${ly + 4}">${escape(s.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function escape(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}
