/**
 * Two controllers, one Lease: exactly one leads; when it is killed the other takes over within the
 * lease duration, and nothing is done twice (no second launch, no repeated Event).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { CoordinationV1Api } from '@kubernetes/client-node';
import { OPERATOR_NAMESPACE, type Component } from '../../src/dev/stack.js';
import { createTestNamespace, kubeConfig, waitFor } from '../support/cluster.js';
import { useGates } from '../support/gate.js';
import { assertNothingLeft, createAgent, useStack, waitForAgent, type AgentObj } from '../support/stack.js';
import { EXITED_ONCE, metricValue, scrape, waitForEvents } from '../support/telemetry.js';

const LEASE = 'agent-operator-controller';
/** controller-runtime's defaults, which the controller uses. */
const LEASE_DURATION_MS = 15_000;
const RETRY_PERIOD_MS = 2_000;

const leading = async (c: Component) => metricValue(await scrape(c.metricsUrl), 'leader_election_master_status', { name: LEASE });
/** Agent reconciles the controller ran (a standby runs none). */
const reconciles = async (c: Component) => metricValue(await scrape(c.metricsUrl), 'controller_runtime_reconcile_total', { controller: 'agent' }) ?? 0;

/** The identity a controller campaigns with, from its own startup log line. */
async function identityOf(c: Component): Promise<string> {
  // The last start: a restarted controller campaigns under a new identity (its log is appended to).
  const starting = (await readFile(c.process()!.logPath, 'utf8'))
    .split('\n')
    .filter((l) => l.includes('"controller starting"'))
    .map((l) => JSON.parse(l) as { msg?: string; identity?: string })
    .pop();
  assert.ok(starting?.identity, `${c.name} logged no identity`);
  return starting.identity;
}

describe('leader election', () => {
  const stack = useStack('lead', { controllers: 2 });
  const gates = useGates(stack);

  it('one of two controllers leads; killed, the other takes over within the lease, and every Agent completes exactly once', async (t) => {
    const ns = await createTestNamespace(t, 'lead');
    const leases = kubeConfig().makeApiClient(CoordinationV1Api);
    const controllers = stack().controllerComponents;
    const statuses = await waitFor(
      async () => {
        const s = await Promise.all(controllers.map(leading));
        return s.filter((v) => v === 1).length === 1 && s.filter((v) => v === 0).length === 1 ? s : undefined;
      },
      { timeoutMs: 30_000, what: 'exactly one leader' },
    );
    const leader = controllers[statuses.indexOf(1)]!;
    const standby = controllers[statuses.indexOf(0)]!;
    const before = await leases.readNamespacedLease({ namespace: OPERATOR_NAMESPACE, name: LEASE });
    assert.equal(before.spec?.holderIdentity, await identityOf(leader));

    const early = ['p1', 'p2'];
    const late = ['q1', 'q2'];
    for (const name of early) await createAgent(ns, name, gates().spec());
    const running: AgentObj[] = [];
    for (const name of early) running.push(await waitForAgent(ns, name, (a) => a.status?.phase === 'Running', 'to be Running'));
    // Every Event of the first leader is written before it dies, so a repeat can only come from the second.
    for (const a of running) await waitForEvents(ns, a.metadata!.uid!, ['Scheduled', 'SessionStarted']);

    assert.ok((await reconciles(leader)) > 0);
    assert.equal(await reconciles(standby), 0, 'the standby reconciled Agents');

    const killedAt = performance.now();
    await stack().stopComponent(leader.name, 'kill');
    // Work that arrives while nobody leads: new Agents, and an agent that ends.
    for (const name of late) await createAgent(ns, name, gates().spec());
    await gates().open('p1');
    await waitFor(async () => (await leading(standby)) === 1, { timeoutMs: LEASE_DURATION_MS + 3 * RETRY_PERIOD_MS + 10_000, intervalMs: 100, what: `${standby.name} to lead` });
    const takeoverMs = performance.now() - killedAt;
    t.diagnostic(`takeover after the leader's SIGKILL: ${Math.round(takeoverMs)} ms`);
    // As client-go judges it: the standby sees the last renewal at its next poll (a retry period, up to
    // 2.2 x with jitter, after it), waits the lease duration from then, and takes the lease at the poll after.
    assert.ok(takeoverMs < LEASE_DURATION_MS + 2 * RETRY_PERIOD_MS * 2.2 + 1_000, `takeover took ${Math.round(takeoverMs)} ms`);
    const after = await leases.readNamespacedLease({ namespace: OPERATOR_NAMESPACE, name: LEASE });
    assert.equal(after.spec?.holderIdentity, await identityOf(standby));
    assert.equal(after.spec?.leaseTransitions, (before.spec?.leaseTransitions ?? 0) + 1);

    for (const name of late) running.push(await waitForAgent(ns, name, (a) => a.status?.phase === 'Running', 'to be Running'));
    for (const name of [...early, ...late]) await gates().open(name);
    for (const a of await gates().assertFinishedOnce(running, 'Completed')) {
      assert.equal(a.status?.reason, 'Exited');
      assert.deepEqual(await waitForEvents(ns, a.metadata!.uid!, ['CleanedUp']), EXITED_ONCE, `Events of ${a.metadata?.name}`);
      await assertNothingLeft(stack(), a);
    }

    // The killed controller comes back as a standby.
    await stack().startComponent(leader.name);
    assert.equal(await leading(leader), 0);
    assert.equal(await leading(standby), 1);
    assert.equal(await reconciles(leader), 0, 'the restarted controller reconciles although it does not lead');
  });
});
