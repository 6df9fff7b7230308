/**
 * The node sidecar's own figures on /metrics (besides the reconcile and queue metrics every
 * controller has): cleanups, sessions, launches, report caps, archive retention, and the process
 * spawns and file operations of the runtime.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { RESUMABLE_STEPS } from './decide.js';
import { registerFileOperationMetrics } from './runtime/boundedFs.js';
import { RETENTION_REASONS } from './runtime/retention.js';
import { registerSpawnMetric } from './runtime/spawn.js';

export interface SidecarMetrics {
  cleanupSeconds: Histogram;
  cleanupFailures: Counter;
  sessions: Gauge<'node'>;
  launchResumes: Counter<'step'>;
  reportsCapped: Counter<'cap'>;
  archiveDeletions: Counter<'reason'>;
  archiveDeletedBytes: Counter<'reason'>;
  archiveBytes: Gauge;
}

/** Registers them; the two gauges read at scrape time what the sidecar holds. */
export function sidecarMetrics(registry: Registry, read: { relistLastPassSeconds: () => number; unfinishedLaunches: () => number }): SidecarMetrics {
  const registers = [registry];
  const m: SidecarMetrics = {
    cleanupSeconds: new Histogram({
      name: 'agent_operator_cleanup_duration_seconds',
      help: 'Time from the start of an agent cleanup to its record',
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
      registers,
    }),
    cleanupFailures: new Counter({ name: 'agent_operator_cleanup_failures_total', help: 'Cleanups that recorded errors or failed outright', registers }),
    sessions: new Gauge({ name: 'agent_operator_sessions', help: 'Agent sessions alive on the node', labelNames: ['node'], registers }),
    launchResumes: new Counter({
      name: 'agent_operator_launch_resumes_total',
      help: 'Launches found cut short (a crash) and taken up again, by the last step they got through',
      labelNames: ['step'],
      registers,
    }),
    reportsCapped: new Counter({
      name: 'agent_operator_reports_capped_total',
      help: 'Reports refused (429) because their agent went over its reports-per-minute (rate) or bytes-per-minute (bytes) cap',
      labelNames: ['cap'],
      registers,
    }),
    archiveDeletions: new Counter({
      name: 'agent_operator_archive_deletions_total',
      help: 'Archives deleted by retention, by reason: age (older than --archive-max-age-seconds) or size (oldest first, over --archive-max-size)',
      labelNames: ['reason'],
      registers,
    }),
    archiveDeletedBytes: new Counter({
      name: 'agent_operator_archive_deleted_bytes_total',
      help: 'Bytes of the archives deleted by retention, by reason',
      labelNames: ['reason'],
      registers,
    }),
    archiveBytes: new Gauge({ name: 'agent_operator_archive_bytes', help: "Bytes the node's archives held after the last retention pass", registers }),
  };
  // Every label value shows from the start, at 0, so a rate() has a series to begin with.
  for (const step of RESUMABLE_STEPS) m.launchResumes.inc({ step }, 0);
  for (const cap of ['rate', 'bytes']) m.reportsCapped.inc({ cap }, 0);
  for (const reason of RETENTION_REASONS) {
    m.archiveDeletions.inc({ reason }, 0);
    m.archiveDeletedBytes.inc({ reason }, 0);
  }
  new Gauge({
    name: 'agent_operator_relist_last_completed_timestamp_seconds',
    help: 'When the relist of the agents on the node last completed a pass (0: not yet); /healthz fails when it falls too far behind',
    registers,
    collect() {
      this.set(read.relistLastPassSeconds());
    },
  });
  new Gauge({
    name: 'agent_operator_launches_unfinished',
    help: 'Launches of Agents bound to this node that were begun and have not started their command nor ended',
    registers,
    collect() {
      this.set(read.unfinishedLaunches());
    },
  });
  registerFileOperationMetrics(registry);
  registerSpawnMetric(registry);
  return m;
}
