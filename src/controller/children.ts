/**
 * Child Agents (pure): what the controller does with a parent's spawn and stop requests, and the
 * parent's mirror of its children. The request lives on the parent's status (written by its node),
 * the decision is written back to the parent's status before any child is created: a child is
 * created only after its place in `status.children.agents` is committed under the parent's
 * resourceVersion, so a stale cache can never count the same free slot twice (the scheduler's
 * "assume", made durable). An entry without a uid is a creation in flight and is retried.
 */
import type { Agent, ChildRefusal, ChildrenStatus, ChildSummary, SpawnRequest } from '../api/agent.js';
import { AGENT_KIND, API_VERSION, LIMITS, PARENT_LABEL, ROOT_LABEL } from '../api/constants.js';
import type { Outcome } from '../api/outcome.js';
import { isTerminalPhase, type Phase } from '../api/phase.js';
import type { EventSpec } from './reconcile.js';

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** An Agent as the controller's cache holds it, with the metadata children are judged by. */
export type AgentWithOwners = Agent & { metadata?: Agent['metadata'] & { ownerReferences?: OwnerReference[] } };

export interface ChildrenObserved {
  parent: AgentWithOwners;
  /** Agents in the parent's namespace whose controlling owner is the parent (by UID). */
  children: readonly AgentWithOwners[];
  /** Names of the other Agents in the namespace: a request for one of them is refused. */
  taken: ReadonlySet<string>;
}

export interface ChildrenPlan {
  /** The parent's status.children to write (undefined: the parent has none and asked for none). */
  status?: ChildrenStatus;
  /** Children to create, after the status above is written. */
  create: AgentWithOwners[];
  /** Children whose spec.stop to set. */
  stop: { name: string; reason: string }[];
  events: EventSpec[];
}

/** The Agent that controls `agent` (its parent), from its ownerReferences. */
export function controllerOf(agent: AgentWithOwners): OwnerReference | undefined {
  return agent.metadata?.ownerReferences?.find((r) => r.controller === true && r.kind === AGENT_KIND && r.apiVersion === API_VERSION);
}

/**
 * ParentStopped: a child whose parent ended, is being deleted or is gone is stopped, so nothing runs
 * that no one is left to read. `parent` is the owner as cached (undefined when it does not exist).
 */
export function parentOutcome(child: AgentWithOwners, parent: AgentWithOwners | undefined): Outcome | undefined {
  const owner = controllerOf(child);
  if (!owner) return undefined;
  const why =
    !parent || parent.metadata?.uid !== owner.uid
      ? `parent ${owner.name} no longer exists`
      : parent.metadata?.deletionTimestamp
        ? `parent ${owner.name} is being deleted`
        : isTerminalPhase(parent.status?.phase)
          ? `parent ${owner.name} ended (${parent.status?.phase}, ${parent.status?.reason ?? parent.status?.phase})`
          : undefined;
  return why ? { phase: 'Terminated', reason: 'ParentStopped', message: why } : undefined;
}

const FAILED: readonly Phase[] = ['Failed', 'Error', 'Terminated'];

function summarize(child: AgentWithOwners): ChildSummary {
  const s = child.status ?? {};
  const message = s.message ?? '';
  return {
    name: child.metadata?.name ?? '',
    ...(child.metadata?.uid ? { uid: child.metadata.uid } : {}),
    ...(s.nodeName ? { nodeName: s.nodeName } : {}),
    ...(s.phase ? { phase: s.phase } : {}),
    ...(s.reason ? { reason: s.reason } : {}),
    ...(message ? { message: message.length > LIMITS.childMessageLength ? `${message.slice(0, LIMITS.childMessageLength - 1)}…` : message } : {}),
    ...(s.progress !== undefined ? { progress: s.progress } : {}),
    ...(s.findings ? { findings: s.findings.total } : {}),
  };
}

/** The child Agent a request asks for: in the parent's namespace and on its node, owned by it, limits narrowed. */
export function childManifest(parent: AgentWithOwners, request: SpawnRequest): AgentWithOwners {
  const meta = parent.metadata ?? {};
  const limits = parent.spec.children!;
  return {
    apiVersion: API_VERSION,
    kind: AGENT_KIND,
    metadata: {
      name: request.name,
      namespace: meta.namespace,
      labels: { [PARENT_LABEL]: meta.name ?? '', [ROOT_LABEL]: meta.labels?.[ROOT_LABEL] ?? meta.name ?? '' },
      // controller: one owner drives it; blockOwnerDeletion: a foreground delete of the parent waits
      // until the garbage collector has deleted (and our finalizer cleaned up) every child.
      ownerReferences: [{ apiVersion: API_VERSION, kind: AGENT_KIND, name: meta.name ?? '', uid: meta.uid ?? '', controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      ...request.spec,
      // On the parent's node: its output and archive are where the parent's node can read them.
      ...(parent.status?.nodeName ? { nodeName: parent.status.nodeName } : {}),
      children: { maxTotal: limits.maxTotal, maxConcurrent: limits.maxConcurrent, maxDepth: Math.max(0, limits.maxDepth - 1) },
      ...(parent.spec.completionChecks ? { completionChecks: parent.spec.completionChecks } : {}),
    },
  };
}

/** Why `request` may not be created now, naming the field, or undefined when it may. */
function refusal(o: ChildrenObserved, agents: readonly ChildSummary[], request: SpawnRequest): Omit<ChildRefusal, 'name' | 'requestTime'> | undefined {
  const { parent } = o;
  const limits = parent.spec.children;
  const name = parent.metadata?.name ?? '';
  if (parent.metadata?.deletionTimestamp || isTerminalPhase(parent.status?.phase)) {
    return { field: 'status.phase', message: `${name} has ended (${parent.status?.phase ?? 'being deleted'}) and may not spawn children` };
  }
  if (!limits) return { field: 'spec.children', message: `${name} has no spec.children: it may not spawn children` };
  if (limits.maxDepth < 1) return { field: 'spec.children.maxDepth', message: `spec.children.maxDepth is 0: ${name} is as deep as its tree may go` };
  if (agents.length >= limits.maxTotal) {
    return { field: 'spec.children.maxTotal', message: `spec.children.maxTotal is ${limits.maxTotal} and ${agents.length} children were created` };
  }
  const active = agents.filter((a) => !isTerminalPhase(a.phase)).length;
  if (active >= limits.maxConcurrent) {
    return { field: 'spec.children.maxConcurrent', message: `spec.children.maxConcurrent is ${limits.maxConcurrent} and ${active} children are active; retry when one has finished` };
  }
  if ((parent.metadata?.labels?.[ROOT_LABEL] ?? name).length > 63) {
    return { field: 'metadata.name', message: `the root Agent's name is longer than 63 characters, so it cannot label its descendants` };
  }
  if (o.taken.has(request.name)) return { field: 'name', message: `an Agent named ${request.name} already exists in namespace ${parent.metadata?.namespace}` };
  return undefined;
}

export function planChildren(o: ChildrenObserved): ChildrenPlan {
  const { parent } = o;
  const status = parent.status ?? {};
  const previous = status.children;
  const requests = [...(status.spawnRequests ?? [])].sort((a, b) => a.requestTime.localeCompare(b.requestTime));
  const events: EventSpec[] = [];
  const create: AgentWithOwners[] = [];

  // The mirror: every child ever recorded, refreshed from the cache; deleted ones keep their last state.
  const cached = new Map(o.children.map((c) => [c.metadata?.name ?? '', c]));
  const agents: ChildSummary[] = (previous?.agents ?? []).map((a) => {
    const child = cached.get(a.name);
    return child ? summarize(child) : a;
  });
  for (const c of o.children) if (!agents.some((a) => a.name === c.metadata?.name)) agents.push(summarize(c));
  const refused = new Map((previous?.refused ?? []).map((r) => [r.name, r]));
  // Recorded but not yet seen: (re)create it (creation is idempotent by name), unless someone else
  // took the name meanwhile.
  for (const a of [...agents]) {
    const request = requests.find((r) => r.name === a.name);
    if (a.uid || !request) continue;
    if (o.taken.has(a.name)) {
      agents.splice(agents.indexOf(a), 1);
      const message = `an Agent named ${a.name} already exists in namespace ${parent.metadata?.namespace}`;
      refused.set(a.name, { name: a.name, requestTime: request.requestTime, field: 'name', message });
      events.push({ type: 'Warning', reason: 'ChildRefused', message: `${a.name}: name: ${message}` });
    } else create.push(childManifest(parent, request));
  }
  for (const request of requests) {
    if (agents.some((a) => a.name === request.name)) continue; // created already: a retry changes nothing
    if (refused.get(request.name)?.requestTime === request.requestTime) continue; // answered
    const no = refusal(o, agents, request);
    if (no) {
      refused.set(request.name, { name: request.name, requestTime: request.requestTime, ...no });
      events.push({ type: 'Warning', reason: 'ChildRefused', message: `${request.name}: ${no.field}: ${no.message}` });
      continue;
    }
    refused.delete(request.name);
    agents.push({ name: request.name, phase: 'Pending' });
    create.push(childManifest(parent, request));
    events.push({ type: 'Normal', reason: 'ChildCreated', message: `created child Agent ${request.name}` });
  }

  const stop: ChildrenPlan['stop'] = [];
  for (const r of status.stopRequests ?? []) {
    const child = cached.get(r.name);
    if (child && !child.spec.stop && !isTerminalPhase(child.status?.phase)) {
      stop.push({ name: r.name, reason: r.reason || `stopped by its parent ${parent.metadata?.name}` });
    }
  }

  if (agents.length === 0 && refused.size === 0) return { create, stop, events };
  return {
    status: {
      active: agents.filter((a) => !isTerminalPhase(a.phase)).length,
      succeeded: agents.filter((a) => a.phase === 'Completed').length,
      failed: agents.filter((a) => a.phase !== undefined && FAILED.includes(a.phase)).length,
      ...(agents.length > 0 ? { agents } : {}),
      ...(refused.size > 0 ? { refused: [...refused.values()] } : {}),
    },
    create,
    stop,
    events,
  };
}
