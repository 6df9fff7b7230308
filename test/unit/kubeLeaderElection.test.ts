import assert from 'node:assert/strict';
import { afterEach, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { V1Lease } from '@kubernetes/client-node';
import { LeaderElector, type LeaderElectionOptions } from '../../src/kube/leaderElection.js';
import { nockServer, resetNock, silentLogger, testKubeConfig, until } from '../support/kubeFixtures.js';

const LEASES = '/apis/coordination.k8s.io/v1/namespaces/ns/leases';
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
const TIMING = { leaseDurationMs: 1000, renewDeadlineMs: 500, retryPeriodMs: 100 };

afterEach(resetNock);

/**
 * The Lease endpoints over nock with resourceVersion checks, so the elector's HTTP edges (create when
 * missing, update at the read resourceVersion, 409s) are exercised. The real API server is in the
 * integration test.
 */
function fakeLeases() {
  const state = { lease: undefined as (V1Lease & { metadata: { resourceVersion: string } }) | undefined, rv: 0, failing: false, writes: [] as V1Lease[] };
  const parse = (b: unknown) => (typeof b === 'string' ? JSON.parse(b) : b) as V1Lease;
  const store = (b: V1Lease) => {
    state.lease = { ...b, metadata: { ...b.metadata, name: 'lock', namespace: 'ns', resourceVersion: String(++state.rv) } };
    state.writes.push(state.lease);
    return state.lease;
  };
  nockServer()
    .persist()
    .get(`${LEASES}/lock`)
    .reply(() => (state.failing ? [500, { message: 'down' }] : state.lease ? [200, state.lease] : [404, { code: 404, reason: 'NotFound' }]))
    .post(LEASES)
    .reply((_u, body) => (state.failing ? [500, {}] : state.lease ? [409, { code: 409, reason: 'AlreadyExists' }] : [201, store(parse(body))]))
    .put(`${LEASES}/lock`)
    .reply((_u, body) => {
      if (state.failing) return [500, {}];
      const b = parse(body);
      if (b.metadata?.resourceVersion !== state.lease?.metadata.resourceVersion) return [409, { code: 409, reason: 'Conflict' }];
      return [200, store(b)];
    });
  return state;
}

function elector(t: TestContext, identity: string, o: Partial<LeaderElectionOptions> = {}) {
  const log: string[] = [];
  const ac = new AbortController();
  let leadSignal: AbortSignal | undefined;
  const e = new LeaderElector(testKubeConfig(), {
    namespace: 'ns',
    name: 'lock',
    identity,
    logger: silentLogger(),
    ...TIMING,
    onStartedLeading: (signal) => {
      leadSignal = signal;
      log.push('started');
    },
    onStoppedLeading: () => log.push('stopped'),
    ...o,
  });
  const done = e.run(ac.signal).then(() => log.push('returned'));
  t.after(async () => {
    ac.abort();
    await done;
  });
  return { e, log, ac, done, leadSignal: () => leadSignal };
}

describe('LeaderElector', () => {
  const invalid: { name: string; o: Partial<LeaderElectionOptions>; error: RegExp }[] = [
    { name: 'renew deadline not below lease duration', o: { leaseDurationMs: 10_000, renewDeadlineMs: 10_000 }, error: /leaseDurationMs/ },
    { name: 'retry period too close to the renew deadline', o: { renewDeadlineMs: 2000, retryPeriodMs: 2000 }, error: /retryPeriodMs/ },
  ];
  for (const c of invalid) {
    it(`rejects options: ${c.name}`, () => {
      assert.throws(
        () =>
          new LeaderElector(testKubeConfig(), {
            namespace: 'ns',
            name: 'lock',
            identity: 'me',
            logger: silentLogger(),
            onStartedLeading: () => undefined,
            onStoppedLeading: () => undefined,
            ...c.o,
          }),
        c.error,
      );
    });
  }

  it('creates a missing Lease, renews it, and releases it on shutdown', async (t) => {
    const leases = fakeLeases();
    const { e, log, ac, done, leadSignal } = elector(t, 'me');
    await until(() => log.includes('started'), 'leadership');
    assert.ok(e.isLeader());
    const created = leases.writes[0]!.spec!;
    assert.equal(created.holderIdentity, 'me');
    assert.equal(created.leaseDurationSeconds, 1);
    assert.equal(created.leaseTransitions, 0);
    assert.match(String(created.acquireTime), MICRO_TIME);
    assert.match(String(created.renewTime), MICRO_TIME);
    await until(() => leases.writes.length >= 3, 'renewals');
    const renewed = leases.lease!.spec!;
    assert.equal(renewed.acquireTime, created.acquireTime, 'acquireTime kept while renewing');
    assert.ok(String(renewed.renewTime) > String(created.renewTime), 'renewTime moves');
    assert.equal(renewed.leaseTransitions, 0);
    ac.abort();
    await done;
    assert.deepEqual(log, ['started', 'stopped', 'returned']);
    assert.equal(leadSignal()?.aborted, true);
    assert.equal(e.isLeader(), false);
    assert.equal(leases.lease!.spec!.holderIdentity, '', 'released');
    assert.equal(leases.lease!.spec!.leaseDurationSeconds, 1);
  });

  it('stops leading when renewals fail for the renew deadline', async (t) => {
    const leases = fakeLeases();
    const { log, done } = elector(t, 'me');
    await until(() => log.includes('started'), 'leadership');
    leases.failing = true;
    const failedAt = Date.now();
    await done;
    const took = Date.now() - failedAt;
    assert.deepEqual(log, ['started', 'stopped', 'returned']);
    assert.ok(took <= TIMING.renewDeadlineMs + 2 * TIMING.retryPeriodMs, `lost after ${took} ms`);
    assert.ok(took < TIMING.leaseDurationMs, 'before anyone else may take over');
  });

  it('stops leading at once when another holder took the Lease', async (t) => {
    const leases = fakeLeases();
    const { log, done } = elector(t, 'me');
    await until(() => log.includes('started'), 'leadership');
    const l = leases.lease!;
    leases.lease = { ...l, spec: { ...l.spec, holderIdentity: 'thief' }, metadata: { ...l.metadata, resourceVersion: String(++leases.rv) } };
    const t0 = Date.now();
    await done;
    assert.ok(Date.now() - t0 < TIMING.renewDeadlineMs, 'without waiting for the deadline');
    assert.deepEqual(log, ['started', 'stopped', 'returned']);
    assert.equal(leases.lease.spec?.holderIdentity, 'thief', 'no release of a lease we do not hold');
  });

  it('waits for a held Lease to go unrenewed for its duration, then takes it (one more transition)', async (t) => {
    const leases = fakeLeases();
    // No release: the first leader's end looks like a crash.
    const first = elector(t, 'first', { releaseOnCancel: false });
    await until(() => first.log.includes('started'), 'first leads');
    const second = elector(t, 'second');
    await sleep(TIMING.leaseDurationMs * 1.5);
    assert.deepEqual(second.log, [], 'no takeover while the holder renews');
    first.ac.abort();
    await first.done;
    assert.equal(leases.lease!.spec!.holderIdentity, 'first');
    const t0 = Date.now();
    await until(() => second.log.includes('started'), 'takeover', 5000);
    const waited = Date.now() - t0;
    // The clock started at the last renewal it saw, up to one retry period before the first one stopped.
    assert.ok(waited >= TIMING.leaseDurationMs - 2 * TIMING.retryPeriodMs, `took over after ${waited} ms`);
    assert.equal(leases.lease!.spec!.holderIdentity, 'second');
    assert.equal(leases.lease!.spec!.leaseTransitions, 1);
  });

  it('takes a released Lease without waiting', async (t) => {
    const leases = fakeLeases();
    const first = elector(t, 'first');
    await until(() => first.log.includes('started'), 'first leads');
    const second = elector(t, 'second');
    await sleep(300);
    first.ac.abort();
    await first.done;
    assert.equal(leases.lease!.spec!.holderIdentity, '');
    const t0 = Date.now();
    await until(() => second.log.includes('started'), 'takeover');
    assert.ok(Date.now() - t0 < TIMING.leaseDurationMs, 'before the lease would have expired');
  });
});
