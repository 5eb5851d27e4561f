import { DatasetError } from './errors.js';

/** Field names a row format reads. Column mappings target these. */
export const KNOWN_FIELDS = [
  'text',
  'prompt',
  'completion',
  'instruction',
  'input',
  'output',
  'messages',
  'system',
] as const;

/** target field → source column, e.g. {prompt: 'mr', completion: 'ref'}. */
export type ColumnMapping = Readonly<Record<string, string>>;

/** Parses `prompt=mr,completion=ref`. */
export function parseColumnMapping(spec: string): ColumnMapping {
  const mapping: Record<string, string> = {};
  for (const part of spec.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    const target = part.slice(0, eq).trim();
    const source = part.slice(eq + 1).trim();
    if (eq < 0 || target === '' || source === '') {
      throw new DatasetError(
        `bad column mapping '${part.trim()}': write target=column, e.g. prompt=mr,completion=ref`,
      );
    }
    if (!(KNOWN_FIELDS as readonly string[]).includes(target)) {
      throw new DatasetError(
        `bad column mapping '${part.trim()}': '${target}' is not one of ${KNOWN_FIELDS.join(', ')}`,
      );
    }
    if (target in mapping) throw new DatasetError(`column mapping names '${target}' twice`);
    mapping[target] = source;
  }
  return mapping;
}

/**
 * Applies a mapping to one row: mapped fields are copied under their target names (the source
 * columns stay, so a prompt template can still use them). Returns the missing source column, if any.
 */
export function applyColumnMapping(
  row: Readonly<Record<string, unknown>>,
  mapping: ColumnMapping,
): { row: Record<string, unknown>; missing?: string } {
  const out: Record<string, unknown> = { ...row };
  for (const [target, source] of Object.entries(mapping)) {
    if (!Object.prototype.hasOwnProperty.call(row, source)) return { row: out, missing: source };
    out[target] = row[source];
  }
  return { row: out };
}
