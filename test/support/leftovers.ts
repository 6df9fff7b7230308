/**
 * What a test file may not leave on the run's shared control plane: a namespace of its own, an Agent,
 * an AgentNode. The next file's controller and sidecars watch the whole cluster, so anything left
 * (even a namespace still terminating) is work they would pick up and Events they would be refused.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { apiErrorCode } from '../../src/dev/apiErrors.js';
import { OPERATOR_NAMESPACE } from '../../src/dev/stack.js';
import { agentClient, agentNodeClient, type KubeObject, type ResourceClient } from '../../src/kube/resources.js';
import { waitFor } from './cluster.js';

/**
 * The namespaces every control plane has, and the operator's own (deploy/ installs it: the first
 * stack of the run does, and it stays, as an install does); any other one was made by a test.
 */
const PLATFORM_NAMESPACES = new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease', OPERATOR_NAMESPACE]);

export type LeftoverKind = 'Namespace' | 'Agent' | 'AgentNode';

export interface Leftover {
  kind: LeftoverKind;
  name: string;
  namespace?: string;
  /** Deletion was asked for but has not completed (a finalizer or namespace content holds it). */
  terminating: boolean;
  finalizers: string[];
}

interface Meta {
  metadata?: { name?: string; namespace?: string; deletionTimestamp?: unknown; finalizers?: string[] };
}

const toLeftover = (kind: LeftoverKind, o: Meta): Leftover => ({
  kind,
  name: o.metadata?.name ?? '',
  ...(o.metadata?.namespace ? { namespace: o.metadata.namespace } : {}),
  terminating: o.metadata?.deletionTimestamp !== undefined && o.metadata.deletionTimestamp !== null,
  finalizers: o.metadata?.finalizers ?? [],
});

export async function listLeftovers(kc: KubeConfig, kinds: readonly LeftoverKind[] = ['Namespace', 'Agent', 'AgentNode']): Promise<Leftover[]> {
  const found: Leftover[] = [];
  if (kinds.includes('Namespace')) {
    const namespaces = await kc.makeApiClient(CoreV1Api).listNamespace();
    found.push(...namespaces.items.filter((n) => !PLATFORM_NAMESPACES.has(n.metadata?.name ?? '')).map((n) => toLeftover('Namespace', n as Meta)));
  }
  if (kinds.includes('Agent')) found.push(...(await agentClient(kc).list()).items.map((a) => toLeftover('Agent', a)));
  if (kinds.includes('AgentNode')) found.push(...(await agentNodeClient(kc).list()).items.map((n) => toLeftover('AgentNode', n)));
  return found;
}

export function describeLeftover(l: Leftover): string {
  const where = l.namespace ? `${l.namespace}/${l.name}` : l.name;
  const state = l.terminating ? `terminating${l.finalizers.length > 0 ? `, held by ${l.finalizers.join(',')}` : ''}` : 'not deleted';
  return `${l.kind} ${where} (${state})`;
}

/**
 * Waits up to `timeoutMs` for none of `kinds` to be left (deletions a file asked for get the time
 * they need to complete); returns what is still there then, empty when the file cleaned up.
 */
export async function awaitNoLeftovers(kc: KubeConfig, timeoutMs: number, kinds?: readonly LeftoverKind[]): Promise<Leftover[]> {
  let last: Leftover[] = [];
  try {
    await waitFor(
      async () => {
        last = await listLeftovers(kc, kinds);
        return last.length === 0;
      },
      { timeoutMs, intervalMs: 250, what: 'the test objects to be gone' },
    );
    return [];
  } catch {
    return last;
  }
}

/** Removes leftovers by force (finalizers dropped), so one leaking file does not fail every file after it. */
export async function purgeLeftovers(kc: KubeConfig, leftovers: readonly Leftover[]): Promise<void> {
  const clients = { Agent: agentClient(kc), AgentNode: agentNodeClient(kc) } as const;
  for (const l of leftovers) {
    if (l.kind === 'Namespace') continue;
    const ref = { name: l.name, ...(l.namespace ? { namespace: l.namespace } : {}) };
    const client: ResourceClient<KubeObject> = clients[l.kind];
    if (l.finalizers.length > 0) await client.patchMeta(ref, { finalizers: null }).catch(ignoreNotFound);
    await client.delete(ref);
  }
  const core = kc.makeApiClient(CoreV1Api);
  for (const l of leftovers.filter((x) => x.kind === 'Namespace')) await core.deleteNamespace({ name: l.name }).catch(ignoreNotFound);
  // A namespace still terminating would refuse the next file's objects: wait until it is gone.
  const still = await awaitNoLeftovers(kc, PURGE_MS);
  if (still.length > 0) throw new Error(`could not remove: ${still.map(describeLeftover).join('; ')}`);
}

const PURGE_MS = 60_000;

function ignoreNotFound(err: unknown): void {
  if (apiErrorCode(err) !== 404) throw err;
}
