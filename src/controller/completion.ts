/**
 * Completion checks (pure): is an agent's own claim of completion plausible? Too fast, or without any
 * progress report, is flagged (condition CompletionVerified=False); the outcome stays Completed.
 */
import type { Agent, AgentStatus } from '../api/agent.js';
import type { ConditionInput } from '../api/conditions.js';
import { DEFAULTS } from '../api/constants.js';
import { parseTime } from '../api/time.js';

/** Only a completion the agent reported (reason AgentCompleted) is checked: an exit 0 claims nothing. */
export function completionVerified(agent: Agent, decided: Pick<AgentStatus, 'phase' | 'reason' | 'completionTime'>): ConditionInput | undefined {
  if (decided.phase !== 'Completed' || decided.reason !== 'AgentCompleted') return undefined;
  const status = agent.status ?? {};
  const checks = agent.spec.completionChecks ?? {};
  const minSeconds = checks.minDurationSeconds ?? DEFAULTS.minDurationSeconds;
  const minReports = checks.minProgressReports ?? DEFAULTS.minProgressReports;
  const started = parseTime(status.startTime);
  // The completed report's time when known: the controller's completionTime comes a little later.
  const done = parseTime(status.lastReportTime) ?? parseTime(decided.completionTime);
  const problems: string[] = [];
  const reasons: string[] = [];
  if (started !== undefined && done !== undefined && (done - started) / 1000 < minSeconds) {
    reasons.push('CompletedTooFast');
    problems.push(`completed ${Math.round((done - started) / 1000)}s after it started, under spec.completionChecks.minDurationSeconds (${minSeconds}s)`);
  }
  const reports = status.progressReports ?? 0;
  if (reports < minReports) {
    reasons.push('TooFewProgressReports');
    problems.push(`made ${reports} progress report(s) before completing, under spec.completionChecks.minProgressReports (${minReports})`);
  }
  if (problems.length === 0) {
    return { type: 'CompletionVerified', status: 'True', reason: 'ChecksPassed', message: `ran at least ${minSeconds}s and made at least ${minReports} progress report(s)` };
  }
  return { type: 'CompletionVerified', status: 'False', reason: reasons.join(','), message: `the agent ${problems.join(' and ')}` };
}
