/**
 * Picks a node for an Agent (pure): ready, schedulable, inside its namespace's node pool, matching its
 * selector, with a free slot; least loaded wins.
 */
import type { AgentSpec } from '../api/agent.js';
import { NODE_SELECTOR_ANNOTATION } from '../api/constants.js';
import { LabelSyntaxError, matchesLabels, parseLabelSet } from '../api/labels.js';
import type { NodeView } from './nodes.js';

/** `queued`: a node that fits is only full, so the Agent waits for a slot rather than for the cluster to change. */
export type ScheduleResult = { node: string } | { unschedulable: string; queued: boolean };

/** The nodes a namespace confines its Agents to (its NODE_SELECTOR_ANNOTATION), as the controller read it. */
export interface NodePool {
  namespace: string;
  /** The annotation's text. */
  annotation?: string;
  /** The parsed selector every node of the pool matches. */
  selector?: Record<string, string>;
  /** Why no node can be chosen at all (the pool cannot be known): scheduling waits, fail closed. */
  blocked?: string;
}

/**
 * The pool of a namespace, from the Namespace object as cached (undefined: not seen yet); undefined
 * when the namespace sets no annotation (every node is in it).
 */
export function nodePoolOf(namespace: string, ns: { metadata?: { annotations?: Record<string, string> } } | undefined): NodePool | undefined {
  if (!ns) return { namespace, blocked: `namespace ${namespace} is not in the controller's cache yet, so its ${NODE_SELECTOR_ANNOTATION} annotation is unknown` };
  const annotation = ns.metadata?.annotations?.[NODE_SELECTOR_ANNOTATION];
  if (annotation === undefined) return undefined;
  try {
    return { namespace, annotation, selector: parseLabelSet(annotation) };
  } catch (err) {
    if (!(err instanceof LabelSyntaxError)) throw err;
    return { namespace, annotation, blocked: `${describePool({ namespace, annotation })} is not a valid selector (${err.message}); no node is chosen until it is fixed` };
  }
}

const describePool = (p: NodePool) => `annotation ${NODE_SELECTOR_ANNOTATION}="${p.annotation ?? ''}" on namespace ${p.namespace}`;

/**
 * Why the spec can never be placed in its namespace's pool (undefined: it can): a nodeSelector that
 * requires another value of a key the pool fixes, or a nodeName of a node outside the pool. Pods meet
 * the same answer from PodNodeSelector (refused) and the kubelet (Failed, NodeAffinity).
 */
export function poolConflict(spec: AgentSpec, nodes: readonly NodeView[], pool: NodePool | undefined): string | undefined {
  if (!pool?.selector) return undefined;
  for (const [k, v] of Object.entries(spec.nodeSelector ?? {})) {
    const required = pool.selector[k];
    if (required !== undefined && required !== v) return `spec.nodeSelector ${k}=${v} contradicts the node pool of the namespace: ${describePool(pool)} requires ${k}=${required}`;
  }
  const named = spec.nodeName ? nodes.find((n) => n.name === spec.nodeName) : undefined;
  if (named && !matchesLabels(pool.selector, named.labels)) return `spec.nodeName ${named.name} is outside the node pool of the namespace: ${describePool(pool)}`;
  return undefined;
}

/** `used` counts the slots taken on each node: bound Agents whose cleanup is not recorded yet. */
export function schedule(spec: AgentSpec, nodes: readonly NodeView[], used: ReadonlyMap<string, number>, pool?: NodePool): ScheduleResult {
  // Fail closed: a pool that cannot be known holds no node.
  if (pool?.blocked) return { unschedulable: pool.blocked, queued: false };
  if (spec.nodeName && !nodes.some((n) => n.name === spec.nodeName)) {
    return { unschedulable: `node "${spec.nodeName}" named by spec.nodeName does not exist`, queued: false };
  }
  const rejected = new Map<string, number>();
  const reject = (why: string) => rejected.set(why, (rejected.get(why) ?? 0) + 1);
  const fits: { name: string; free: number; load: number }[] = [];
  let queued = false;
  for (const n of nodes) {
    if (spec.nodeName && n.name !== spec.nodeName) continue;
    if (!matchesLabels(pool?.selector, n.labels)) reject(`outside the namespace's node pool (${NODE_SELECTOR_ANNOTATION})`);
    else if (!n.ready) reject('not ready');
    else if (n.unschedulable) reject('unschedulable');
    else if (!matchesLabels(spec.nodeSelector, n.labels)) reject("didn't match nodeSelector");
    else {
      const u = used.get(n.name) ?? 0;
      if (u >= n.capacity) {
        reject('at capacity');
        queued ||= n.capacity > 0;
      } else fits.push({ name: n.name, free: n.capacity - u, load: n.capacity === 0 ? 1 : u / n.capacity });
    }
  }
  if (fits.length > 0) {
    fits.sort((a, b) => a.load - b.load || b.free - a.free || a.name.localeCompare(b.name));
    return { node: fits[0]!.name };
  }
  const considered = spec.nodeName ? 1 : nodes.length;
  const details = [...rejected.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([why, count]) => `${count} ${why}`)
    .join(', ');
  return { unschedulable: `0/${considered} nodes are available${details ? `: ${details}` : ''}`, queued };
}
