#!/usr/bin/env node
// The CLI entry point. The TypeScript sources are compiled to dist/ by `npm install` (the prepare script).
import { main } from '../dist/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`qlora: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
