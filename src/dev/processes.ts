/**
 * Long-running child processes of the local control plane. Each one writes its output to a log
 * file and its pid to a pid file in the state dir, and is killed when the parent dies: by the
 * kernel (PR_SET_PDEATHSIG via util-linux `setpriv`, even on SIGKILL of the parent), by exit and
 * signal hooks otherwise, and at worst by the next start, which kills what the pid files name.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, fstatSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { withTimeout } from '../kube/backoff.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  readonly exited: Promise<ExitInfo>;
  running(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** The last lines of its log, for error messages. */
  logTail(lines?: number): string;
}

interface PidRecord {
  pid: number;
  command: string;
}

const live = new Set<ManagedProcess>();
let hooksInstalled = false;

function killAllNow(): void {
  for (const p of live) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Last-resort cleanup in this process. 'exit' hooks must be synchronous, hence SIGKILL. A signal
 * hook only acts when nobody else handles the signal (it would otherwise replace their graceful
 * shutdown), and then re-raises it so the process still dies of it. It runs first, before any
 * other listener could remove itself and make the hook look alone.
 */
function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      if (process.listenerCount(sig) > 1) return;
      killAllNow();
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.prependListener(sig, onSignal);
  }
}

/** The first executable named `cmd` on PATH. */
export function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, cmd);
    if (dir && existsSync(candidate)) return candidate;
  }
  return undefined;
}

const setpriv = onPath('setpriv');

export function pidDir(stateDir: string): string {
  return join(stateDir, 'pids');
}

function tail(path: string, lines: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const size = fstatSync(fd).size;
    const length = Math.min(size, 64 * 1024);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    return buf
      .toString('utf8')
      .split('\n')
      .slice(-lines - 1)
      .join('\n')
      .trimEnd();
  } catch {
    return '';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export async function startProcess(opts: {
  name: string;
  command: string;
  args: string[];
  stateDir: string;
  logger: Logger;
  /** Added to this process's environment. */
  env?: Record<string, string>;
}): Promise<ManagedProcess> {
  installHooks();
  const logDir = join(opts.stateDir, 'logs');
  await mkdir(logDir, { recursive: true });
  await mkdir(pidDir(opts.stateDir), { recursive: true });
  const logPath = join(logDir, `${opts.name}.log`);
  const pidPath = join(pidDir(opts.stateDir), `${opts.name}.pid`);
  // The child writes to the file itself: no pipe through this process that could fill or break.
  const out = openSync(logPath, 'a');
  const [file, args] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', '--', opts.command, ...opts.args]] : [opts.command, opts.args];
  const child = spawn(file, args, { stdio: ['ignore', out, out], ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}) });
  closeSync(out);
  const spawned = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', reject);
  });
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let running = true;
  const record: PidRecord = { pid: spawned, command: opts.command };
  await writeFile(pidPath, JSON.stringify(record));
  const proc: ManagedProcess = {
    name: opts.name,
    pid: spawned,
    logPath,
    exited,
    running: () => running,
    logTail: (lines = 40) => tail(logPath, lines),
    stop: async (graceMs = 10_000) => {
      if (running) {
        child.kill('SIGTERM');
        const stopped = await withTimeout(exited, graceMs, `${opts.name} to exit`).then(
          () => true,
          () => false,
        );
        if (!stopped) {
          opts.logger.warn({ process: opts.name, pid: spawned, graceMs }, 'did not stop after SIGTERM; sending SIGKILL');
          child.kill('SIGKILL');
          await withTimeout(exited, 10_000, `${opts.name} to exit`).catch(() => undefined);
        }
      }
      await rm(pidPath, { force: true });
    },
  };
  void exited.then((info) => {
    running = false;
    live.delete(proc);
    opts.logger.debug({ process: opts.name, pid: spawned, ...info }, 'process exited');
  });
  live.add(proc);
  opts.logger.debug({ process: opts.name, pid: spawned, logPath }, 'process started');
  return proc;
}

function cmdlineOf(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return undefined;
  }
}

/**
 * Kills processes a previous, crashed run recorded in the state dir's pid files. A pid counts as
 * ours only while its command line still names the recorded binary and this state dir (pids get
 * reused).
 */
export async function killLeftovers(stateDir: string, logger: Logger, timeoutMs = 10_000): Promise<number> {
  const dir = pidDir(stateDir);
  const files = await readdir(dir).catch(() => [] as string[]);
  let killed = 0;
  for (const f of files.filter((n) => n.endsWith('.pid'))) {
    const path = join(dir, f);
    let record: PidRecord | undefined;
    try {
      record = JSON.parse(await readFile(path, 'utf8')) as PidRecord;
    } catch {
      record = undefined;
    }
    const isOurs = (pid: number) => {
      const argv = cmdlineOf(pid);
      return !!argv && !!record && argv.includes(record.command) && argv.some((a) => a.includes(stateDir));
    };
    if (record && isOurs(record.pid)) {
      logger.warn({ pid: record.pid, command: record.command }, 'killing a leftover process of a previous run');
      try {
        process.kill(record.pid, 'SIGKILL');
        killed++;
      } catch {
        // gone meanwhile
      }
      const deadline = Date.now() + timeoutMs;
      while (isOurs(record.pid)) {
        if (Date.now() > deadline) throw new Error(`leftover process ${record.pid} (${record.command}) did not die`);
        await sleep(50);
      }
    }
    await rm(path, { force: true });
  }
  return killed;
}
