/**
 * The Agent controller's planner, planAgent (pure): observed state in, a plan of effects out. The
 * controller's effect layer executes the plan; nothing here talks to the API server or reads the clock.
 */
import { validateSpec, type Agent, type AgentStatus } from '../api/agent.js';
import { findCondition, observedAt, setCondition, setConditionFamily, type ConditionInput } from '../api/conditions.js';
import { FINALIZER } from '../api/constants.js';
import { agentOutcome, nextTimer, type Outcome } from '../api/outcome.js';
import { isTerminalPhase, type Phase } from '../api/phase.js';
import { bytesOf } from '../api/quantity.js';
import { parseTime, rfc3339 } from '../api/time.js';
import { bindingOf } from './binding.js';
import { agentHealth, KSTATUS_CONDITION_TYPES } from './health.js';
import { parentOutcome, planChildren, type AgentWithOwners } from './children.js';
import { completionVerified } from './completion.js';
import type { NodeView } from './nodes.js';
import { poolConflict, schedule, type NodePool } from './scheduler.js';

export interface ReconcileConfig {
  /** How long a bound node may stay silent before its Agents are given up as NodeLost. */
  nodeLostGraceMs: number;
  /** How often Pending Agents are retried even without a node event. */
  unschedulableRetryMs: number;
  /** How long a bound Agent may take to start its session, counted from the binding, before it is given up (LaunchTimeout). */
  launchTimeoutMs: number;
}

export interface Observed {
  agent: AgentWithOwners;
  /** The Agent's controlling owner as cached, when it is a child (undefined: none, or gone). */
  parent?: AgentWithOwners;
  /** Agents whose controlling owner is this one. */
  children?: readonly AgentWithOwners[];
  /** Names of the other Agents in the namespace (spawn requests for them are refused). */
  taken?: ReadonlySet<string>;
  nodes: ReadonlyMap<string, NodeView>;
  /** Slots taken per node (see scheduler.schedule). */
  used: ReadonlyMap<string, number>;
  /** The node pool of the Agent's namespace; undefined when it has none. */
  pool?: NodePool;
  now: number;
  config: ReconcileConfig;
}

export interface EventSpec {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/** Controller-owned status fields: the executor diffs these against what it observed. */
export type ControllerStatus = Pick<AgentStatus, 'phase' | 'reason' | 'message' | 'nodeName' | 'scheduledTime' | 'completionTime' | 'conditions' | 'observedGeneration' | 'children'>;

export const CONTROLLER_STATUS_FIELDS = [
  'phase',
  'reason',
  'message',
  'nodeName',
  'scheduledTime',
  'completionTime',
  'conditions',
  'observedGeneration',
  'children',
] as const satisfies readonly (keyof ControllerStatus)[];

export interface Plan {
  addFinalizer: boolean;
  /** The node to bind to: NODE_LABEL is set (the binding of record) before status is written. */
  bindTo?: string;
  status: ControllerStatus;
  events: EventSpec[];
  removeFinalizer: boolean;
  deleteAgent: boolean;
  /** Child Agents to create (after the status, which records them, is written). */
  createChildren: AgentWithOwners[];
  /** Children whose spec.stop to set. */
  stopChildren: { name: string; reason: string }[];
  requeueAfterMs?: number;
}

const WARNING_PHASES: readonly Phase[] = ['Failed', 'Error', 'Terminated'];

export function planAgent(o: Observed): Plan {
  const { agent, now } = o;
  const status = agent.status ?? {};
  const nowTime = rfc3339(new Date(now));
  const generation = agent.metadata?.generation;
  const hasFinalizer = agent.metadata?.finalizers?.includes(FINALIZER) ?? false;
  const deleting = agent.metadata?.deletionTimestamp !== undefined;
  const events: EventSpec[] = [];
  const plan: Plan = {
    addFinalizer: false,
    status: pickControllerStatus(status),
    events,
    removeFinalizer: false,
    deleteAgent: false,
    createChildren: [],
    stopChildren: [],
  };
  plan.status.observedGeneration = generation;
  const children = planChildren({ parent: agent, children: o.children ?? [], taken: o.taken ?? new Set() });
  if (children.status) plan.status.children = children.status;
  plan.createChildren = children.create;
  plan.stopChildren = children.stop;
  events.push(...children.events);
  let conditions = status.conditions;
  const cond = (c: ConditionInput) => {
    conditions = setCondition(conditions, c, nowTime, generation);
  };
  const requeue = (ms: number | undefined) => {
    if (ms === undefined) return;
    const at = Math.max(ms, 0);
    plan.requeueAfterMs = plan.requeueAfterMs === undefined ? at : Math.min(plan.requeueAfterMs, at);
  };
  const transition = (phase: Phase, reason: string, message: string) => {
    if (status.phase !== phase || status.reason !== reason) {
      events.push({ type: WARNING_PHASES.includes(phase) ? 'Warning' : 'Normal', reason, message });
    }
    plan.status.phase = phase;
    plan.status.reason = reason;
    plan.status.message = message;
  };

  const binding = bindingOf(agent);
  const nodeName = binding.node;
  // The copy in status follows the binding: a forged or stale one is overwritten, never followed.
  plan.status.nodeName = nodeName;
  if (binding.mismatch) events.push({ type: 'Warning', reason: 'BindingMismatch', message: binding.mismatch });
  // The node reports the limits it could not enforce; the Agent's Events are the controller's to write
  // (a node may record Events only about its own AgentNode). Once: the condition remembers it was said.
  const notEnforced = status.limitsNotEnforced ?? [];
  if (nodeName && notEnforced.length > 0) {
    const which = notEnforced.join(', ');
    const message = `${which} limit(s) not enforced on node ${nodeName}: its cgroup v2 has no ${which} controller`;
    if (findCondition(status.conditions, 'LimitsEnforced')?.status !== 'False') events.push({ type: 'Warning', reason: 'LimitsNotEnforced', message });
    cond({ type: 'LimitsEnforced', status: 'False', reason: 'LimitsNotEnforced', message });
  }
  const node = nodeName ? o.nodes.get(nodeName) : undefined;
  /**
   * Epoch ms when the bound node is given up: a silent node after the grace period, a deleted
   * AgentNode at once (as the pod GC treats pods of a deleted Node); undefined while it is fine.
   */
  const nodeLostAt = !nodeName || node?.ready ? undefined : node ? (node.silentSince ?? now) + o.config.nodeLostGraceMs : now;
  const cleanedUp = status.cleanup?.completionTime !== undefined;
  /** Set when no node could take the Agent as things stand (not merely a full one). */
  let unschedulable = false;
  const finish = (): Plan => {
    const health = agentHealth({ ...plan.status, cleanedUp, unschedulable });
    plan.status.conditions = observedAt(setConditionFamily(conditions, KSTATUS_CONDITION_TYPES, health, nowTime, generation), generation);
    return plan;
  };

  // Finished, or being deleted: record the end, then wait for the node's cleanup record.
  const valid = validateSpec(agent.spec);
  // The node keeps less output than asked (its --output-max-size-limit): said once, as for limits.
  const askedOutput = valid.ok ? valid.value.output?.maxSize : undefined;
  if (nodeName && askedOutput !== undefined && status.outputMaxBytes !== undefined && bytesOf(askedOutput, 'spec.output.maxSize') > status.outputMaxBytes) {
    const message = `spec.output.maxSize ${askedOutput} is above node ${nodeName}'s limit: ${status.outputMaxBytes} bytes of its output are kept`;
    if (findCondition(status.conditions, 'OutputCapHonored')?.status !== 'False') events.push({ type: 'Warning', reason: 'OutputCapLowered', message });
    cond({ type: 'OutputCapHonored', status: 'False', reason: 'OutputCapLowered', message });
  }
  const conflict = valid.ok && !nodeName ? poolConflict(valid.value, [...o.nodes.values()], o.pool) : undefined;
  let outcome: Outcome | undefined;
  if (isTerminalPhase(status.phase)) {
    outcome = undefined; // terminal phases are sticky
  } else if (!valid.ok) {
    outcome = { phase: 'Failed', reason: 'InvalidSpec', message: valid.message };
  } else if (conflict) {
    outcome = { phase: 'Failed', reason: 'NodePoolConflict', message: conflict };
  } else {
    outcome = agentOutcome(agent, now) ?? parentOutcome(agent, o.parent);
    if (!outcome && nodeLostAt !== undefined) {
      if (now >= nodeLostAt) {
        outcome = { phase: 'Error', reason: 'NodeLost', message: node ? `node ${nodeName} stopped reporting (${node.notReadyReason ?? 'not ready'})` : `node ${nodeName} no longer exists` };
      } else requeue(nodeLostAt - now);
    }
    const launchDeadline = nodeName && !status.startTime ? parseTime(status.scheduledTime) : undefined;
    if (!outcome && launchDeadline !== undefined) {
      const at = launchDeadline + o.config.launchTimeoutMs;
      if (now >= at) {
        outcome = {
          phase: 'Error',
          reason: 'LaunchTimeout',
          message: `bound to node ${nodeName} at ${status.scheduledTime} and its session not started within ${Math.round(o.config.launchTimeoutMs / 1000)}s (--launch-timeout-seconds); the node's sidecar logs and agent_operator_launches_unfinished tell where the launch stands`,
        };
      } else requeue(at - now);
    }
  }

  if (outcome) {
    transition(outcome.phase, outcome.reason, outcome.message);
    plan.status.completionTime = status.completionTime ?? nowTime;
  }

  const phase = plan.status.phase;
  if (isTerminalPhase(phase)) {
    const reason = plan.status.reason ?? phase;
    const message = plan.status.message ?? '';
    cond({ type: 'Running', status: 'False', reason, message });
    if (phase === 'Completed') {
      cond({ type: 'Complete', status: 'True', reason, message });
      // Judged once, when the completion is decided; the condition stays as judged.
      const verified = outcome ? completionVerified(agent, plan.status) : undefined;
      if (verified) {
        if (verified.status === 'False') events.push({ type: 'Warning', reason: verified.reason, message: verified.message });
        cond(verified);
      }
    } else cond({ type: 'Failed', status: 'True', reason, message });
    if (cleanedUp) {
      const errors = status.cleanup?.errors ?? [];
      const wasClean = !conditions?.some((c) => c.type === 'CleanedUp' && c.status === 'True');
      cond({
        type: 'CleanedUp',
        status: 'True',
        reason: errors.length === 0 ? 'CleanupSucceeded' : 'CleanupCompletedWithErrors',
        // What the record says, not what cleanup usually does: an agent that never started has no logs.
        message: errors.length === 0 ? cleanupSummary(agent) : errors.join('; '),
      });
      if (wasClean) {
        events.push(
          errors.length === 0
            ? { type: 'Normal', reason: 'CleanedUp', message: cleanupSummary(agent) }
            : { type: 'Warning', reason: 'CleanupCompletedWithErrors', message: `${cleanupSummary(agent)}; errors: ${errors.join('; ')}` },
        );
      }
    }
  }

  if (deleting) {
    if (hasFinalizer) {
      if (!nodeName || cleanedUp) plan.removeFinalizer = true;
      else if (nodeLostAt !== undefined && now >= nodeLostAt) {
        plan.removeFinalizer = true;
        events.push({
          type: 'Warning',
          reason: 'CleanupSkipped',
          message: `NodeLost: node ${nodeName} ${node ? `did not come back within ${Math.round(o.config.nodeLostGraceMs / 1000)}s` : 'no longer exists'}; its session, processes and files could not be cleaned up or archived`,
        });
      } else if (nodeLostAt !== undefined) requeue(nodeLostAt - now);
    }
    return finish();
  }

  if (isTerminalPhase(phase)) {
    const ttl = agent.spec.ttlSecondsAfterFinished;
    const finished = parseTime(plan.status.completionTime);
    if (ttl !== undefined && finished !== undefined) {
      const at = finished + ttl * 1000;
      if (now >= at) plan.deleteAgent = true;
      else requeue(at - now);
    }
    return finish();
  }

  // Active.
  if (!hasFinalizer) plan.addFinalizer = true;
  if (!nodeName) {
    const result = schedule(agent.spec, [...o.nodes.values()], o.used, o.pool);
    if ('node' in result) {
      plan.bindTo = result.node;
      plan.status.nodeName = result.node;
      plan.status.scheduledTime = nowTime;
      // The words the next pass writes too (activePhase): a different message would cost a second status write.
      transition('Scheduled', 'Scheduled', waitingMessage(result.node));
      cond({ type: 'Scheduled', status: 'True', reason: 'Scheduled', message: `bound to node ${result.node}` });
    } else {
      transition('Pending', 'Unschedulable', result.unschedulable);
      cond({ type: 'Scheduled', status: 'False', reason: 'Unschedulable', message: result.unschedulable });
      unschedulable = !result.queued;
      requeue(o.config.unschedulableRetryMs);
    }
  } else {
    const [p, reason, message] = activePhase(status, nodeName);
    transition(p, reason, message);
    cond({ type: 'Scheduled', status: 'True', reason: 'Scheduled', message: `bound to node ${nodeName}` });
    if (p !== 'Scheduled') cond({ type: 'Running', status: 'True', reason, message: 'the agent session is running' });
  }
  requeue(timerIn(agent, now));
  return finish();
}

const waitingMessage = (nodeName: string) => `bound to node ${nodeName}, waiting for the session to start`;

function activePhase(status: AgentStatus, nodeName: string): [Phase, string, string] {
  if (!status.startTime) return ['Scheduled', 'Scheduled', waitingMessage(nodeName)];
  switch (status.reportedState) {
    case 'working':
      return ['Working', 'AgentWorking', status.reportedMessage || 'the agent reported progress'];
    case 'blocked':
      return ['Blocked', 'AgentBlocked', status.reportedMessage || 'the agent reported it is blocked'];
    default:
      return ['Running', 'SessionStarted', `session ${status.sessionName ?? ''} started`.replace('  ', ' ')];
  }
}

function timerIn(agent: Agent, now: number): number | undefined {
  const at = nextTimer(agent, now);
  return at === undefined ? undefined : at - now;
}

function cleanupSummary(agent: Agent): string {
  const c = agent.status?.cleanup;
  if (!c) return '';
  const parts = [
    `${c.processesKilled} process(es) stopped${c.escalatedToSigkill ? ' (escalated to SIGKILL)' : ''}`,
    c.sessionKilled ? 'session killed' : 'session not found',
    c.logsArchived
      ? `logs archived to ${c.archivePath}`
      : agent.spec.cleanup?.keepLogs === false
        ? 'logs not kept (spec.cleanup.keepLogs is false)'
        : (c.errors ?? []).length === 0
          ? 'no logs to archive'
          : 'logs not archived',
    c.promptDeleted ? 'prompt deleted' : 'prompt not deleted',
  ];
  if (c.durationMilliseconds !== undefined) parts.push(`in ${c.durationMilliseconds}ms`);
  return parts.join(', ');
}

export function pickControllerStatus(status: AgentStatus): ControllerStatus {
  const out: ControllerStatus = {};
  for (const f of CONTROLLER_STATUS_FIELDS) {
    if (status[f] !== undefined) (out as Record<string, unknown>)[f] = status[f];
  }
  return out;
}
