/**
 * `agent-operator supervise <command> [options]`: runs another agent-operator command as a child
 * and starts it again when it dies. In a pod, the agents' tmux sessions live in the sidecar's
 * container, and a container ends when its main process does: without this parent, a sidecar crash
 * would take every running agent on the node with it. With it, only the sidecar process restarts;
 * the sessions carry on and the new sidecar rediscovers them. SIGTERM/SIGINT are passed on, and
 * the supervisor then exits as the child did.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { pino, type Logger } from 'pino';
import { sleep } from '../kube/backoff.js';
import { untilSignal, UsageError } from './flags.js';
import { decideRestart, DEFAULT_RESTART_POLICY, type RestartPolicy } from './restartPolicy.js';

const USAGE = `Usage: agent-operator supervise <command> [options]

Runs 'agent-operator <command> [options]' and starts it again, with a growing delay (1 s doubling to
30 s, reset after a minute of running), whenever it exits without being asked to; a usage error
(exit code 2) ends the supervisor too. SIGTERM and SIGINT are passed to the command, and the
supervisor exits with its exit code. Meant for the node sidecar in a pod, whose container must
outlive a sidecar crash so the agents' sessions do.`;

export interface SuperviseOptions {
  command: string;
  args: readonly string[];
  logger: Logger;
  /** Aborted: pass SIGTERM to the child and return once it has exited. */
  stop: AbortSignal;
  policy?: RestartPolicy;
  /** Called with each child's pid once it has started (tests, logs). */
  onStart?: (pid: number) => void;
}

/** Runs the child until `stop`; resolves with the exit code to exit with. */
export async function supervise(o: SuperviseOptions): Promise<number> {
  const policy = o.policy ?? DEFAULT_RESTART_POLICY;
  let crashes = 0;
  for (;;) {
    if (o.stop.aborted) return 0;
    const started = Date.now();
    const child = spawn(o.command, o.args, { stdio: 'inherit' });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (err) => {
        o.logger.error({ err: err.message }, 'cannot start the supervised command');
        resolve({ code: 1, signal: null });
      });
    });
    if (child.pid !== undefined) {
      o.logger.info({ pid: child.pid, restarts: crashes }, 'supervised command started');
      o.onStart?.(child.pid);
    }
    const forward = () => child.kill('SIGTERM');
    o.stop.addEventListener('abort', forward, { once: true });
    const exit = await exited;
    o.stop.removeEventListener('abort', forward);
    if (o.stop.aborted) {
      o.logger.info({ code: exit.code, signal: exit.signal }, 'supervised command stopped');
      return exit.code ?? 128 + (exit.signal ? constants.signals[exit.signal] : 0);
    }
    const decision = decideRestart({ ...exit, ranMs: Date.now() - started }, crashes, policy);
    if (decision.kind === 'give-up') {
      o.logger.error({ code: exit.code }, 'the supervised command was called wrongly; not restarting it');
      return decision.exitCode;
    }
    crashes = decision.crashesInARow;
    o.logger.error({ code: exit.code, signal: exit.signal, restartInMs: decision.delayMs, crashesInARow: crashes }, 'supervised command exited; restarting it');
    await sleep(decision.delayMs, o.stop);
  }
}

export async function runSupervise(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--help' || command === '-h') {
    console.log(USAGE);
    return 0;
  }
  if (!command || command.startsWith('-')) throw new UsageError(`supervise: expected the command to run, e.g. 'supervise sidecar --node-name=N --root=DIR'`);
  if (command === 'supervise') throw new UsageError('supervise: a supervisor under a supervisor restarts nothing more');
  const logger = pino().child({ service: 'supervise', command });
  const cli = fileURLToPath(new URL('../cli.js', import.meta.url));
  const stop = new AbortController();
  const signal = untilSignal();
  void signal.promise.then((sig) => {
    logger.info({ signal: sig }, 'stopping the supervised command');
    stop.abort();
  });
  try {
    return await supervise({ command: process.execPath, args: [...process.execArgv, cli, command, ...rest], logger, stop: stop.signal });
  } finally {
    signal.dispose();
  }
}
