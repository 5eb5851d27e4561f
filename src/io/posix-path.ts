/**
 * POSIX path functions for hosts without node:path (the browser worker's memory file system, whose
 * paths are all absolute, '/'-separated). Semantics follow node:path/posix for the members the
 * library uses; the working directory is '/'.
 */
function normalizeParts(parts: string[]): string[] {
  const out: string[] = [];
  for (const p of parts) {
    if (p === '' || p === '.') continue;
    if (p === '..') out.pop();
    else out.push(p);
  }
  return out;
}

export function normalize(p: string): string {
  if (p === '') return '.';
  const abs = p.startsWith('/');
  const trailing = p.endsWith('/');
  const parts = abs ? normalizeParts(p.split('/')) : relativeParts(p.split('/'));
  let s = parts.join('/');
  if (abs) s = `/${s}`;
  else if (s === '') s = '.';
  if (trailing && s !== '/') s += '/';
  return s;
}

/** Relative paths keep leading '..' segments. */
function relativeParts(parts: string[]): string[] {
  const out: string[] = [];
  for (const p of parts) {
    if (p === '' || p === '.') continue;
    if (p === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else out.push(p);
  }
  return out;
}

export function join(...segments: string[]): string {
  const joined = segments.filter((s) => s !== '').join('/');
  return joined === '' ? '.' : normalize(joined);
}

export function resolve(...segments: string[]): string {
  let acc = '';
  for (let i = segments.length - 1; i >= 0 && !acc.startsWith('/'); i--) {
    const s = segments[i]!;
    if (s !== '') acc = acc === '' ? s : `${s}/${acc}`;
  }
  return `/${normalizeParts(`/${acc}`.split('/')).join('/')}`;
}

export function isAbsolute(p: string): boolean {
  return p.startsWith('/');
}

export function dirname(p: string): string {
  if (p === '') return '.';
  const trimmed = p.length > 1 ? p.replace(/\/+$/, '') : p;
  const i = trimmed.lastIndexOf('/');
  if (i < 0) return '.';
  if (i === 0) return '/';
  return trimmed.slice(0, i);
}

export function basename(p: string, ext?: string): string {
  const trimmed = p.length > 1 ? p.replace(/\/+$/, '') : p;
  let b = trimmed.slice(trimmed.lastIndexOf('/') + 1);
  if (ext && b.endsWith(ext) && b !== ext) b = b.slice(0, -ext.length);
  return b;
}

export function extname(p: string): string {
  const b = basename(p);
  const i = b.lastIndexOf('.');
  return i <= 0 ? '' : b.slice(i);
}

export function relative(from: string, to: string): string {
  const a = resolve(from).split('/').filter(Boolean);
  const b = resolve(to).split('/').filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
}

export const sep = '/';
export const delimiter = ':';

export const posixPath = {
  normalize,
  join,
  resolve,
  isAbsolute,
  dirname,
  basename,
  extname,
  relative,
  sep,
  delimiter,
};
