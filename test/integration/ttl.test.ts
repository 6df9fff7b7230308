import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createTestNamespace, kubectl, waitFor } from '../support/cluster.js';
import { agents, assertNothingLeft, createAgent, useStack, waitForCleanedUp } from '../support/stack.js';

describe('finished agents', () => {
  const stack = useStack('ttl');

  it('kubectl wait --for=condition=Complete returns once the agent completed', async (t) => {
    const ns = await createTestNamespace(t, 'wait');
    await createAgent(ns, 'quick', { command: ['sh', '-c', 'sleep 1'] });
    const r = await kubectl(['wait', '-n', ns, '--for=condition=Complete', 'agent/quick', '--timeout=60s'], { timeoutMs: 70_000 });
    assert.equal(r.exitCode, 0, r.stderr);
    await assertNothingLeft(stack(), await waitForCleanedUp(ns, 'quick'));
  });

  it('ttlSecondsAfterFinished deletes the Agent after it finished and was cleaned up; without it the Agent stays', async (t) => {
    const ns = await createTestNamespace(t, 'ttl');
    await createAgent(ns, 'short-lived', { command: ['true'], ttlSecondsAfterFinished: 2 });
    await createAgent(ns, 'kept', { command: ['true'] });
    const kept = await waitForCleanedUp(ns, 'kept');
    const gone = await waitFor(async () => ((await agents().find({ namespace: ns, name: 'short-lived' })) === undefined ? true : undefined), {
      timeoutMs: 30_000,
      what: 'short-lived to be deleted by its TTL',
    });
    assert.equal(gone, true);
    // Its logs outlive the object.
    const archives = stack().nodes.map((n) => n.archiveDir);
    const found = await Promise.all(archives.map((d) => readdir(join(d, ns)).catch(() => [] as string[])));
    assert.ok(
      found.flat().some((n) => n.startsWith('short-lived-')),
      'archive of the deleted agent missing',
    );
    assert.ok(await agents().find({ namespace: ns, name: 'kept' }), 'an agent without a TTL must stay');
    await assertNothingLeft(stack(), kept);
  });
});
