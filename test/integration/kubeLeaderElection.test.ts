/**
 * Lease election between candidates on a real API server: one leader at a time, a fast handover when
 * the leader shuts down (release), a takeover after the lease duration when it crashes, and the
 * Lease's record (holder, transitions, MicroTime stamps).
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { CoordinationV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { closeConnections, shareConnections } from '../../src/kube/client.js';
import { LeaderElector, type LeaderElectionOptions } from '../../src/kube/leaderElection.js';
import { createTestNamespace, kubeConfig, waitFor } from '../support/cluster.js';

const logger = pino({ level: process.env.AO_TEST_LOG_LEVEL ?? 'warn' });
const TIMING = { leaseDurationMs: 4000, renewDeadlineMs: 3000, retryPeriodMs: 500 };
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

/** Candidates share a log of who leads when, to check there is never more than one leader. */
class Campaign {
  leaders = new Set<string>();
  overlaps: string[] = [];
  started = new Map<string, number>();
  stopped = new Map<string, number>();

  constructor(
    private readonly t: TestContext,
    private readonly namespace: string,
  ) {}

  candidate(identity: string, o: Partial<LeaderElectionOptions> = {}) {
    const kc = shareConnections(kubeConfig());
    const ac = new AbortController();
    const elector = new LeaderElector(kc, {
      namespace: this.namespace,
      name: 'controller',
      identity,
      logger,
      ...TIMING,
      onStartedLeading: () => {
        if (this.leaders.size > 0) this.overlaps.push(`${identity} started while ${[...this.leaders].join(',')} led`);
        this.leaders.add(identity);
        this.started.set(identity, Date.now());
      },
      onStoppedLeading: () => {
        this.leaders.delete(identity);
        this.stopped.set(identity, Date.now());
      },
      ...o,
    });
    const done = elector.run(ac.signal);
    this.t.after(async () => {
      ac.abort();
      await done;
      closeConnections(kc);
    });
    return { elector, stop: async () => (ac.abort(), await done) };
  }

  waitLeader(identity: string, timeoutMs = 15_000) {
    return waitFor(() => this.started.has(identity), { what: `${identity} to lead`, timeoutMs, intervalMs: 20 });
  }
}

async function readLease(namespace: string) {
  return kubeConfig().makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace, name: 'controller' });
}

test('a graceful shutdown hands the lease over at once; never two leaders', async (t) => {
  const ns = await createTestNamespace(t, 'kube-lease');
  const c = new Campaign(t, ns);
  const a = c.candidate('a');
  await c.waitLeader('a');
  const b = c.candidate('b');
  await new Promise((r) => setTimeout(r, TIMING.leaseDurationMs * 1.5));
  assert.equal(c.started.has('b'), false, 'b waits while a renews');
  assert.equal(b.elector.isLeader(), false);

  const leaseA = await readLease(ns);
  assert.equal(leaseA.spec?.holderIdentity, 'a');
  assert.equal(leaseA.spec?.leaseDurationSeconds, TIMING.leaseDurationMs / 1000);
  assert.match(String(leaseA.spec?.renewTime), MICRO_TIME);
  assert.match(String(leaseA.spec?.acquireTime), MICRO_TIME);
  const transitions = leaseA.spec?.leaseTransitions ?? 0;

  await a.stop();
  await c.waitLeader('b');
  const handover = c.started.get('b')! - c.stopped.get('a')!;
  t.diagnostic(`handover after a graceful shutdown: ${handover} ms`);
  assert.ok(handover < TIMING.leaseDurationMs, `handover took ${handover} ms, less than the lease duration`);
  const leaseB = await readLease(ns);
  assert.equal(leaseB.spec?.holderIdentity, 'b');
  assert.equal(leaseB.spec?.leaseTransitions, transitions + 1);
  assert.deepEqual(c.overlaps, []);
});

test('a crashed leader (no release) is replaced after the lease duration, not before', async (t) => {
  const ns = await createTestNamespace(t, 'kube-lease-crash');
  const c = new Campaign(t, ns);
  const a = c.candidate('a', { releaseOnCancel: false });
  await c.waitLeader('a');
  c.candidate('b');
  await new Promise((r) => setTimeout(r, TIMING.retryPeriodMs * 3));
  await a.stop(); // stops renewing, leaves the lease held
  assert.equal((await readLease(ns)).spec?.holderIdentity, 'a');
  await c.waitLeader('b', 20_000);
  const takeover = c.started.get('b')! - c.stopped.get('a')!;
  t.diagnostic(`takeover after a crash: ${takeover} ms (lease ${TIMING.leaseDurationMs} ms)`);
  // b's clock started at a's last renewal it saw: at most one retry period before a stopped.
  assert.ok(takeover >= TIMING.leaseDurationMs - 2 * TIMING.retryPeriodMs, `took over after ${takeover} ms`);
  // ...and at most two jittered retry periods (each up to 2.2 × retryPeriod) after the lease expired.
  assert.ok(takeover < TIMING.leaseDurationMs + 2 * 2.2 * TIMING.retryPeriodMs, `took over after ${takeover} ms`);
  assert.deepEqual(c.overlaps, []);
});

test('a leader whose lease is taken from under it stops leading', async (t) => {
  const ns = await createTestNamespace(t, 'kube-lease-steal');
  const c = new Campaign(t, ns);
  c.candidate('a');
  await c.waitLeader('a');
  const api = kubeConfig().makeApiClient(CoordinationV1Api);
  const lease = await api.readNamespacedLease({ namespace: ns, name: 'controller' });
  await api.replaceNamespacedLease({ namespace: ns, name: 'controller', body: { ...lease, spec: { ...lease.spec, holderIdentity: 'intruder' } } });
  await waitFor(() => c.stopped.has('a'), { what: 'a to stop leading', timeoutMs: TIMING.renewDeadlineMs + 2000, intervalMs: 20 });
  assert.equal((await readLease(ns)).spec?.holderIdentity, 'intruder', 'a did not write over the new holder');
});
