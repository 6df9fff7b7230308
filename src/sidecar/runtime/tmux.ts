/**
 * The node's private tmux server, `tmux -S <root>/tmux.sock` (never the default server), driven
 * through execa with argv arrays and a timeout (spawn.ts counts each client). Targets use tmux's exact-match form `=<name>` so a
 * name never matches another session by prefix.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { assertAgentUid, isAgentUid, nodePaths } from './workspace.js';
import { coalesce } from './coalesce.js';
import { spawnProcess } from './spawn.js';

export const TMUX_TIMEOUT_MS = 5_000;
/** Unix socket paths are limited to 108 bytes (sun_path) including the terminating NUL. */
const MAX_SOCKET_PATH = 107;
const SESSION_PREFIX = 'agent-';

/**
 * `agent-<uid>`: deterministic, collision-free and reversible, and made only of [a-z0-9-], so
 * neither tmux's target syntax (`:` `.`) nor its name sanitising can alter it.
 */
export function sessionNameFor(uid: string): string {
  assertAgentUid(uid);
  return `${SESSION_PREFIX}${uid}`;
}

export function uidFromSessionName(name: string): string | undefined {
  const uid = name.startsWith(SESSION_PREFIX) ? name.slice(SESSION_PREFIX.length) : '';
  return isAgentUid(uid) ? uid : undefined;
}

/** An exact-match session target; `=<name>:` is its current window (one pane per agent session). */
export const sessionTarget = (name: string) => `=${name}`;
export const paneTarget = (name: string) => `=${name}:`;

/**
 * tmux splits its argv into commands at arguments ending in `;` (`\;` keeps it literal, and the
 * backslash is removed). Every argument goes through this, so no value can inject a tmux command.
 */
export function tmuxArg(arg: string): string {
  return arg.endsWith(';') ? `${arg.slice(0, -1)}\\;` : arg;
}

/** POSIX shell single-quoting. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * A shell program as tmux's pipe-pane takes it (it runs it via `/bin/sh -c`, the pane's output on
 * stdin). pipe-pane expands strftime `%` sequences and `#` formats before the shell sees it, so both
 * are escaped.
 */
export function pipeCommand(script: string): string {
  return script.replace(/#/g, '##').replace(/%/g, '%%');
}

const BASE_ENV_NAMES = ['HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR', 'PATH'] as const;
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The environment tmux runs with. The server copies it as its global environment when it starts,
 * and every session process inherits that, so only a small, harmless set of the sidecar's own
 * variables is passed on (not its credentials or anything else it happens to hold).
 */
export function baseEnvironment(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of BASE_ENV_NAMES) {
    const v = env[name];
    if (v !== undefined && v !== '') out[name] = v;
  }
  out.PATH ??= DEFAULT_PATH;
  return out;
}

export class TmuxError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(`tmux ${args[0] ?? ''} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || 'no output'}`);
    this.name = 'TmuxError';
  }
}

export interface TmuxResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** The socket path for a node root (validated against the sun_path limit). */
export function tmuxSocket(root: string): string {
  const { socket } = nodePaths(root);
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new Error(`tmux socket path too long (${Buffer.byteLength(socket)} > ${MAX_SOCKET_PATH} bytes): ${socket}`);
  }
  return socket;
}

/** A tmux command and its arguments, unescaped. */
export type TmuxCommand = readonly string[];

/**
 * The argv of one client call that runs `commands` in order (pure): every argument escaped
 * (tmuxArg), the commands separated by `;`. The server runs them in one go and stops at the first
 * that fails, so one spawn does what took one each.
 */
export function chainArgs(commands: readonly TmuxCommand[]): string[] {
  return commands.flatMap((c, i) => [...(i > 0 ? [';'] : []), ...c.map(tmuxArg)]);
}

/**
 * Runs commands (one client call) on the node's server. Resolves with the exit status (non-zero
 * included: the first command that failed); rejects only when tmux could not be run or timed out.
 */
export async function tmuxChain(root: string, commands: readonly TmuxCommand[], timeoutMs = TMUX_TIMEOUT_MS): Promise<TmuxResult> {
  const argv = chainArgs(commands);
  const full = ['-f', '/dev/null', '-S', tmuxSocket(root), ...argv];
  const r = await spawnProcess('tmux', full, {
    reject: false,
    timeout: timeoutMs,
    env: baseEnvironment(),
    extendEnv: false,
    cwd: '/',
    stdin: 'ignore',
    stripFinalNewline: false,
    // No exit hook per call: a tmux client ends by itself within its timeout, and hooking every
    // short call into process signals costs more than the call.
    cleanup: false,
  });
  if (r.timedOut) throw new TmuxError(argv, undefined, `timed out after ${timeoutMs} ms`);
  if (r.exitCode === undefined) throw new TmuxError(argv, undefined, r.message ?? 'could not run tmux');
  return { exitCode: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Runs one tmux command on the node's server (see tmuxChain). */
export function tmux(root: string, args: TmuxCommand, timeoutMs = TMUX_TIMEOUT_MS): Promise<TmuxResult> {
  return tmuxChain(root, [args], timeoutMs);
}

/** The server was exiting (its last session just ended) while we connected: safe to retry. */
function isServerExiting(stderr: string): boolean {
  return /server exited unexpectedly|lost server/i.test(stderr);
}

/**
 * No server on the socket (or one that is exiting, so it holds no session any more), or no such
 * session/window/pane: the thing asked about does not exist.
 */
export function isAbsent(stderr: string): boolean {
  return isServerExiting(stderr) || /no server running|error connecting to|can't find (session|window|pane)|no current (session|target)/i.test(stderr);
}

/**
 * Runs commands (one client call) that must succeed; retries briefly when the call raced a server
 * that was shutting down (which ran none of them).
 */
export async function tmuxChainOk(root: string, commands: readonly TmuxCommand[], timeoutMs = TMUX_TIMEOUT_MS): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const r = await tmuxChain(root, commands, timeoutMs);
    if (r.exitCode === 0) return r.stdout;
    if (attempt >= 5 || !isServerExiting(r.stderr)) throw new TmuxError(chainArgs(commands), r.exitCode, r.stderr);
    await sleep(20 * attempt);
  }
}

export interface PaneInfo {
  sessionName: string;
  paneId: string;
  panePid: number;
  /** The pane's process exited and tmux has read and piped all its output (remain-on-exit keeps it). */
  dead: boolean;
  deadStatus?: number;
  deadSignal?: number;
  /** pipe-pane is attached. */
  piped: boolean;
  /** The window keeps a dead pane (remain-on-exit), so its exit status stays readable. */
  remainOnExit: boolean;
}

const PANE_FORMAT = '#{session_name} #{pane_id} #{pane_pid} #{pane_dead} #{pane_dead_status} #{pane_dead_signal} #{pane_pipe} #{remain-on-exit}';

const optionalInt = (s: string | undefined) => (s && /^\d+$/.test(s) ? Number(s) : undefined);

/** Parses list-panes output in PANE_FORMAT; lines of other shapes (foreign session names) are skipped. */
export function parsePanes(stdout: string): PaneInfo[] {
  const panes: PaneInfo[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.split(' ');
    if (f.length !== 8) continue;
    const [sessionName, paneId, pid, dead, status, signal, pipe, remain] = f as [string, string, string, string, string, string, string, string];
    const panePid = optionalInt(pid);
    if (!paneId.startsWith('%') || panePid === undefined) continue;
    const deadStatus = optionalInt(status);
    const deadSignal = optionalInt(signal);
    panes.push({
      sessionName,
      paneId,
      panePid,
      dead: dead === '1',
      ...(deadStatus !== undefined ? { deadStatus } : {}),
      ...(deadSignal !== undefined ? { deadSignal } : {}),
      piped: pipe === '1',
      remainOnExit: remain === 'on',
    });
  }
  return panes;
}

/** Lists one session's panes in PANE_FORMAT (for parsePanes): the last command of a chain that changed them. */
export function listSessionPanes(sessionName: string): TmuxCommand {
  return ['list-panes', '-s', '-t', sessionTarget(sessionName), '-F', PANE_FORMAT];
}

/** Every pane on the node's server; empty when there is no server. */
async function readPanes(root: string): Promise<PaneInfo[]> {
  const args = ['list-panes', '-a', '-F', PANE_FORMAT];
  const r = await tmux(root, args);
  if (r.exitCode !== 0) {
    if (isAbsent(r.stderr)) return [];
    throw new TmuxError(args, r.exitCode, r.stderr);
  }
  return parsePanes(r.stdout);
}

/** One `list-panes -a` per node root at a time, shared by whoever asks meanwhile (see coalesce). */
const sharedReads = new Map<string, () => Promise<PaneInfo[]>>();

/**
 * Every pane on the node's server (empty when there is none). Many agents are looked at at once
 * (the relist, the heartbeat, launches, cleanups): they share one tmux call rather than one each,
 * since a spawn from a large Node process is what the sidecar spends most of its CPU on.
 */
export function listPanes(root: string): Promise<PaneInfo[]> {
  let read = sharedReads.get(root);
  if (!read) {
    read = coalesce(() => readPanes(root));
    sharedReads.set(root, read);
  }
  return read();
}

/** The first pane of a session, or undefined when the session does not exist. */
export async function findPane(root: string, sessionName: string): Promise<PaneInfo | undefined> {
  return (await listPanes(root)).find((p) => p.sessionName === sessionName);
}

/** Kills a session; false when it did not exist. */
export async function killSession(root: string, sessionName: string): Promise<boolean> {
  const args = ['kill-session', '-t', sessionTarget(sessionName)];
  const r = await tmux(root, args);
  if (r.exitCode === 0) return true;
  if (isAbsent(r.stderr)) return false;
  throw new TmuxError(args, r.exitCode, r.stderr);
}

/** Stops the whole server (tests, and `dev` teardown); false when none was running. */
export async function killServer(root: string): Promise<boolean> {
  const r = await tmux(root, ['kill-server']);
  if (r.exitCode === 0) return true;
  if (isAbsent(r.stderr)) return false;
  throw new TmuxError(['kill-server'], r.exitCode, r.stderr);
}
