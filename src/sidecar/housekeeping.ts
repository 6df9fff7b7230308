/**
 * The node's periodic housekeeping, beside the per-agent work: the orphan sweep (what no live Agent
 * bound here accounts for, the safety net under everything else) and archive retention.
 */
import type { Logger } from 'pino';
import { describeError } from '../kube/errors.js';
import type { AgentRecords } from './agentRecord.js';
import type { SidecarMetrics } from './metrics.js';
import type { ReportIntake } from './reportIntake.js';
import type { AgentCgroups } from './runtime/cgroup.js';
import { enforceRetention, type RetentionPolicy } from './runtime/retention.js';
import { sweepNode } from './runtime/sweep.js';

export interface HousekeepingOptions {
  root: string;
  archiveDir: string;
  cgroups?: AgentCgroups;
  sweepMinAgeSeconds?: number;
  archiveRetention?: RetentionPolicy;
  records: AgentRecords;
  intake: ReportIntake;
  metrics: SidecarMetrics;
  /** An Event about the node's AgentNode. */
  nodeEvent: (type: 'Normal' | 'Warning', reason: string, note: string) => void;
  logger: Logger;
}

export class Housekeeping {
  private retaining = false;

  constructor(private readonly o: HousekeepingOptions) {}

  /** Cleans every agent on the node that none of `expectedUids` (the Agents bound here) accounts for, nor a cleanup under way. */
  async sweep(expectedUids: readonly string[]): Promise<void> {
    const o = this.o;
    try {
      const results = await sweepNode({
        root: o.root,
        ...(o.cgroups ? { cgroups: o.cgroups } : {}),
        archiveDir: o.archiveDir,
        expectedUids: [...expectedUids, ...o.records.terminating()],
        logger: o.logger,
        ...(o.sweepMinAgeSeconds !== undefined ? { minAgeSeconds: o.sweepMinAgeSeconds } : {}),
      });
      for (const r of results) {
        await o.intake.closeChannel(r.uid);
        o.records.forget(r.uid); // a workspace found at start-up whose Agent is gone
        o.logger.warn({ uid: r.uid, error: r.error, archive: r.record?.archivePath }, 'swept an orphan');
        o.nodeEvent(
          'Warning',
          r.error ? 'OrphanCleanupFailed' : 'OrphanCleanedUp',
          r.error
            ? `could not clean up agent ${r.uid}, which no Agent bound to this node accounts for: ${r.error}`
            : `cleaned up agent ${r.uid}, which no Agent bound to this node accounts for: ${r.record?.processesKilled ?? 0} process(es) stopped${r.record?.archivePath ? `, logs archived to ${r.record.archivePath}` : ''}`,
        );
      }
    } catch (err) {
      o.logger.error({ err: describeError(err) }, 'sweep failed');
    }
  }

  /** Archive retention: oldest first past the max age or the max bytes, each deletion logged and counted. */
  async retain(): Promise<void> {
    const policy = this.o.archiveRetention;
    if (!policy || (policy.maxAgeMs === undefined && policy.maxBytes === undefined)) return;
    if (this.retaining) return; // a slow pass is not overlapped by the next (it would count deletions twice)
    this.retaining = true;
    const m = this.o.metrics;
    try {
      const r = await enforceRetention({
        root: this.o.root,
        archiveDir: this.o.archiveDir,
        policy,
        logger: this.o.logger,
        onDelete: (d) => {
          m.archiveDeletions.inc({ reason: d.reason });
          m.archiveDeletedBytes.inc({ reason: d.reason }, d.entry.bytes);
        },
      });
      m.archiveBytes.set(r.remainingBytes);
    } catch (err) {
      this.o.logger.error({ err: describeError(err) }, 'archive retention failed');
    } finally {
      this.retaining = false;
    }
  }
}
