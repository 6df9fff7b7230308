/**
 * Stops every process of an agent (docs/architecture.md lifecycle step 9a): one SIGTERM (with SIGCONT, so a stopped
 * process can act on it) to the pane's process group and to every process carrying the agent's
 * marker, poll until they are gone or the grace period ends, then SIGKILL whatever is left,
 * including processes that escaped the group (setsid, double fork) or were forked during the grace
 * period.
 *
 * A sandboxed agent: the pane's launcher (root, outside the sandbox, past its go signal) is never
 * signalled: it records the exit status and ends by itself once the sandbox has. Its child is the
 * sandbox's monitor (setpriv -> bwrap, outside the agent's PID namespace), which hands the
 * command's status up: it gets no SIGTERM (it would die of it and take the status with it), only
 * the final SIGKILL, and the group is not signalled as a whole. The agent's processes are reached
 * one by one (in its PID namespace every orphan is re-parented to the sandbox's init, so none
 * leaves the pane's tree; and its cgroup holds them all).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { descendantsOf, hasMarker, listProcesses, sendSignal, type Proc } from './procfs.js';
import { killLeaf, leafPids } from './cgroup.js';
import { nextInterval } from './wait.js';

export interface PaneProcess {
  pid: number;
  /** tmux reported the pane's process alive at the start: its group and descendants are the agent's. */
  alive: boolean;
}

/**
 * The agent's processes in a snapshot (pure): marker carriers and its cgroup's members, plus, while the pane's process was
 * alive, its process group and descendants (which catches a process that cleared its environment).
 * A dead pane's pid may be reused, so then only the marker counts. Never the caller itself.
 */
export function selectTargets(procs: readonly Proc[], t: { root: string; uid: string; pane?: PaneProcess; selfPid: number; inCgroup?: ReadonlySet<number>; spare?: number }): Proc[] {
  const tree = t.pane?.alive ? descendantsOf(procs, t.pane.pid) : new Set<number>();
  return procs.filter(
    (p) =>
      p.pid !== t.selfPid &&
      p.pid !== t.spare &&
      (hasMarker(p, t.root, t.uid) || t.inCgroup?.has(p.pid) === true || (t.pane?.alive === true && (p.pid === t.pane.pid || p.pgid === t.pane.pid || tree.has(p.pid)))),
  );
}

export interface TerminateOptions {
  root: string;
  uid: string;
  pane?: PaneProcess;
  gracePeriodMs: number;
  /** How long SIGKILL rounds may go on before giving up (a process in uninterruptible sleep). */
  killTimeoutMs?: number;
  /** The first pause between scans; later ones grow to 100 ms (see nextInterval). */
  pollMs?: number;
  /** The agent runs in a sandbox and its launcher was released (see above). */
  sandboxed?: boolean;
  /** The agent's cgroup leaf: its members are targets, and SIGKILL is cgroup.kill. */
  leaf?: string;
  logger: Logger;
}

export interface TerminateResult {
  /** Distinct processes that received a signal. */
  signalled: number;
  escalatedToSigkill: boolean;
  /** Processes still present when we gave up (empty on success). */
  remaining: Proc[];
}

const key = (p: Proc) => `${p.pid}:${p.startTime}`;

export async function terminateProcesses(o: TerminateOptions): Promise<TerminateResult> {
  const maxPollMs = 100;
  let pollMs = Math.min(maxPollMs, o.pollMs ?? 10);
  const pause = async (limitMs: number) => {
    await sleep(Math.max(0, Math.min(pollMs, limitMs)));
    pollMs = nextInterval(pollMs, maxPollMs);
  };
  const killTimeoutMs = o.killTimeoutMs ?? 5_000;
  const signalled = new Set<string>();
  const scan = async () => {
    const [procs, inCgroup] = await Promise.all([listProcesses(), o.leaf ? leafPids(o.leaf) : undefined]);
    return selectTargets(procs, {
      root: o.root,
      uid: o.uid,
      selfPid: process.pid,
      ...(o.pane ? { pane: o.pane } : {}),
      ...(inCgroup ? { inCgroup } : {}),
      ...(o.sandboxed && o.pane ? { spare: o.pane.pid } : {}),
    });
  };
  const hit = (procs: Proc[], signal: NodeJS.Signals) => {
    const group = o.pane?.alive && !o.sandboxed && sendSignal(-o.pane.pid, signal) ? o.pane.pid : undefined;
    for (const p of procs) {
      if (o.sandboxed && signal === 'SIGTERM' && o.pane && p.ppid === o.pane.pid) continue; // the monitor
      // Members of the group got the group's signal: one each, as a process handling it expects.
      if (p.pgid === group || sendSignal(p.pid, signal)) signalled.add(key(p));
      if (signal === 'SIGTERM') sendSignal(p.pid, 'SIGCONT');
    }
  };

  const graceEnd = Date.now() + o.gracePeriodMs;
  let targets = await scan();
  if (targets.length === 0) return { signalled: 0, escalatedToSigkill: false, remaining: [] };
  // SIGTERM once, as the kubelet does: processes the agent starts while it shuts down (its handler's
  // helpers) are left to finish, and a handler is never interrupted by a second SIGTERM. Whatever
  // is left when the grace period ends gets SIGKILL, wherever it is.
  hit(targets, 'SIGTERM');
  for (;;) {
    await pause(graceEnd - Date.now());
    targets = await scan();
    if (targets.length === 0) return { signalled: signalled.size, escalatedToSigkill: false, remaining: [] };
    if (Date.now() >= graceEnd) break;
  }

  o.logger.info({ pids: targets.map((p) => p.pid) }, 'processes outlived the grace period; sending SIGKILL');
  const killEnd = Date.now() + killTimeoutMs;
  pollMs = Math.min(maxPollMs, o.pollMs ?? 10);
  for (;;) {
    if (o.leaf) await killLeaf(o.leaf);
    hit(targets, 'SIGKILL');
    await pause(killEnd - Date.now());
    targets = await scan();
    if (targets.length === 0 || Date.now() >= killEnd) {
      return { signalled: signalled.size, escalatedToSigkill: true, remaining: targets };
    }
  }
}
