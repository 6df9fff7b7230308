/**
 * An Agent's health in the kstatus conventions (sigs.k8s.io/cli-utils/pkg/kstatus), which Flux, kpt,
 * cli-utils waiters and `kubectl wait --for=condition=Ready` judge custom resources by. Pure: the
 * phase and the cleanup record in, the three conditions out.
 *
 * - Reconciling=True while the Agent is on its way: Pending with a node to wait for, Scheduled,
 *   Running, Working, Blocked (the agent may carry on by itself), and Completed until the node
 *   recorded its cleanup.
 * - Ready=True once it Completed AND was cleaned up (the cleanup record may list errors: the work
 *   is done; CleanedUp says what went wrong). False otherwise, with the phase's reason.
 * - Stalled=True when it cannot get there: Failed, Error and Terminated (stopped, deadline or idle
 *   timeout, deleted: the work was not done, and none of these is ever reverted), at once, without
 *   waiting for the cleanup a lost node may never record; and Pending when no node could take it
 *   as things stand (none matches, is ready and schedulable). Pending only for a free slot on a
 *   node that fits is a queue, not a stall: Reconciling.
 *
 * Reconciling and Stalled are abnormal-true conditions: present only while True (removed, not
 * False, otherwise), as kstatus recommends.
 */
import type { ConditionInput } from '../api/conditions.js';
import { isTerminalPhase, type Phase } from '../api/phase.js';

export const KSTATUS_CONDITION_TYPES = ['Ready', 'Reconciling', 'Stalled'] as const;

export interface HealthInput {
  phase?: Phase;
  reason?: string;
  message?: string;
  /** The node recorded its cleanup (status.cleanup.completionTime). */
  cleanedUp: boolean;
  /** Pending with no node that could take the Agent even once slots free up. */
  unschedulable: boolean;
  nodeName?: string;
}

/** The kstatus conditions to hold: Ready always, at most one of Reconciling and Stalled. */
export function agentHealth(s: HealthInput): ConditionInput[] {
  const reason = s.reason ?? s.phase ?? 'Pending';
  const message = s.message ?? '';
  if (s.phase === 'Completed') {
    if (s.cleanedUp) return [{ type: 'Ready', status: 'True', reason, message }];
    const cleaning = {
      reason: 'CleaningUp',
      message: `${message ? `${message}; ` : ''}waiting for ${s.nodeName ? `node ${s.nodeName}` : 'the node'} to record its cleanup`,
    };
    return [
      { type: 'Ready', status: 'False', ...cleaning },
      { type: 'Reconciling', status: 'True', ...cleaning },
    ];
  }
  const stalled = isTerminalPhase(s.phase) || (s.phase === 'Pending' && s.unschedulable);
  return [
    { type: 'Ready', status: 'False', reason, message },
    { type: stalled ? 'Stalled' : 'Reconciling', status: 'True', reason, message },
  ];
}
