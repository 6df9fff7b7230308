/** Stand-alone entry for `report`, so a session can run it without the other subcommands' modules. */
import { runReport } from './cli.js';

runReport(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`agent-operator report: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
