import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestNamespace } from '../support/cluster.js';
import { archivedOutput, assertNothingLeft, createAgent, useStack, waitForCleanedUp } from '../support/stack.js';

describe('agent lifecycle', () => {
  const stack = useStack('life');

  it('completes via report: Completed, progress and message recorded, cleaned and archived', async (t) => {
    const ns = await createTestNamespace(t, 'life-complete');
    await createAgent(ns, 'reporter', {
      command: ['sh', '-c', 'echo begin; agent-operator report --status working --progress 40 --message halfway; agent-operator report --status completed --message "all done"; sleep 30'],
    });
    const a = await waitForCleanedUp(ns, 'reporter');
    assert.equal(a.status?.phase, 'Completed');
    assert.equal(a.status?.reason, 'AgentCompleted');
    assert.equal(a.status?.message, 'all done');
    assert.equal(a.status?.progress, 40);
    assert.ok(a.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True'));
    // The agent slept after reporting: cleanup stopped it from outside.
    assert.ok((a.status?.cleanup?.processesKilled ?? 0) >= 1);
    assert.match(await archivedOutput(a), /begin/);
    await assertNothingLeft(stack(), a);
  });
});
