// Injected by esbuild into the browser bundle: the global `Buffer` the tokenizers use (Node's API,
// from the `buffer` package).
export { Buffer } from 'buffer';
