import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { PatchStrategy } from '@kubernetes/client-node';
import { EventRecorder, truncateUtf8, type EventRecorderOptions, type EventSubject } from '../../src/kube/events.js';
import { nockServer, resetNock, silentLogger, testKubeConfig } from '../support/kubeFixtures.js';

const EVENTS = '/apis/events.k8s.io/v1/namespaces/ns/events';
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
const agent: EventSubject = {
  apiVersion: 'orchestrator.dev/v1alpha1',
  kind: 'Agent',
  metadata: { name: 'a', namespace: 'ns', uid: 'u1', resourceVersion: '9' },
};

afterEach(resetNock);

function recorder(o: Partial<EventRecorderOptions> = {}) {
  return new EventRecorder(testKubeConfig(), {
    logger: silentLogger(),
    reportingController: 'orchestrator.dev/controller',
    reportingInstance: 'ctrl-0',
    ...o,
  });
}

type Body = Record<string, unknown> & { metadata: { name: string; namespace: string }; series?: { count: number; lastObservedTime: string } };

describe('EventRecorder', () => {
  it('creates an events.k8s.io/v1 Event about the object', async () => {
    const bodies: Body[] = [];
    const scope = nockServer()
      .post(EVENTS, (b: Body) => bodies.push(b) > 0)
      .reply(201, {});
    const r = recorder();
    r.normal(agent, 'Scheduled', 'bound to node n1');
    await r.flush();
    scope.done();
    const b = bodies[0]!;
    assert.match(b.metadata.name, /^a\.[0-9a-f]+$/);
    assert.equal(b.metadata.namespace, 'ns');
    assert.match(String(b.eventTime), MICRO_TIME);
    assert.deepEqual(
      { type: b.type, reason: b.reason, action: b.action, note: b.note, regarding: b.regarding, rc: b.reportingController, ri: b.reportingInstance },
      {
        type: 'Normal',
        reason: 'Scheduled',
        action: 'Scheduled',
        note: 'bound to node n1',
        regarding: { apiVersion: 'orchestrator.dev/v1alpha1', kind: 'Agent', name: 'a', namespace: 'ns', uid: 'u1', resourceVersion: '9' },
        rc: 'orchestrator.dev/controller',
        ri: 'ctrl-0',
      },
    );
    assert.equal(b.series, undefined);
  });

  it('repeats join a series: one create, then merge patches of series.count, coalesced while a write is in flight', async () => {
    const posts: Body[] = [];
    const patches: { body: Body; contentType: string; path: string }[] = [];
    const scope = nockServer()
      .post(EVENTS, (b: Body) => posts.push(b) > 0)
      .delay(50)
      .reply(201, {})
      .patch(/\/apis\/events\.k8s\.io\/v1\/namespaces\/ns\/events\/a\..*/)
      .times(2)
      .reply(function (path, body) {
        patches.push({ body: (typeof body === 'string' ? JSON.parse(body) : body) as Body, contentType: String(this.req.headers['content-type']), path });
        return [200, {}];
      });
    const r = recorder();
    for (let i = 0; i < 5; i++) r.warning(agent, 'LaunchFailed', 'tmux: no server');
    await r.flush();
    r.warning(agent, 'LaunchFailed', 'tmux: no server');
    await r.flush();
    scope.done();
    assert.equal(posts.length, 1);
    assert.deepEqual(
      patches.map((p) => p.body.series?.count),
      [5, 6],
    );
    for (const p of patches) {
      assert.equal(p.contentType, PatchStrategy.MergePatch);
      assert.equal(p.path, `${EVENTS}/${posts[0]!.metadata.name}`);
      assert.match(String(p.body.series?.lastObservedTime), MICRO_TIME);
    }
  });

  const distinct: { name: string; second: (r: EventRecorder) => void; now?: number[] }[] = [
    { name: 'another note', second: (r) => r.warning(agent, 'LaunchFailed', 'other') },
    { name: 'another reason', second: (r) => r.warning(agent, 'Other', 'tmux: no server') },
    { name: 'another type', second: (r) => r.normal(agent, 'LaunchFailed', 'tmux: no server') },
    { name: 'another object', second: (r) => r.warning({ ...agent, metadata: { ...agent.metadata, uid: 'u2', name: 'b' } }, 'LaunchFailed', 'tmux: no server') },
    { name: 'after the window', second: (r) => r.warning(agent, 'LaunchFailed', 'tmux: no server'), now: [0, 10 * 60_000 + 1] },
  ];
  for (const c of distinct) {
    it(`a new Event for ${c.name}`, async () => {
      let posts = 0;
      const scope = nockServer()
        .post(/\/apis\/events\.k8s\.io\/v1\/namespaces\/ns\/events/)
        .times(2)
        .reply(() => {
          posts++;
          return [201, {}];
        });
      const times = [...(c.now ?? [])];
      const r = recorder(c.now ? { now: () => times.shift() ?? 0 } : {});
      r.warning(agent, 'LaunchFailed', 'tmux: no server');
      await r.flush();
      c.second(r);
      await r.flush();
      scope.done();
      assert.equal(posts, 2);
    });
  }

  it('never throws: server errors and timeouts are logged and flush still returns', async () => {
    const scope = nockServer().post(EVENTS).reply(500, { message: 'boom' }).post(EVENTS).delay(1000).reply(201, {});
    const r = recorder({ timeoutMs: 50 });
    assert.doesNotThrow(() => r.normal(agent, 'A', 'x'));
    assert.doesNotThrow(() => r.normal(agent, 'B', 'y'));
    const started = Date.now();
    await r.flush(2000);
    assert.ok(Date.now() - started < 500, 'the slow write was abandoned at its timeout');
    scope.done();
  });

  it('an expired Event (404 on the series patch) starts a new one', async () => {
    const names: string[] = [];
    const scope = nockServer()
      .post(EVENTS, (b: Body) => names.push(b.metadata.name) > 0)
      .reply(201, {})
      .patch(/events\/a\./)
      .reply(404, { code: 404, reason: 'NotFound' })
      .post(EVENTS, (b: Body) => names.push(b.metadata.name) > 0 && b.series?.count === 2)
      .reply(201, {});
    const r = recorder();
    r.normal(agent, 'A', 'x');
    await r.flush();
    r.normal(agent, 'A', 'x');
    await r.flush();
    scope.done();
    assert.equal(names.length, 2);
    assert.notEqual(names[0], names[1]);
  });

  it('Events about cluster-scoped objects go to the default namespace', async () => {
    const scope = nockServer().post('/apis/events.k8s.io/v1/namespaces/default/events').reply(201, {});
    const r = recorder();
    r.normal({ apiVersion: 'orchestrator.dev/v1alpha1', kind: 'AgentNode', metadata: { name: 'n1', uid: 'u' } }, 'Registered', 'ready');
    await r.flush();
    scope.done();
  });

  it('a note over 1 KiB is cut to fit', async () => {
    let note = '';
    const scope = nockServer()
      .post(EVENTS, (b: Body) => (note = String(b.note)).length > 0)
      .reply(201, {});
    const r = recorder();
    r.warning(agent, 'Long', 'é'.repeat(2000));
    await r.flush();
    scope.done();
    assert.equal(Buffer.byteLength(note), 1024);
  });
});

describe('truncateUtf8', () => {
  const cases: { s: string; max: number; out: string }[] = [
    { s: 'abc', max: 10, out: 'abc' },
    { s: 'abcdef', max: 3, out: 'abc' },
    { s: 'aé', max: 2, out: 'a' }, // é is 2 bytes: not split
    { s: '€€', max: 4, out: '€' }, // € is 3 bytes
    { s: '', max: 0, out: '' },
  ];
  for (const c of cases) it(`${JSON.stringify(c.s)} to ${c.max} bytes`, () => assert.equal(truncateUtf8(c.s, c.max), c.out));
});
