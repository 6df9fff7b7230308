import assert from 'node:assert/strict';
import { afterEach, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ParsedUrlQuery } from 'node:querystring';
import { NODE_LABEL } from '../../src/api/constants.js';
import { Informer, objectKey, splitKey, type InformerOptions } from '../../src/kube/informer.js';
import { AGENT_RESOURCE, type KubeObject } from '../../src/kube/resources.js';
import { nockServer, resetNock, silentLogger, testKubeConfig, until, WatchBody } from '../support/kubeFixtures.js';

const PATH = '/apis/orchestrator.dev/v1alpha1/agents';
const obj = (name: string, rv: string, ns = 'ns'): KubeObject => ({ metadata: { name, namespace: ns, resourceVersion: rv } });
const list = (rv: string, ...items: KubeObject[]) => ({ items, metadata: { resourceVersion: rv } });
const isWatch = (q: ParsedUrlQuery) => q.watch === 'true';
const watchFrom = (rv: string) => (q: ParsedUrlQuery) => isWatch(q) && q.resourceVersion === rv;
const isList = (q: ParsedUrlQuery) => !isWatch(q);

afterEach(resetNock);

/** An informer with short timings whose events are recorded as strings, stopped after the test. */
function start(t: TestContext, o: Partial<InformerOptions> = {}) {
  const events: string[] = [];
  const errors: string[] = [];
  const inf = new Informer<KubeObject>(testKubeConfig(), {
    resource: AGENT_RESOURCE,
    logger: silentLogger(),
    backoff: { baseMs: 20, maxMs: 40 },
    random: () => 0,
    inactivityTimeoutMs: 5000,
    onError: (_e, phase) => errors.push(phase),
    ...o,
  });
  inf
    .onAdd((x) => events.push(`add ${objectKey(x)}@${x.metadata?.resourceVersion}`))
    .onUpdate((a, b) => events.push(`update ${objectKey(b)}@${a.metadata?.resourceVersion}->${b.metadata?.resourceVersion}`))
    .onDelete((x) => events.push(`delete ${objectKey(x)}`));
  inf.start();
  t.after(() => inf.stop());
  return { inf, events, errors };
}

/** Watch bodies left open by a test are closed after it, or the process would not exit. */
function body(t: TestContext): WatchBody {
  const b = new WatchBody();
  t.after(() => b.end());
  return b;
}

describe('objectKey / splitKey', () => {
  const cases = [
    { o: obj('a', '1', 'ns'), key: 'ns/a', split: { namespace: 'ns', name: 'a' } },
    { o: { metadata: { name: 'node-1' } }, key: 'node-1', split: { name: 'node-1' } },
  ];
  for (const c of cases) {
    it(c.key, () => {
      assert.equal(objectKey(c.o), c.key);
      assert.deepEqual(splitKey(c.key), c.split);
    });
  }
});

describe('Informer', () => {
  it('lists, then watches from the list resourceVersion with bookmarks, a server timeout and the selectors', async (t) => {
    const queries: ParsedUrlQuery[] = [];
    const w = body(t);
    nockServer()
      .get(PATH)
      .query((q) => isList(q) && q.labelSelector === `${NODE_LABEL}=n1` && queries.push(q) > 0)
      .reply(200, list('10', obj('a', '5')))
      .get(PATH)
      .query((q) => watchFrom('10')(q) && queries.push(q) > 0)
      .reply(200, () => w.send('ADDED', obj('b', '11')).send('MODIFIED', obj('a', '12')).send('DELETED', obj('b', '13')).stream);
    const { inf, events } = start(t, { labelSelector: `${NODE_LABEL}=n1`, watchTimeoutSeconds: { min: 300, max: 600 } });
    await inf.waitForSync(2000);
    assert.ok(inf.hasSynced());
    await until(() => events.length === 4, 'watch events');
    assert.deepEqual(events, ['add ns/a@5', 'add ns/b@11', 'update ns/a@5->12', 'delete ns/b']);
    assert.deepEqual(inf.keys(), ['ns/a']);
    assert.equal(inf.get('ns/a')?.metadata?.resourceVersion, '12');
    assert.equal(inf.lastResourceVersion(), '13');
    const watch = queries[1]!;
    assert.equal(watch.allowWatchBookmarks, 'true');
    assert.equal(watch.labelSelector, `${NODE_LABEL}=n1`);
    const timeout = Number(watch.timeoutSeconds);
    assert.ok(timeout >= 300 && timeout <= 600, `timeoutSeconds ${timeout}`);
  });

  it('a watch ERROR event with code 410 relists and reports objects that vanished as deletes', async (t) => {
    const w2 = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10', obj('a', '1'), obj('b', '2'), obj('c', '3')))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => {
        const w = body(t);
        w.send('ADDED', obj('d', '11')).send('BOOKMARK', { metadata: { resourceVersion: '12' } });
        w.send('ERROR', { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 12 (20)' });
        return w.stream;
      })
      // b deleted and d deleted while we were away, c changed, a unchanged, e new.
      .get(PATH)
      .query(isList)
      .reply(200, list('20', obj('a', '1'), obj('c', '15'), obj('e', '16')))
      .get(PATH)
      .query(watchFrom('20'))
      .reply(200, () => w2.stream);
    const { inf, events, errors } = start(t);
    await until(() => events.length === 8, 'relist events');
    assert.deepEqual(events, ['add ns/a@1', 'add ns/b@2', 'add ns/c@3', 'add ns/d@11', 'delete ns/b', 'delete ns/d', 'update ns/c@3->15', 'add ns/e@16']);
    assert.deepEqual(inf.keys().sort(), ['ns/a', 'ns/c', 'ns/e']);
    assert.deepEqual(errors, [], '410 is not a failure: no backoff');
  });

  it('an HTTP 410 on the watch request relists (after a backoff, as it came straight after a list)', async (t) => {
    const w = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10', obj('a', '1')))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(410, { kind: 'Status', code: 410, reason: 'Gone' })
      .get(PATH)
      .query(isList)
      .reply(200, list('30'))
      .get(PATH)
      .query(watchFrom('30'))
      .reply(200, () => w.send('ADDED', obj('z', '31')).stream);
    const { events, errors } = start(t);
    await until(() => events.length === 3, 'relist and watch');
    assert.deepEqual(events, ['add ns/a@1', 'delete ns/a', 'add ns/z@31']);
    assert.deepEqual(errors, ['watch']);
  });

  it('a silent watch is aborted by the watchdog and re-watched from the last resourceVersion', async (t) => {
    const w1 = body(t);
    const w2 = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10'))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => w1.send('ADDED', obj('a', '11')).stream) // then silence
      .get(PATH)
      .query(watchFrom('11'))
      .reply(200, () => w2.send('MODIFIED', obj('a', '12')).stream);
    const started = Date.now();
    const { events, errors } = start(t, { inactivityTimeoutMs: 150 });
    await until(() => events.length === 2, 're-watch');
    assert.deepEqual(events, ['add ns/a@11', 'update ns/a@11->12']);
    assert.ok(Date.now() - started >= 150, 'not before the inactivity timeout');
    assert.deepEqual(errors, [], 'a stall is not a failure');
  });

  it('bookmarks keep a quiet watch alive and move the resourceVersion', async (t) => {
    const w = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10'))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => w.stream);
    const { inf, errors } = start(t, { inactivityTimeoutMs: 200 });
    await inf.waitForSync(2000);
    for (let i = 1; i <= 5; i++) {
      await sleep(100);
      w.send('BOOKMARK', { metadata: { resourceVersion: String(10 + i) } });
    }
    await until(() => inf.lastResourceVersion() === '15', 'bookmarks');
    assert.deepEqual(errors, []);
    // Had the watchdog fired, the re-watch from 1x would have found no interceptor and failed.
  });

  it('errors back off and retry: list 500, watch 500, broken watch line, then it carries on', async (t) => {
    const w = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(500, { kind: 'Status', code: 500, message: 'etcd down' })
      .get(PATH)
      .query(isList)
      .reply(200, list('10'))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(500, { kind: 'Status', code: 500, message: 'etcd down' })
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, 'not json\n')
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => w.send('ADDED', obj('a', '11')).stream);
    const started = Date.now();
    const { events, errors } = start(t, { backoff: { baseMs: 30, maxMs: 1000 } });
    await until(() => events.length === 1, 'recovery', 5000);
    assert.deepEqual(errors, ['list', 'watch', 'watch']);
    // Backoff 30, 60, 120 ms with random() = 0 (no jitter).
    assert.ok(Date.now() - started >= 210, `took ${Date.now() - started} ms`);
    assert.deepEqual(events, ['add ns/a@11']);
  });

  it('a watch the server ends normally is renewed at once from the last resourceVersion', async (t) => {
    const w2 = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10'))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => {
        const w = new WatchBody().send('ADDED', obj('a', '11'));
        w.end();
        return w.stream;
      })
      .get(PATH)
      .query(watchFrom('11'))
      .reply(200, () => w2.send('DELETED', obj('a', '12')).stream);
    const { events, errors } = start(t);
    await until(() => events.length === 2, 'renewed watch');
    assert.deepEqual(events, ['add ns/a@11', 'delete ns/a']);
    assert.deepEqual(errors, []);
  });

  it('a watch closed at once without events counts as a failure (no hot loop)', async (t) => {
    const w = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10'))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, '')
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => w.send('ADDED', obj('a', '11')).stream);
    const { events, errors } = start(t);
    await until(() => events.length === 1, 'second watch');
    assert.deepEqual(errors, ['watch']);
  });

  it('resync re-emits cached objects as updates; a throwing handler does not stop the informer', async (t) => {
    const w = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10', obj('a', '1')))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => w.stream);
    const { inf, events } = start(t, { resyncPeriodMs: 50 });
    inf.onAdd(() => {
      throw new Error('handler bug');
    });
    await until(() => events.filter((e) => e === 'update ns/a@1->1').length >= 2, 'resyncs');
    w.send('ADDED', obj('b', '11'));
    await until(() => inf.get('ns/b') !== undefined, 'events after a throwing handler');
  });

  it('stop() aborts the watch in flight and resolves at once; waitForSync then rejects', async (t) => {
    const w = body(t);
    nockServer()
      .get(PATH)
      .query(isList)
      .reply(200, list('10'))
      .get(PATH)
      .query(watchFrom('10'))
      .reply(200, () => w.stream);
    const { inf } = start(t);
    await inf.waitForSync(2000);
    await sleep(20);
    const t0 = Date.now();
    await inf.stop();
    assert.ok(Date.now() - t0 < 500);
    const never = new Informer(testKubeConfig(), { resource: AGENT_RESOURCE, logger: silentLogger() });
    await never.stop();
    await assert.rejects(never.waitForSync(100), /stopped/);
  });

  it('waitForSync times out while the list keeps failing', async (t) => {
    nockServer().get(PATH).query(true).times(100).reply(503, { message: 'unavailable' });
    const { inf } = start(t);
    await assert.rejects(inf.waitForSync(100), /not synced/);
    assert.equal(inf.hasSynced(), false);
    // Without a limit, only the caller's signal ends the wait.
    const ac = new AbortController();
    const unbounded = inf.waitForSync(Infinity, ac.signal);
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(unbounded, /waiting for sync aborted/);
  });
});
