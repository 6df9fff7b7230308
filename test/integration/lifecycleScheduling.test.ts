/**
 * Where Agents run: nodeSelector and nodeName pick the node; an Agent no node can take waits in
 * Pending (Unschedulable, with the reason) and is scheduled once a node matches.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agentNodeClient } from '../../src/kube/resources.js';
import { createTestNamespace, kubeConfig } from '../support/cluster.js';
import { agents, type AgentObj, assertNothingLeft, createAgent, patchSpec, useStack, waitForAgent, waitForCleanedUp, waitForGone } from '../support/stack.js';

const NODE_A = 'life-sched-node-1';
const NODE_B = 'life-sched-node-2';

describe('agent lifecycle: scheduling', () => {
  const stack = useStack('life-sched', {
    nodeLabels: (_node, i): Record<string, string> => (i === 0 ? { zone: 'a', 'example.com/gpu': 'true' } : { zone: 'b' }),
  });

  it('nodeSelector and nodeName: each Agent lands on the node it asked for', async (t) => {
    const ns = await createTestNamespace(t, 'life-sched-pick');
    const cases: { name: string; spec: Partial<AgentObj['spec']>; node: string }[] = [
      { name: 'gpu', spec: { nodeSelector: { 'example.com/gpu': 'true' } }, node: NODE_A },
      { name: 'zone-b', spec: { nodeSelector: { zone: 'b' } }, node: NODE_B },
      { name: 'zone-a', spec: { nodeSelector: { zone: 'a' } }, node: NODE_A },
      { name: 'named-b', spec: { nodeName: NODE_B }, node: NODE_B },
      { name: 'named-a', spec: { nodeName: NODE_A }, node: NODE_A },
    ];
    for (const c of cases) await createAgent(ns, c.name, { command: ['sh', '-c', 'echo on "$AGENT_NAME"; exit 0'], ...c.spec });
    for (const c of cases) {
      const a = await waitForCleanedUp(ns, c.name);
      assert.equal(a.status?.phase, 'Completed', `${c.name}: ${a.status?.reason} ${a.status?.message}`);
      assert.equal(a.status?.nodeName, c.node, `${c.name} ran on ${a.status?.nodeName}`);
      assert.equal(a.metadata?.labels?.['orchestrator.dev/node'], c.node);
      await assertNothingLeft(stack(), a);
    }
  });

  it('an unsatisfiable nodeSelector: Pending (Unschedulable) with the reason, scheduled once a node gets the label', async (t) => {
    const ns = await createTestNamespace(t, 'life-sched-wait');
    const nodes = agentNodeClient(kubeConfig());
    t.after(() => nodes.patchMeta({ name: NODE_B }, { labels: { zone: 'b', pool: null } }));
    await createAgent(ns, 'picky', { nodeSelector: { zone: 'b', pool: 'batch' }, command: ['sh', '-c', 'echo finally'] });
    const pending = await waitForAgent(ns, 'picky', (a) => a.status?.reason === 'Unschedulable', 'to be Unschedulable');
    assert.equal(pending.status?.phase, 'Pending');
    assert.match(pending.status?.message ?? '', /0\/2 nodes are available: 2 didn't match nodeSelector/);
    const cond = pending.status?.conditions?.find((c) => c.type === 'Scheduled');
    assert.equal(cond?.status, 'False');
    assert.equal(cond?.reason, 'Unschedulable');
    assert.equal(pending.status?.nodeName, undefined);
    await nodes.patchMeta({ name: NODE_B }, { labels: { pool: 'batch' } });
    // The node change wakes the controller: well before its periodic retry of Pending Agents (30 s).
    const a = await waitForCleanedUp(ns, 'picky', 20_000);
    assert.equal(a.status?.phase, 'Completed');
    assert.equal(a.status?.nodeName, NODE_B);
    await assertNothingLeft(stack(), a);
  });

  it('nodeName of a node that does not exist: Pending with the reason; stop and delete it cleanly', async (t) => {
    const ns = await createTestNamespace(t, 'life-sched-noname');
    await createAgent(ns, 'lost', { nodeName: 'no-such-node', command: ['sh', '-c', 'echo never'] });
    const pending = await waitForAgent(ns, 'lost', (a) => a.status?.reason === 'Unschedulable', 'to be Unschedulable');
    assert.equal(pending.status?.phase, 'Pending');
    assert.match(pending.status?.message ?? '', /node "no-such-node".*does not exist/);
    await patchSpec(ns, 'lost', { stop: true, stopReason: 'wrong node' });
    const stopped = await waitForAgent(ns, 'lost', (a) => a.status?.phase === 'Terminated', 'to be Terminated');
    assert.equal(stopped.status?.reason, 'Stopped');
    assert.equal(stopped.status?.nodeName, undefined, 'a stopped Pending Agent is never bound');
    await assertNothingLeft(stack(), stopped);
    // Never bound: its finalizer goes at once on deletion, with no node to wait for.
    assert.equal(await agents().delete({ namespace: ns, name: 'lost' }), true);
    await waitForGone(ns, 'lost', 15_000);
  });
});
