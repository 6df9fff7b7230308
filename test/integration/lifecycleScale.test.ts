/**
 * Many Agents: 10 at once spread over both nodes, all complete and are cleaned (with the latencies
 * measured), and 50 more in a row leave nothing behind on the nodes.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { closeConnections, shareConnections } from '../../src/kube/client.js';
import { Informer } from '../../src/kube/informer.js';
import { AGENT_RESOURCE } from '../../src/kube/resources.js';
import { createTestNamespace, kubeConfig, waitFor } from '../support/cluster.js';
import { archivedOutput, assertNodesEmpty, assertNothingLeft, createAgent, useStack, waitForCleanedUp, type AgentObj } from '../support/stack.js';

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const summary = (xs: readonly number[]) => `median ${Math.round(median(xs))} ms, worst ${Math.round(Math.max(...xs))} ms`;

describe('agent lifecycle: scale', () => {
  // Five slots per node: the ten fit at once, so the latencies measure the platform, not a queue.
  const stack = useStack('life-scale', { capacity: 5 });

  it('10 agents at once: all complete on both nodes and are cleaned; apply->Running and end->cleanup measured', async (t) => {
    const ns = await createTestNamespace(t, 'life-scale-10');
    const names = Array.from({ length: 10 }, (_, i) => `burst-${i}`);
    // The agent prints the time it ends (ms), the reference for how fast cleanup follows.
    const command = ['sh', '-c', 'echo started; sleep 2; echo "end $(date +%s%3N)"'];
    // Every status write arrives on a watch, so a Running that lasts 2 s on a loaded machine is seen
    // (a LIST poll can miss it); the first Running event is when the Agent was seen running.
    const runningAt = new Map<string, number>();
    const kc = shareConnections(kubeConfig());
    const informer = new Informer<AgentObj>(kc, { resource: AGENT_RESOURCE, namespace: ns, logger: pino({ level: 'warn' }) });
    const seen = (a: AgentObj) => {
      const p = a.status?.phase;
      if ((p === 'Running' || p === 'Working') && !runningAt.has(a.metadata!.name!)) runningAt.set(a.metadata!.name!, Date.now());
    };
    informer.onAdd(seen).onUpdate((_old, a) => seen(a));
    t.after(async () => {
      await informer.stop();
      closeConnections(kc);
    });
    informer.start();
    await informer.waitForSync(30_000);
    const applied = new Map<string, number>();
    await Promise.all(
      names.map((name) => {
        applied.set(name, Date.now());
        return createAgent(ns, name, { command });
      }),
    );
    let items: AgentObj[] = [];
    await waitFor(
      () => {
        items = informer.list();
        return items.length === names.length && items.every((a) => a.status?.cleanup?.completionTime);
      },
      { timeoutMs: 90_000, intervalMs: 50, what: 'all 10 Agents to be cleaned up' },
    );
    const startLatency: number[] = [];
    const cleanupLatency: number[] = [];
    for (const a of items) {
      const name = a.metadata!.name!;
      assert.equal(a.status?.phase, 'Completed', `${name}: ${a.status?.phase} ${a.status?.reason} ${a.status?.message}`);
      assert.ok(runningAt.has(name), `${name} was never seen Running`);
      startLatency.push(runningAt.get(name)! - applied.get(name)!);
      const end = Number(/^end (\d+)/m.exec(await archivedOutput(a))?.[1]);
      assert.ok(Number.isFinite(end), `${name}: no end time in its output`);
      cleanupLatency.push(Date.parse(a.status.cleanup!.completionTime!) - end);
      await assertNothingLeft(stack(), a);
    }
    const perNode = new Map<string, number>();
    for (const a of items) perNode.set(a.status!.nodeName!, (perNode.get(a.status!.nodeName!) ?? 0) + 1);
    assert.deepEqual([...perNode.keys()].sort(), ['life-scale-node-1', 'life-scale-node-2'], 'both nodes used');
    t.diagnostic(`apply->Running: ${summary(startLatency)}; end->cleanup record: ${summary(cleanupLatency)} (10 agents, 2 nodes, per node ${[...perNode.values()].join('/')})`);
    // Generous bounds (2 shared cores): a regression to seconds-per-step would still fail.
    assert.ok(Math.max(...startLatency) < 10_000, `apply->Running ${summary(startLatency)}`);
    assert.ok(Math.max(...cleanupLatency) < 10_000, `end->cleanup ${summary(cleanupLatency)}`);
    await assertNodesEmpty(stack());
  });

  it('50 agents in a row, five at a time: every one completes and is cleaned; the nodes end empty', async (t) => {
    const ns = await createTestNamespace(t, 'life-scale-50');
    const lanes = 5;
    const perLane = 10;
    const done: AgentObj[] = [];
    await Promise.all(
      Array.from({ length: lanes }, async (_, lane) => {
        for (let i = 0; i < perLane; i++) {
          const name = `seq-${lane}-${i}`;
          await createAgent(ns, name, { command: ['sh', '-c', 'echo "ran $AGENT_NAME"'] });
          const a = await waitForCleanedUp(ns, name, 60_000);
          assert.equal(a.status?.phase, 'Completed', `${name}: ${a.status?.phase} ${a.status?.reason} ${a.status?.message}`);
          await assertNothingLeft(stack(), a);
          done.push(a);
        }
      }),
    );
    assert.equal(done.length, lanes * perLane);
    // Every one archived exactly once, on the node it ran on.
    for (const node of stack().nodes) {
      const archived = await readdir(join(node.archiveDir, ns)).catch(() => [] as string[]);
      const ran = done.filter((a) => a.status?.nodeName === node.name).map((a) => `${a.metadata!.name}-${a.metadata!.uid}`);
      assert.deepEqual(archived.sort(), ran.sort(), `archives on ${node.name}`);
    }
    await assertNodesEmpty(stack());
  });
});
