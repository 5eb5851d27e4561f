// What makes an error message clear: it names the file (or its folder) and carries no raw
// JavaScript engine text, which would mean some code path met input it never checked.
import path from 'node:path';

/** Engine messages that mean an unchecked value reached code that assumed its type or size. */
export const RAW_ENGINE_TEXT =
  /is not a function|Cannot read propert|Cannot set propert|is not iterable|is not defined|Cannot convert|Cannot create property|\bundefined\b|Maximum call stack|Invalid array length|Invalid string length|Invalid typed array length|Array buffer allocation failed|out of memory|Map maximum size/;

/**
 * The same without "undefined": for a chat template's own runtime errors, where Jinja speaks of
 * the template's undefined variables ("Cannot perform operation + on undefined values").
 */
export const RAW_ENGINE_TEXT_IN_TEMPLATES = new RegExp(
  RAW_ENGINE_TEXT.source.replace('|\\bundefined\\b', ''),
);

/** 'clean' or 'unclear <json message>' for an error thrown by a case whose mutated file is `target` in `dir`. */
export function classify(e: unknown, target: string, dir: string): string {
  const message = e instanceof Error ? e.message : `non-Error thrown: ${String(e)}`;
  const namesFile = message.includes(target) || message.includes(path.basename(dir));
  if (e instanceof Error && namesFile && !RAW_ENGINE_TEXT.test(message)) return 'clean';
  return `unclear ${JSON.stringify(message.slice(0, 300))}`;
}
