/**
 * How an Agent ends, as a pure function of what has been observed. The controller uses it to write
 * the terminal phase; the node sidecar uses the same function to start cleanup at once, without
 * waiting for the controller's write to come back to it.
 */
import type { Agent } from './agent.js';
import type { TerminalPhase } from './phase.js';
import { parseTime } from './time.js';

export interface Outcome {
  phase: TerminalPhase;
  reason: string;
  message: string;
}

/**
 * The terminal outcome the observations imply, or undefined while the agent should keep running.
 * When several apply at once, the agent's own word wins over the platform's judgement: a launch error,
 * (or a lost session), then its final report, then its exit, then deletion and stop, then the deadlines.
 */
export function agentOutcome(agent: Agent, now: number): Outcome | undefined {
  const { spec } = agent;
  const status = agent.status ?? {};
  if (status.launchError) return { phase: 'Error', reason: 'LaunchFailed', message: status.launchError };
  if (status.sessionLost) return { phase: 'Error', reason: 'SessionLost', message: status.sessionLost };
  switch (status.reportedState) {
    case 'completed':
      return { phase: 'Completed', reason: 'AgentCompleted', message: status.reportedMessage || 'the agent reported completion' };
    case 'failed':
      return { phase: 'Failed', reason: 'AgentFailed', message: status.reportedMessage || 'the agent reported failure' };
    case 'error':
      return { phase: 'Error', reason: 'AgentError', message: status.reportedMessage || 'the agent reported an error' };
  }
  if (status.exitCode !== undefined) {
    return status.exitCode === 0
      ? { phase: 'Completed', reason: 'Exited', message: 'the command exited with code 0' }
      : { phase: 'Failed', reason: 'ExitedNonZero', message: `the command exited with code ${status.exitCode}` };
  }
  if (agent.metadata?.deletionTimestamp) {
    return { phase: 'Terminated', reason: 'Deleted', message: 'the Agent was deleted while running' };
  }
  if (spec.stop) {
    return { phase: 'Terminated', reason: 'Stopped', message: spec.stopReason || 'stopped by spec.stop' };
  }
  const deadline = activeDeadline(agent);
  if (deadline !== undefined && now >= deadline) {
    return {
      phase: 'Terminated',
      reason: 'DeadlineExceeded',
      message: `the agent ran longer than activeDeadlineSeconds (${spec.activeDeadlineSeconds}s)`,
    };
  }
  const idle = idleDeadline(agent);
  if (idle !== undefined && now >= idle) {
    return {
      phase: 'Terminated',
      reason: 'IdleTimeout',
      message: `no report and no output for idleTimeoutSeconds (${spec.idleTimeoutSeconds}s)`,
    };
  }
  return undefined;
}

/** When the active deadline falls (epoch ms), counted from the session start as a Pod's is. */
export function activeDeadline(agent: Agent): number | undefined {
  const start = parseTime(agent.status?.startTime);
  const secs = agent.spec.activeDeadlineSeconds;
  return start === undefined || secs === undefined ? undefined : start + secs * 1000;
}

/** When the idle timeout falls (epoch ms): the last sign of life plus the timeout. */
export function idleDeadline(agent: Agent): number | undefined {
  const secs = agent.spec.idleTimeoutSeconds;
  const s = agent.status;
  if (secs === undefined || !s) return undefined;
  const signs = [s.startTime, s.lastReportTime, s.lastOutputTime].map(parseTime).filter((t): t is number => t !== undefined);
  return signs.length === 0 ? undefined : Math.max(...signs) + secs * 1000;
}

/** The earliest timer still ahead of `now`, for a requeue; undefined when none. */
export function nextTimer(agent: Agent, now: number): number | undefined {
  const ahead = [activeDeadline(agent), idleDeadline(agent)].filter((t): t is number => t !== undefined && t > now);
  return ahead.length === 0 ? undefined : Math.min(...ahead);
}
