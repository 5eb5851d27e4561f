import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.js';
import { registerPlanCommand } from './plan.js';
import { registerDataCommands } from './data.js';
import { registerExportCommands } from './export.js';
import { registerGenerateCommand } from './generate.js';
import { registerEvalCommand } from './eval.js';
import { registerInfoCommand } from './info.js';
import { registerInitRandomCommand } from './init-random.js';
import { registerMergeCommand } from './merge.js';
import { registerQuantizeCommand } from './quantize.js';
import { registerServeCommand } from './serve.js';
import { registerTrainCommand } from './train.js';
import { registerWebCommand } from './web.js';

/** Builds the `qlora` command tree. Subcommands register themselves here as they land. */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('qlora')
    .description(
      'QLoRA fine-tuning of Llama-family models in TypeScript: 4-bit NF4 base, LoRA adapters.',
    )
    .version(VERSION, '-v, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    // A mistyped flag gets one line naming the closest flag (commander's suggestion), not the whole help.
    .configureOutput({ outputError: (text, write) => write(oneLineError(text)) })
    .exitOverride();
  program
    .command('backends')
    .description('list the compute backends and what this machine offers them')
    .action(async () => {
      const { describeDevices } = await import('./devices.js');
      for (const line of await describeDevices()) console.log(line);
    });
  registerPlanCommand(program);
  registerDataCommands(program);
  registerExportCommands(program);
  registerGenerateCommand(program);
  registerInfoCommand(program);
  registerInitRandomCommand(program);
  registerEvalCommand(program);
  registerTrainCommand(program);
  registerMergeCommand(program);
  registerQuantizeCommand(program);
  registerWebCommand(program);
  registerServeCommand(program);
  return program;
}

/** commander's "error: unknown option '--x'\n(Did you mean --y?)" as one line, with where to look otherwise. */
export function oneLineError(text: string): string {
  const lines = text
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '');
  const suggestion = /^\(Did you mean (.+)\?\)$/.exec(lines[1] ?? '');
  if (suggestion) return `${lines[0]} (did you mean ${suggestion[1]}?)\n`;
  if (/unknown (option|command)/.test(lines[0] ?? '')) return `${lines[0]} (see --help)\n`;
  return `${lines.join(' ')}\n`;
}

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    // A command may have set an exit status of its own (e.g. 130 after Ctrl-C in train).
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    throw err;
  }
}
