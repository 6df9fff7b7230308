/**
 * Processes seen through /proc. Every process of an agent's session carries a marker in its
 * environment: AGENT_UID=<uid> together with AGENT_PROMPT_FILE=<root>/agents/<uid>/prompt, so a
 * node (or one of several simulated nodes on one machine) only ever matches its own agents.
 * Processes vanish while we read them: ENOENT/ESRCH are normal and mean "gone".
 */
import { readdir, readFile, readlink } from './boundedFs.js';
import { AGENT_ENV } from '../../api/constants.js';
import { coalesce } from './coalesce.js';
import { errnoOf } from './files.js';
import { isAgentUid, workspacePaths } from './workspace.js';

export interface ProcInfo {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  /** R, S, D, Z (zombie), T (stopped), X (dead), ... */
  state: string;
  /** Start time in clock ticks since boot: with the pid, identifies a process across pid reuse. */
  startTime: number;
  comm: string;
}

export interface Proc extends ProcInfo {
  /** AGENT_UID and AGENT_PROMPT_FILE from the environment, when set. */
  agentUid?: string;
  promptFile?: string;
}

/** Parses /proc/<pid>/stat (the command name may contain spaces and parentheses). */
export function parseStat(text: string): ProcInfo | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open).trim());
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); ppid 4, pgrp 5, session 6, starttime 22.
  const [state, ppid, pgid, sid] = [rest[0], Number(rest[1]), Number(rest[2]), Number(rest[3])];
  const startTime = Number(rest[19]);
  if (!state || ![pid, ppid, pgid, sid, startTime].every(Number.isInteger)) return undefined;
  return { pid, ppid, pgid, sid, state, startTime, comm: text.slice(open + 1, close) };
}

/** The value of `name` in a NUL-separated environ block, or undefined. */
export function environValue(environ: Buffer, name: string): string | undefined {
  const key = Buffer.from(`${name}=`);
  let at = 0;
  while (at < environ.length) {
    let end = environ.indexOf(0, at);
    if (end < 0) end = environ.length;
    if (end - at >= key.length && environ.subarray(at, at + key.length).equals(key)) {
      return environ.subarray(at + key.length, end).toString('utf8');
    }
    at = end + 1;
  }
  return undefined;
}

/** A zombie or dead task holds nothing and cannot be signalled into exiting: it counts as gone. */
export function isGone(p: Pick<ProcInfo, 'state'>): boolean {
  return p.state === 'Z' || p.state === 'X' || p.state === 'x';
}

function isNormalVanish(err: unknown): boolean {
  const code = errnoOf(err);
  // EACCES/EPERM: another user's process when not root; it cannot be ours either.
  return code === 'ENOENT' || code === 'ESRCH' || code === 'EACCES' || code === 'EPERM';
}

async function readProc(pid: number): Promise<Proc | undefined> {
  try {
    const info = parseStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
    if (!info || isGone(info)) return info;
    let environ: Buffer;
    try {
      environ = await readFile(`/proc/${pid}/environ`);
    } catch (err) {
      if (isNormalVanish(err)) return info;
      throw err;
    }
    const agentUid = environValue(environ, AGENT_ENV.uid);
    const promptFile = environValue(environ, AGENT_ENV.promptFile);
    return { ...info, ...(agentUid !== undefined ? { agentUid } : {}), ...(promptFile !== undefined ? { promptFile } : {}) };
  } catch (err) {
    if (isNormalVanish(err)) return undefined;
    throw err;
  }
}

async function pids(): Promise<number[]> {
  return (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
}

/**
 * One pass over /proc: every process that is still alive (zombies excluded), with its marker fields.
 * Concurrent callers share a pass that began after they called.
 */
export const listProcesses: () => Promise<Proc[]> = coalesce(async () => {
  const all = await Promise.all((await pids()).map(readProc));
  return all.filter((p): p is Proc => p !== undefined && !isGone(p));
});

/** Does this process carry the marker of agent `uid` on the node at `root`? */
export function hasMarker(p: Proc, root: string, uid: string): boolean {
  return p.agentUid === uid && p.promptFile === workspacePaths(root, uid).prompt;
}

/** The agent UIDs of the node at `root` that have marker processes, with those processes (pure). */
export function groupByAgent(procs: readonly Proc[], root: string): Map<string, Proc[]> {
  const byUid = new Map<string, Proc[]>();
  for (const p of procs) {
    if (!isAgentUid(p.agentUid) || !hasMarker(p, root, p.agentUid)) continue;
    const list = byUid.get(p.agentUid) ?? [];
    list.push(p);
    byUid.set(p.agentUid, list);
  }
  return byUid;
}

export async function findMarkerProcesses(root: string, uid: string): Promise<Proc[]> {
  return (await listProcesses()).filter((p) => hasMarker(p, root, uid));
}

/** Pids of every descendant of `pid` in a snapshot (pure). */
export function descendantsOf(procs: readonly ProcInfo[], pid: number): Set<number> {
  const children = new Map<number, number[]>();
  for (const p of procs) {
    const list = children.get(p.ppid) ?? [];
    list.push(p.pid);
    children.set(p.ppid, list);
  }
  const out = new Set<number>();
  const stack = [...(children.get(pid) ?? [])];
  while (stack.length) {
    const c = stack.pop()!;
    if (out.has(c)) continue;
    out.add(c);
    stack.push(...(children.get(c) ?? []));
  }
  return out;
}

/** The target of every open file descriptor on the machine, with the pids holding it: one pass, shared. */
const openFiles = coalesce(async (): Promise<Map<string, Set<number>>> => {
  const byTarget = new Map<string, Set<number>>();
  await Promise.all(
    (await pids()).map(async (pid) => {
      let fds: string[];
      try {
        fds = await readdir(`/proc/${pid}/fd`);
      } catch (err) {
        if (isNormalVanish(err)) return;
        throw err;
      }
      const targets = await Promise.all(
        fds.map((fd) =>
          readlink(`/proc/${pid}/fd/${fd}`).catch((err: unknown) => {
            if (isNormalVanish(err)) return undefined;
            throw err;
          }),
        ),
      );
      for (const target of targets) {
        if (target === undefined) continue;
        const holders = byTarget.get(target) ?? new Set<number>();
        holders.add(pid);
        byTarget.set(target, holders);
      }
    }),
  );
  return byTarget;
});

/**
 * Pids with an open file descriptor on any of `paths` (absolute, as the kernel reports them; a
 * deleted file shows as "<path> (deleted)").
 */
export async function holdersOf(paths: readonly string[]): Promise<number[]> {
  const open = await openFiles();
  const holders = new Set(paths.flatMap((p) => [p, `${p} (deleted)`]).flatMap((p) => [...(open.get(p) ?? [])]));
  return [...holders].sort((a, b) => a - b);
}

/** Sends a signal (0: only probes); false when the process (or group, for a negative pid) no longer exists. */
export function sendSignal(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ESRCH') return false;
    throw err;
  }
}
