/** Picks a node for an Agent (pure): ready, schedulable, matching, with a free slot; least loaded wins. */
import type { AgentSpec } from '../api/agent.js';
import type { NodeView } from './nodes.js';

/** `queued`: a node that fits is only full, so the Agent waits for a slot rather than for the cluster to change. */
export type ScheduleResult = { node: string } | { unschedulable: string; queued: boolean };

/** `used` counts the slots taken on each node: bound Agents whose cleanup is not recorded yet. */
export function schedule(spec: AgentSpec, nodes: readonly NodeView[], used: ReadonlyMap<string, number>): ScheduleResult {
  if (spec.nodeName && !nodes.some((n) => n.name === spec.nodeName)) {
    return { unschedulable: `node "${spec.nodeName}" named by spec.nodeName does not exist`, queued: false };
  }
  const rejected = new Map<string, number>();
  const reject = (why: string) => rejected.set(why, (rejected.get(why) ?? 0) + 1);
  const fits: { name: string; free: number; load: number }[] = [];
  let queued = false;
  for (const n of nodes) {
    if (spec.nodeName && n.name !== spec.nodeName) continue;
    if (!n.ready) reject('not ready');
    else if (n.unschedulable) reject('unschedulable');
    else if (!matches(spec.nodeSelector, n.labels)) reject("didn't match nodeSelector");
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

export function matches(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}
