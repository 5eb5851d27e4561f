// Runs the CLI from TypeScript sources (tests and development: `tsx src/cli/run.ts …`).
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`qlora: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
