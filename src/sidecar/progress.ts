/**
 * Whether the sidecar is still making progress, as the kubelet judges its PLEG ("PLEG is not
 * healthy: pleg was last seen active 3m5s ago; threshold is 3m0s"): the relist (relist.ts) records
 * when it last completed a pass, and /healthz fails once none completed within the threshold while
 * the node holds work. A pass completes only when every file operation in it finished (boundedFs.ts):
 * a hung filesystem, which leaves the process up and its probes answering, fails passes until the
 * check says so. Liveness, not readiness: a stalled sidecar does not recover by itself.
 */

/** Default of --health-stall-threshold-seconds: twenty relist ticks at the default interval, far above a busy node's slowest pass. */
export const DEFAULT_STALL_THRESHOLD_MS = 60_000;

/** What the health decision looks at: times in ms, all from one clock. */
export interface ProgressObservation {
  now: number;
  thresholdMs: number;
  /** When the relist loop started; undefined before it has (registration still under way). */
  startedAt?: number;
  /** When a pass last completed. */
  lastPassAt?: number;
  /** Why the last pass failed, when it did. */
  lastError?: string;
  /** Agents the node holds (launching, running or cleaning up) plus keys queued for a worker. */
  pending: number;
  /** How long the work queue's oldest key has waited for a worker, when one waits. */
  oldestQueuedMs?: number;
}

const seconds = (ms: number) => `${Math.floor(ms / 1000)}s`;

/** Undefined when healthy, else what is wrong (pure). */
export function progressProblem(o: ProgressObservation): string | undefined {
  if (o.startedAt === undefined || o.pending === 0) return undefined;
  const since = o.lastPassAt ?? o.startedAt;
  const age = o.now - since;
  if (age <= o.thresholdMs) return undefined;
  const parts = [
    o.lastPassAt === undefined ? `relist has not completed since it started ${seconds(age)} ago` : `relist last completed ${seconds(age)} ago`,
    `threshold ${seconds(o.thresholdMs)}`,
    `${o.pending} agent(s) or queued key(s) waiting`,
  ];
  if (o.oldestQueuedMs !== undefined) parts.push(`oldest queued key waiting ${seconds(o.oldestQueuedMs)}`);
  if (o.lastError !== undefined) parts.push(`last error: ${o.lastError}`);
  return parts.join('; ');
}

/** The relist's record of its own passes (the kubelet's relistTime). */
export class RelistProgress {
  private startedAt: number | undefined;
  private lastPassAt: number | undefined;
  private lastError: string | undefined;

  started(now: number): void {
    this.startedAt ??= now;
  }

  passed(now: number): void {
    this.lastPassAt = now;
    this.lastError = undefined;
  }

  failed(error: string): void {
    this.lastError = error;
  }

  /** Seconds since the epoch of the last completed pass, 0 before the first (a gauge). */
  lastPassSeconds(): number {
    return (this.lastPassAt ?? 0) / 1000;
  }

  observe(now: number, thresholdMs: number, pending: number, oldestQueuedMs: number | undefined): ProgressObservation {
    return {
      now,
      thresholdMs,
      ...(this.startedAt !== undefined ? { startedAt: this.startedAt } : {}),
      ...(this.lastPassAt !== undefined ? { lastPassAt: this.lastPassAt } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      pending,
      ...(oldestQueuedMs !== undefined ? { oldestQueuedMs } : {}),
    };
  }
}
