/** What the controller believes about each AgentNode (pure). */
import type { AgentNode } from '../api/agentNode.js';
import { findCondition } from '../api/conditions.js';
import { parseTime } from '../api/time.js';

export interface NodeView {
  name: string;
  labels: Record<string, string>;
  ready: boolean;
  /** Why the node is not ready (for scheduling messages and events). */
  notReadyReason?: string;
  /** Epoch ms since which nothing was heard from the node (its last heartbeat), when not ready. */
  silentSince?: number;
  unschedulable: boolean;
  capacity: number;
}

/**
 * A node is ready while its sidecar says so and its heartbeat is fresh, as the node lifecycle
 * controller judges kubelets: a stale heartbeat means Unknown, whatever the last condition said.
 */
export function viewNode(node: AgentNode, now: number, heartbeatGraceMs: number): NodeView {
  const name = node.metadata?.name ?? '';
  const heartbeat = parseTime(node.status?.lastHeartbeatTime);
  const cond = findCondition(node.status?.conditions, 'Ready');
  const base = {
    name,
    labels: node.metadata?.labels ?? {},
    unschedulable: node.spec?.unschedulable === true,
    capacity: node.status?.capacity ?? 0,
  };
  if (heartbeat === undefined) return { ...base, ready: false, notReadyReason: 'never heartbeated', silentSince: parseTime(node.metadata?.creationTimestamp) ?? now };
  if (now - heartbeat > heartbeatGraceMs) return { ...base, ready: false, notReadyReason: 'heartbeat stale', silentSince: heartbeat };
  if (cond?.status !== 'True') return { ...base, ready: false, notReadyReason: cond?.message || 'not ready', silentSince: heartbeat };
  return { ...base, ready: true };
}

/** Readiness as the controller writes it back on the AgentNode when the heartbeat went stale. */
export function staleReadyCondition(view: NodeView): { status: 'Unknown'; reason: string; message: string } | undefined {
  return view.notReadyReason === 'heartbeat stale' || view.notReadyReason === 'never heartbeated'
    ? { status: 'Unknown', reason: 'NodeStatusUnknown', message: `node sidecar stopped posting status (${view.notReadyReason})` }
    : undefined;
}
