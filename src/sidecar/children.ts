/**
 * What an agent asks its node about its children (pure): how a spawn or stop request lands on the
 * parent's status (node-owned fields the controller acts on), what the agent is told of its
 * children, and which lines of a child's output it gets. Requests are keyed by the child's name, so
 * a retried call is idempotent; the effects (status writes, file reads) are in childCalls.ts.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Agent, ChildSummary, SpawnRequest, StopRequest } from '../api/agent.js';
import { LIMITS } from '../api/constants.js';
import type { ChildrenAnswer, SpawnChild, StopChild } from '../report/protocol.js';
import { plain } from './decide.js';

/** A refusal the agent sees as an error that says what is wrong (HTTP status on the channel). */
export interface Refusal {
  refused: { status: 404 | 409 | 422; message: string };
}

/** The child's Agent name: `<parent>-<name>`, unless the agent already gave the full name. */
export function childAgentName(parent: string, name: string): string {
  return name.startsWith(`${parent}-`) ? name : `${parent}-${name}`;
}

const MAX_NAME = 63;

export type SpawnIntake = Refusal | { name: string; requestTime: string; write?: SpawnRequest[] };

/** How a spawn request lands on the parent's status.spawnRequests (`write`: the new list). */
export function intakeSpawn(parent: Agent, input: SpawnChild, now: string): SpawnIntake {
  const status = parent.status ?? {};
  const { name: given, ...spec } = input;
  const name = childAgentName(parent.metadata?.name ?? '', given);
  if (name.length > MAX_NAME) {
    return { refused: { status: 422, message: `name: the child's Agent name '${name}' would be ${name.length} characters, over ${MAX_NAME}; choose a shorter name` } };
  }
  const requests = status.spawnRequests ?? [];
  const existing = requests.find((r) => r.name === name);
  if (existing) {
    if (!isDeepStrictEqual(plain(existing.spec), plain(spec))) {
      return { refused: { status: 409, message: `name: a child named '${name}' was already requested with a different spec; choose another name` } };
    }
    const created = status.children?.agents?.some((a) => a.name === name);
    const refusedNow = status.children?.refused?.some((r) => r.name === name && r.requestTime === existing.requestTime);
    // Refused before: asking again is a new request, judged afresh (a slot may have freed up).
    if (!created && refusedNow) {
      // Strictly later than the refused one, or the refusal would answer the new request too.
      const requestTime = Date.parse(now) > Date.parse(existing.requestTime) ? now : new Date(Date.parse(existing.requestTime) + 1).toISOString();
      const renewed = { ...existing, requestTime };
      return { name, requestTime, write: requests.map((r) => (r.name === name ? renewed : r)) };
    }
    return { name, requestTime: existing.requestTime };
  }
  if (requests.length >= LIMITS.spawnRequests) {
    return { refused: { status: 409, message: `status.spawnRequests: this agent has made ${requests.length} spawn requests, the most one Agent may make` } };
  }
  return { name, requestTime: now, write: [...requests, plain({ name, requestTime: now, spec })] };
}

export type StopIntake = Refusal | { name: string; write?: StopRequest[] };

/** How a stop request lands on the parent's status.stopRequests. */
export function intakeStop(parent: Agent, input: StopChild, now: string): StopIntake {
  const child = findChild(parent, input.name);
  if (!child) return { refused: { status: 404, message: notAChild(parent, input.name) } };
  const requests = parent.status?.stopRequests ?? [];
  if (requests.some((r) => r.name === child.name)) return { name: child.name };
  const request: StopRequest = { name: child.name, requestTime: now, ...(input.reason ? { reason: input.reason } : {}) };
  return { name: child.name, write: [...requests, request] };
}

export function findChild(parent: Agent, name: string): ChildSummary | undefined {
  const full = childAgentName(parent.metadata?.name ?? '', name);
  return parent.status?.children?.agents?.find((a) => a.name === full || a.name === name);
}

export function notAChild(parent: Agent, name: string): string {
  const known = (parent.status?.children?.agents ?? []).map((a) => a.name);
  return `name: '${name}' is not a child of ${parent.metadata?.name} (its children: ${known.length > 0 ? known.join(', ') : 'none'})`;
}

export function childrenAnswer(parent: Agent): ChildrenAnswer {
  const c = parent.status?.children;
  const answered = new Set([...(c?.agents ?? []).map((a) => a.name), ...(c?.refused ?? []).map((r) => r.name)]);
  return {
    active: c?.active ?? 0,
    succeeded: c?.succeeded ?? 0,
    failed: c?.failed ?? 0,
    children: c?.agents ?? [],
    refused: c?.refused ?? [],
    pending: (parent.status?.spawnRequests ?? []).filter((r) => !answered.has(r.name)).map((r) => r.name),
  };
}

/** The last `tail` lines containing `grep` (plain text); `cut`: the text starts mid-line (a tail of the file). */
export function tailLines(text: string, tail: number, grep: string | undefined, cut: boolean): string[] {
  const lines = text.split('\n');
  if (cut) lines.shift();
  if (lines.at(-1) === '') lines.pop();
  return (grep === undefined ? lines : lines.filter((l) => l.includes(grep))).slice(-tail);
}
