/**
 * The node sidecar's plan for one Agent bound to its node, planAgentOnNode (pure): launch it, leave
 * it running, or clean it up; and which sidecar-owned status fields to write. What the node has seen
 * (an exit code, a final report) counts at once, before the controller's phase comes back round.
 */
import type { Agent, AgentStatus, CleanupRecord } from '../api/agent.js';
import type { LimitController } from '../api/constants.js';
import { agentOutcome } from '../api/outcome.js';
import { isTerminalPhase, type ReportedState } from '../api/phase.js';
import { parseTime, rfc3339 } from '../api/time.js';
import { isDeepStrictEqual } from 'node:util';
import { LAUNCH_PROGRESS, type LaunchProgress } from './runtime/observe.js';

/** What the node knows about an agent, from its workspace, tmux and the report endpoint. */
export interface LocalFacts {
  /** How far its launch got, by the marks on the node (observe.ts launchProgress). */
  launch: LaunchProgress;
  /** Its cleanup began (a tombstone): what triggered it. */
  cleanupBegun?: string;
  sessionName?: string;
  startTime?: string;
  sessionAlive: boolean;
  exitCode?: number;
  launchError?: string;
  /** The spec's limits its cgroup could not enforce (no such controller on this node). */
  limitsNotEnforced?: LimitController[];
  /** The output cap it was launched with (its workspace record). */
  outputMaxBytes?: number;
  /** The session vanished while its command ran: what was seen. */
  sessionLost?: string;
  /** Last output seen (epoch ms), from the output log. */
  lastOutputAt?: number;
  report?: { state: ReportedState; progress?: number; message?: string; time: string; progressReports: number };
  findings?: AgentStatus['findings'];
  /** The record of a finished cleanup (this run's, or recovered from the archive). */
  cleanup?: CleanupRecord;
}

/** A launch to run; `resume` names the last step a launch cut short (a crash) got through. */
export type NodeAction = { kind: 'launch'; resume?: ResumableStep } | { kind: 'cleanup'; trigger: string } | { kind: 'none' };

/** The steps a launch can be resumed after. */
export type ResumableStep = Exclude<LaunchProgress, 'none' | 'done'>;
export const RESUMABLE_STEPS = LAUNCH_PROGRESS.filter((p): p is ResumableStep => p !== 'none' && p !== 'done');

export interface NodeDecision {
  action: NodeAction;
  /** Sidecar-owned fields that differ from the observed status; undefined when nothing changed. */
  statusPatch?: Partial<AgentStatus>;
}

export const SIDECAR_STATUS_FIELDS = [
  'sessionName',
  'startTime',
  'exitCode',
  'launchError',
  'limitsNotEnforced',
  'outputMaxBytes',
  'sessionLost',
  'lastOutputTime',
  'lastReportTime',
  'reportedState',
  'reportedMessage',
  'progress',
  'findings',
  'cleanup',
  'progressReports',
] as const satisfies readonly (keyof AgentStatus)[];

/** How often lastOutputTime may move: often enough for the idle timeout, rarely enough to spare the API server. */
export function outputTimeResolutionMs(idleTimeoutSeconds: number | undefined): number {
  const base = 30_000;
  return idleTimeoutSeconds === undefined ? base : Math.max(1000, Math.min(base, (idleTimeoutSeconds * 1000) / 4));
}

/**
 * Enough workers for every agent of a full node to be launching or cleaning up at once (a cleanup
 * holds its worker through the agent's grace period), and two for everything else: fewer, and one
 * stubborn agent's grace period would delay the next launch on the node.
 */
export function workersFor(capacity: number): number {
  return Math.max(4, capacity + 2);
}

/**
 * Whether an update of an Agent bound to the node may change what the node does (pure): a change
 * anywhere but in the node's own status fields, or a resync (the same resourceVersion). The node's
 * own status write comes back as an update, and deciding again on it would only read the node again.
 */
export function nodeMayAct(old: Agent, cur: Agent): boolean {
  if (old.metadata?.resourceVersion === cur.metadata?.resourceVersion) return true;
  return !isDeepStrictEqual(notTheNodes(old), notTheNodes(cur));
}

/** The Agent without what changes when the node writes its status. */
function notTheNodes(a: Agent): unknown {
  const status: Record<string, unknown> = { ...a.status };
  for (const f of SIDECAR_STATUS_FIELDS) delete status[f];
  const metadata: Record<string, unknown> = { ...a.metadata };
  delete metadata.resourceVersion;
  delete metadata.managedFields;
  return { ...a, metadata, status };
}

export function planAgentOnNode(agent: Agent, local: LocalFacts, now: number): NodeDecision {
  const status = agent.status ?? {};
  const desired = desiredStatus(agent, local, now);
  const statusPatch = diffFields(status, desired);

  if (status.cleanup?.completionTime || local.cleanup?.completionTime) return { action: { kind: 'none' }, statusPatch };

  // The agent as it will look once our observations land: judge the end on that.
  const merged: Agent = { ...agent, status: { ...status, ...desired } };
  const outcome = agentOutcome(merged, now);
  const trigger = isTerminalPhase(status.phase) ? (status.reason ?? status.phase) : outcome?.reason;
  if (trigger) return { action: { kind: 'cleanup', trigger }, statusPatch };
  // A cleanup cut short (a crash) is finished, never followed by a launch.
  if (local.cleanupBegun) return { action: { kind: 'cleanup', trigger: local.cleanupBegun }, statusPatch };
  // Not only "nothing on the node yet": a launch cut short at any step is taken up again.
  if (local.launch === 'none') return { action: { kind: 'launch' }, statusPatch };
  if (local.launch !== 'done') return { action: { kind: 'launch', resume: local.launch }, statusPatch };
  return { action: { kind: 'none' }, statusPatch };
}

function desiredStatus(agent: Agent, local: LocalFacts, now: number): Partial<AgentStatus> {
  const status = agent.status ?? {};
  const d: Partial<AgentStatus> = {};
  if (local.sessionName) d.sessionName = local.sessionName;
  if (local.startTime) d.startTime = local.startTime;
  // Once the node has begun to end the agent for another reason (a stop, a deadline), the exit our
  // own kill causes, a launch the cleanup cut off, a session it killed, say nothing of the agent.
  const ours = (reasons: readonly string[]) => local.cleanupBegun !== undefined && !reasons.includes(local.cleanupBegun);
  if (local.exitCode !== undefined && !ours(['Exited', 'ExitedNonZero'])) d.exitCode = local.exitCode;
  if (local.launchError && !ours(['LaunchFailed'])) d.launchError = local.launchError;
  if (local.limitsNotEnforced) d.limitsNotEnforced = local.limitsNotEnforced;
  if (local.outputMaxBytes !== undefined) d.outputMaxBytes = local.outputMaxBytes;
  if (local.sessionLost && !ours(['SessionLost'])) d.sessionLost = local.sessionLost;
  if (local.report) {
    d.reportedState = local.report.state;
    d.lastReportTime = local.report.time;
    if (local.report.message !== undefined) d.reportedMessage = local.report.message;
    if (local.report.progress !== undefined) d.progress = local.report.progress;
    d.progressReports = local.report.progressReports;
  }
  if (local.findings) d.findings = plain(local.findings);
  if (local.cleanup) d.cleanup = plain(local.cleanup);
  if (local.lastOutputAt !== undefined) {
    const written = parseTime(status.lastOutputTime) ?? 0;
    const resolution = outputTimeResolutionMs(agent.spec.idleTimeoutSeconds);
    // Whole seconds, as metav1.Time; moved only when it advanced by the resolution or more.
    const seen = Math.floor(local.lastOutputAt / 1000) * 1000;
    if (seen - written >= resolution || (status.lastOutputTime === undefined && seen <= now)) {
      d.lastOutputTime = rfc3339(new Date(seen));
    }
  }
  return d;
}

function diffFields(observed: AgentStatus, desired: Partial<AgentStatus>): Partial<AgentStatus> | undefined {
  const patch: Partial<AgentStatus> = {};
  let changed = false;
  for (const f of SIDECAR_STATUS_FIELDS) {
    const want = desired[f];
    if (want !== undefined && !isDeepStrictEqual(want, observed[f])) {
      (patch as Record<string, unknown>)[f] = want;
      changed = true;
    }
  }
  return changed ? patch : undefined;
}

/** As it will come back from the API server: no undefined-valued keys. */
export function plain<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}
