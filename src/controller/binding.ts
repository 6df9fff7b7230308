/**
 * Where an Agent is bound (pure). The binding of record is the orchestrator.dev/node label, which only
 * the controller writes: the node sidecars cannot write an Agent's metadata at all (their RBAC has
 * agents/status only, and a status write cannot change metadata), and the admission policy
 * agent-operator-binding refuses the label to everyone else but cluster admins. The controller writes
 * the label first when it binds, then publishes the same node in status.nodeName.
 *
 * status.nodeName is that copy, never a source: were it one, whoever can write status (a node) could
 * move an Agent, as a node once pulled another node's Agent to itself. A copy that disagrees with the
 * label is reported and overwritten, never followed.
 */
import type { Agent } from '../api/agent.js';
import { NODE_LABEL } from '../api/constants.js';

export interface Binding {
  /** The node the Agent is bound to; undefined: not bound. */
  node?: string;
  /** status.nodeName disagrees with the binding: what a Warning Event says. */
  mismatch?: string;
}

export function bindingOf(agent: Agent): Binding {
  const node = agent.metadata?.labels?.[NODE_LABEL] || undefined;
  const claimed = agent.status?.nodeName;
  if (!claimed || claimed === node) return node ? { node } : {};
  const mismatch = node
    ? `status.nodeName says ${claimed}, but the Agent is bound to ${node} (label ${NODE_LABEL}); ignored and restored`
    : `status.nodeName says ${claimed}, but the controller never bound the Agent (no label ${NODE_LABEL}); ignored and cleared`;
  return node ? { node, mismatch } : { mismatch };
}
