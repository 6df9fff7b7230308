/**
 * The node's safety net (docs/architecture.md lifecycle step 13): sessions, workspaces and marker processes of
 * agents that should not be on this node any more are cleaned like any ended agent (trigger
 * 'Orphaned'), archived under their namespace/name from agent.json, or `_orphans/<uid>/` without it.
 */
import type { Logger } from 'pino';
import type { AgentCgroups } from './cgroup.js';
import type { CleanupRecord } from '../../api/agent.js';
import { cleanupAgent } from './cleanup.js';
import { errorMessage } from './files.js';
import { listSessions } from './observe.js';
import { groupByAgent, listProcesses } from './procfs.js';
import { listWorkspaces, pruneTombstones } from './workspace.js';

export const ORPHANED_TRIGGER = 'Orphaned';

export interface NodeInventory {
  sessionUids: string[];
  workspaces: { uid: string; createdAtMs: number }[];
  processUids: string[];
}

/**
 * The UIDs to clean (pure): everything present that is not expected, except a workspace younger
 * than `minAgeMs` (a launch may be under way for an Agent the caller's view does not show yet).
 */
export function decideOrphans(inv: NodeInventory, expected: ReadonlySet<string>, o: { nowMs: number; minAgeMs: number }): string[] {
  const young = new Set(inv.workspaces.filter((w) => o.nowMs - w.createdAtMs < o.minAgeMs).map((w) => w.uid));
  const present = new Set([...inv.sessionUids, ...inv.workspaces.map((w) => w.uid), ...inv.processUids]);
  return [...present].filter((uid) => !expected.has(uid) && !young.has(uid)).sort();
}

/** What the node holds right now: agent sessions, workspaces and marker processes of this root. */
export async function inventoryNode(root: string): Promise<NodeInventory> {
  const [sessions, workspaces, procs] = await Promise.all([listSessions(root), listWorkspaces(root), listProcesses()]);
  return {
    sessionUids: sessions.map((s) => s.uid),
    workspaces: workspaces.map(({ uid, createdAtMs }) => ({ uid, createdAtMs })),
    processUids: [...groupByAgent(procs, root).keys()],
  };
}

export interface SweepOptions {
  root: string;
  archiveDir: string;
  /** UIDs of the Agents bound to this node that are not yet cleaned up; computed before the call. */
  expectedUids: Iterable<string>;
  gracePeriodSeconds?: number;
  keepLogs?: boolean;
  /** Spare workspaces younger than this. Default 60. */
  minAgeSeconds?: number;
  /** Forget cleaned-up UIDs after this long (stale events are long over by then). Default 1 day. */
  tombstoneTtlSeconds?: number;
  /** The node's agent cgroups, for the cleanups. */
  cgroups?: AgentCgroups;
  logger: Logger;
}

export interface SweepResult {
  uid: string;
  record?: CleanupRecord;
  error?: string;
}

/** Cleans every orphan, one at a time (each cleanup is itself serialised with launches of its UID). */
export async function sweepNode(o: SweepOptions): Promise<SweepResult[]> {
  const inv = await inventoryNode(o.root);
  const orphans = decideOrphans(inv, new Set(o.expectedUids), { nowMs: Date.now(), minAgeMs: (o.minAgeSeconds ?? 60) * 1000 });
  const results: SweepResult[] = [];
  for (const uid of orphans) {
    o.logger.info({ uid }, 'cleaning an orphaned agent');
    try {
      const record = await cleanupAgent({
        root: o.root,
        ...(o.cgroups ? { cgroups: o.cgroups } : {}),
        archiveDir: o.archiveDir,
        uid,
        trigger: ORPHANED_TRIGGER,
        logger: o.logger,
        ...(o.gracePeriodSeconds !== undefined ? { gracePeriodSeconds: o.gracePeriodSeconds } : {}),
        ...(o.keepLogs !== undefined ? { keepLogs: o.keepLogs } : {}),
      });
      results.push({ uid, record });
    } catch (err) {
      results.push({ uid, error: errorMessage(err) });
    }
  }
  const pruned = await pruneTombstones(o.root, (o.tombstoneTtlSeconds ?? 86_400) * 1000);
  if (pruned) o.logger.debug({ pruned }, 'pruned old tombstones');
  return results;
}
