/**
 * When a supervised process that exited is started again (pure): kubelet's CrashLoopBackOff in
 * small, so a crash loop neither spins nor waits for minutes, and a usage error is not retried.
 */
export interface RestartPolicy {
  /** The first delay; it doubles with each crash in a row. */
  initialDelayMs: number;
  maxDelayMs: number;
  /** A run at least this long was healthy: the next crash starts again from the first delay. */
  resetAfterMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = { initialDelayMs: 1000, maxDelayMs: 30_000, resetAfterMs: 60_000 };

/** Exit code of a command-line usage error: the same arguments will fail the same way. */
export const EXIT_USAGE = 2;

export type RestartDecision = { kind: 'restart'; delayMs: number; crashesInARow: number } | { kind: 'give-up'; exitCode: number };

export function decideRestart(exit: { code: number | null; signal: NodeJS.Signals | null; ranMs: number }, crashesBefore: number, policy: RestartPolicy = DEFAULT_RESTART_POLICY): RestartDecision {
  if (exit.code === EXIT_USAGE) return { kind: 'give-up', exitCode: EXIT_USAGE };
  const crashesInARow = exit.ranMs >= policy.resetAfterMs ? 1 : crashesBefore + 1;
  const delayMs = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (crashesInARow - 1));
  return { kind: 'restart', delayMs, crashesInARow };
}
