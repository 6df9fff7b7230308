/**
 * Node capacity (one slot per node here): Agents beyond the free slots wait in Pending and run as
 * soon as a slot is freed, which happens when the finished Agent's cleanup is recorded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestNamespace, waitFor } from '../support/cluster.js';
import { agents, assertNodesEmpty, assertNothingLeft, createAgent, patchSpec, useStack, waitForAgent, waitForCleanedUp, type AgentObj } from '../support/stack.js';

const active = (a: AgentObj) => a.status?.phase === 'Running' || a.status?.phase === 'Working';

describe('agent lifecycle: capacity', () => {
  const stack = useStack('life-cap', { capacity: 1 });

  it('capacity 1 per node: 3 long agents give 2 Running and 1 Pending; the Pending one runs once a slot frees', async (t) => {
    const ns = await createTestNamespace(t, 'life-cap');
    const names = ['long-1', 'long-2', 'long-3'];
    for (const name of names) await createAgent(ns, name, { command: ['sleep', '60'], cleanup: { gracePeriodSeconds: 1 } });
    const list = async () => (await agents().list({ namespace: ns })).items;
    const split = await waitFor(
      async () => {
        const items = await list();
        const running = items.filter(active);
        const pending = items.filter((a) => a.status?.phase === 'Pending' && a.status?.reason === 'Unschedulable');
        return running.length === 2 && pending.length === 1 ? { running, pending: pending[0]! } : undefined;
      },
      { timeoutMs: 30_000, what: '2 agents Running and 1 Pending' },
    );
    assert.deepEqual(split.running.map((a) => a.status?.nodeName).sort(), ['life-cap-node-1', 'life-cap-node-2'], 'one per node');
    assert.match(split.pending.status?.message ?? '', /0\/2 nodes are available: 2 at capacity/);
    assert.equal(split.pending.status?.nodeName, undefined);

    // Free one slot: the waiting Agent takes exactly that node.
    const first = split.running[0]!;
    await patchSpec(ns, first.metadata!.name!, { stop: true });
    const stopped = await waitForCleanedUp(ns, first.metadata!.name!);
    await assertNothingLeft(stack(), stopped);
    const waiting = split.pending.metadata!.name!;
    const moved = await waitForAgent(ns, waiting, active, 'to run once a slot is free', 20_000);
    assert.equal(moved.status?.nodeName, first.status?.nodeName);
    // Still only one per node.
    const now = (await list()).filter(active);
    assert.deepEqual(now.map((a) => a.status?.nodeName).sort(), ['life-cap-node-1', 'life-cap-node-2']);

    for (const a of now) await patchSpec(ns, a.metadata!.name!, { stop: true });
    for (const a of now) await assertNothingLeft(stack(), await waitForCleanedUp(ns, a.metadata!.name!));
    await assertNodesEmpty(stack());
  });
});
