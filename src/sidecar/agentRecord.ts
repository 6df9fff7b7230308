/**
 * One record per agent on this node, as the kubelet's pod workers keep one podSyncStatus per pod:
 * where the agent's life on the node stands (launching → running → terminating → cleaned) and what
 * the node knows of it between its files and the Agent's status. Everything about one agent is in
 * one place and goes away with it.
 */
import type { CleanupRecord } from '../api/agent.js';
import type { LimitController } from '../api/constants.js';
import type { ResumableStep } from './decide.js';
import type { Glimpse } from './relist.js';
import type { FindingsSummary, LatestReport } from './reports.js';

/**
 * Where an agent's life on the node stands. An Agent bound here is `launching` until its command is
 * seen running; `begun` says a launch was decided (when, and the step a crash left it at).
 */
export type AgentState =
  { phase: 'launching'; begun?: { since: number; step: ResumableStep | 'none' } } | { phase: 'running' } | { phase: 'terminating'; trigger: string } | { phase: 'cleaned'; record: CleanupRecord };

/** What the node did or saw that moves an agent along. */
export type AgentEvent =
  | { kind: 'launchDecided'; step: ResumableStep | 'none'; at: number }
  | { kind: 'started' }
  /** Nothing to do and its command not running: a launch refused for its inputs waits for the controller's verdict. */
  | { kind: 'idle' }
  | { kind: 'cleanupBegun'; trigger: string }
  | { kind: 'cleaned'; record: CleanupRecord };

/**
 * The next state (pure). A cleanup is final: nothing launches or starts an agent once it is
 * terminating or cleaned. A cleanup may begin again (every step is idempotent: a retry after a
 * failure, or after a crash lost the record).
 */
export function transition(s: AgentState, e: AgentEvent): AgentState {
  const ending = s.phase === 'terminating' || s.phase === 'cleaned';
  switch (e.kind) {
    case 'launchDecided':
      if (ending) return s;
      // The first decision's time stands while the launch is taken up again (how long it has been unfinished).
      return { phase: 'launching', begun: { since: s.phase === 'launching' && s.begun ? s.begun.since : e.at, step: e.step } };
    case 'started':
      return ending ? s : { phase: 'running' };
    case 'idle':
      return s.phase === 'launching' ? { phase: 'launching' } : s;
    case 'cleanupBegun':
      return { phase: 'terminating', trigger: e.trigger };
    case 'cleaned':
      return { phase: 'cleaned', record: e.record };
  }
}

/** Whether reports are still taken: not once its cleanup began (they would land after the archive). */
export function acceptsReports(s: AgentState): boolean {
  return s.phase === 'launching' || s.phase === 'running';
}

export interface AgentRecord {
  uid: string;
  /** namespace/name of its Agent; unknown for a workspace found on the node before its Agent is seen. */
  key?: string;
  state: AgentState;
  /** The SHA-256 of its report token (unsandboxed agents only; sandboxed ones report on their socket). */
  tokenSha256?: string;
  /** Its latest status report and findings summary (reports.ts), rebuilt from the files after a restart. */
  report?: LatestReport;
  findings?: FindingsSummary;
  /** Why it could not be launched (its inputs, not the node), kept until it is cleaned up. */
  launchError?: string;
  /** The spec's limits its cgroup could not enforce here. */
  limitsNotEnforced?: LimitController[];
  /** What the relist last saw of it, when that made it reconcile (relist.ts). */
  glimpse?: Glimpse;
  /** Its Agent is gone while its cleanup ran: the record goes when the cleanup ends. */
  forgotten?: boolean;
}

/** Moves the agent along, on the record in hand (one forgotten meanwhile is not made again). */
export function advance(r: AgentRecord, e: AgentEvent): void {
  r.state = transition(r.state, e);
}

/** The records of the agents on this node, by UID. */
export class AgentRecords {
  private readonly byUid = new Map<string, AgentRecord>();

  get(uid: string): AgentRecord | undefined {
    return this.byUid.get(uid);
  }

  /** The agent's record, made on first sight (as launching). */
  ensure(uid: string): AgentRecord {
    let r = this.byUid.get(uid);
    if (!r) {
      r = { uid, state: { phase: 'launching' } };
      this.byUid.set(uid, r);
    }
    return r;
  }

  /** The agent whose report token hashes to this. */
  byToken(tokenSha256: string): AgentRecord | undefined {
    for (const r of this.byUid.values()) if (r.tokenSha256 === tokenSha256) return r;
    return undefined;
  }

  /** Its Agent is gone: the record goes now, or when the cleanup in hand ends. */
  forget(uid: string): void {
    const r = this.byUid.get(uid);
    if (r?.state.phase === 'terminating') r.forgotten = true;
    else this.byUid.delete(uid);
  }

  /** A cleanup ended: a record whose Agent went meanwhile goes with it. */
  cleanupEnded(r: AgentRecord): void {
    if (r.forgotten) this.byUid.delete(r.uid);
  }

  values(): IterableIterator<AgentRecord> {
    return this.byUid.values();
  }

  /** Launches decided and not seen through (started, or given up for a cleanup). */
  unfinishedLaunches(): { record: AgentRecord; since: number; step: ResumableStep | 'none' }[] {
    const out = [];
    for (const r of this.byUid.values()) if (r.state.phase === 'launching' && r.state.begun) out.push({ record: r, ...r.state.begun });
    return out;
  }

  /** UIDs whose cleanup is under way (the sweep leaves them alone, Agent or not). */
  terminating(): string[] {
    return [...this.byUid.values()].filter((r) => r.state.phase === 'terminating').map((r) => r.uid);
  }
}
