import assert from 'node:assert/strict';
import type { RequestOptions } from 'node:https';
import { afterEach, describe, it } from 'node:test';
import { ApiException, PatchStrategy, RequestContext, HttpMethod } from '@kubernetes/client-node';
import { FINALIZER, NODE_LABEL } from '../../src/api/constants.js';
import { sharedAgents } from '../../src/kube/client.js';
import { describeError, HttpError, isConflict, isGone, isNotFound, statusCode, StaleObjectError } from '../../src/kube/errors.js';
import { AGENT_NODE_RESOURCE, AGENT_RESOURCE, agentClient, agentNodeClient, finalizerAddOps, finalizerRemoveOps, resourcePath, type KubeObject } from '../../src/kube/resources.js';
import { nockServer, resetNock, testKubeConfig } from '../support/kubeFixtures.js';

const AGENTS = '/apis/orchestrator.dev/v1alpha1/namespaces/ns/agents';
const agent = (meta: Partial<NonNullable<KubeObject['metadata']>> = {}) => ({
  metadata: { name: 'a', namespace: 'ns', uid: 'u1', resourceVersion: '7', ...meta },
  spec: { prompt: 'p', command: ['x'] },
});
const status = (code: number, reason: string, message: string, details: object = {}) => ({
  kind: 'Status',
  apiVersion: 'v1',
  status: 'Failure',
  code,
  reason,
  message,
  details,
});
/** What the API server answers when a JSON patch does not apply (a failed `test`). */
const FAILED_TEST = status(422, 'Invalid', 'the server rejected our request due to an error in our request');

afterEach(resetNock);

describe('error helpers', () => {
  const cases: { name: string; err: unknown; code: number | undefined; conflict: boolean; notFound: boolean; gone: boolean }[] = [
    { name: 'ApiException 409', err: new ApiException(409, 'x', {}, {}), code: 409, conflict: true, notFound: false, gone: false },
    { name: 'ApiException 404', err: new ApiException(404, 'x', {}, {}), code: 404, conflict: false, notFound: true, gone: false },
    { name: 'HttpError 410', err: new HttpError(410, {}), code: 410, conflict: false, notFound: false, gone: true },
    { name: 'StaleObjectError', err: new StaleObjectError('changed'), code: 409, conflict: true, notFound: false, gone: false },
    { name: 'watch-style error with statusCode', err: Object.assign(new Error('Gone'), { statusCode: 410 }), code: 410, conflict: false, notFound: false, gone: true },
    { name: 'network error (string code)', err: Object.assign(new Error('reset'), { code: 'ECONNRESET' }), code: undefined, conflict: false, notFound: false, gone: false },
    { name: 'not an error', err: 'boom', code: undefined, conflict: false, notFound: false, gone: false },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(statusCode(c.err), c.code);
      assert.equal(isConflict(c.err), c.conflict);
      assert.equal(isNotFound(c.err), c.notFound);
      assert.equal(isGone(c.err), c.gone);
    });
  }
  it('describeError is short: status code and the server message, not the headers', () => {
    const err = new ApiException(409, 'Conflict', JSON.stringify(status(409, 'Conflict', 'the object has been modified')), { 'audit-id': 'x' });
    assert.equal(describeError(err), 'HTTP 409: the object has been modified');
  });
});

describe('resourcePath', () => {
  const cases: { args: Parameters<typeof resourcePath>; path: string }[] = [
    { args: [AGENT_RESOURCE, 'ns', 'a'], path: AGENTS + '/a' },
    { args: [AGENT_RESOURCE], path: '/apis/orchestrator.dev/v1alpha1/agents' },
    { args: [AGENT_NODE_RESOURCE, 'ignored', 'n1'], path: '/apis/orchestrator.dev/v1alpha1/agentnodes/n1' },
    { args: [{ group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true }, 'ns'], path: '/api/v1/namespaces/ns/configmaps' },
  ];
  for (const c of cases) it(c.path, () => assert.equal(resourcePath(...c.args), c.path));
});

describe('finalizer patches', () => {
  it('adding to an existing list tests the list and appends', () => {
    assert.deepEqual(finalizerAddOps(agent({ finalizers: ['other'] }), FINALIZER), [
      { op: 'test', path: '/metadata/finalizers', value: ['other'] },
      { op: 'add', path: '/metadata/finalizers/-', value: FINALIZER },
    ]);
  });
  it('adding the first finalizer tests the resourceVersion', () => {
    assert.deepEqual(finalizerAddOps(agent(), FINALIZER), [
      { op: 'test', path: '/metadata/resourceVersion', value: '7' },
      { op: 'add', path: '/metadata/finalizers', value: [FINALIZER] },
    ]);
  });
  it('adding needs an object read from the server', () => {
    assert.throws(() => finalizerAddOps({ metadata: { name: 'a' } }, FINALIZER), /resourceVersion/);
  });
  it('removing tests the list and removes by index', () => {
    assert.deepEqual(finalizerRemoveOps(agent({ finalizers: ['x', FINALIZER, 'y'] }), FINALIZER), [
      { op: 'test', path: '/metadata/finalizers', value: ['x', FINALIZER, 'y'] },
      { op: 'remove', path: '/metadata/finalizers/1' },
    ]);
  });
  it('removing an absent finalizer is no patch', () => {
    assert.equal(finalizerRemoveOps(agent({ finalizers: ['x'] }), FINALIZER), undefined);
    assert.equal(finalizerRemoveOps(agent(), FINALIZER), undefined);
  });
});

describe('ResourceClient over HTTP', () => {
  it('patchStatus sends a merge patch of {status} to /status, with the token', async () => {
    let contentType: string | undefined;
    let auth: string | undefined;
    const scope = nockServer()
      .patch(`${AGENTS}/a/status`, { status: { phase: 'Running', message: null } })
      .reply(function () {
        contentType = String(this.req.headers['content-type']);
        auth = String(this.req.headers.authorization);
        return [200, agent()];
      });
    await agentClient(testKubeConfig()).patchStatus({ name: 'a', namespace: 'ns' }, { phase: 'Running', message: null });
    scope.done();
    assert.equal(contentType, PatchStrategy.MergePatch);
    assert.equal(auth, 'Bearer secret-token');
  });

  it('a resourceVersion precondition goes into the merge patch; 409 surfaces as a conflict', async () => {
    const scope = nockServer()
      .patch(`${AGENTS}/a`, { metadata: { labels: { [NODE_LABEL]: 'n1' }, resourceVersion: '7' } })
      .reply(409, status(409, 'Conflict', 'the object has been modified'));
    const err = await agentClient(testKubeConfig())
      .patchMeta({ name: 'a', namespace: 'ns' }, { labels: { [NODE_LABEL]: 'n1' } }, { resourceVersion: '7' })
      .catch((e: unknown) => e);
    scope.done();
    assert.ok(isConflict(err));
  });

  it('cluster-scoped patches go to the cluster path', async () => {
    const scope = nockServer()
      .patch('/apis/orchestrator.dev/v1alpha1/agentnodes/n1/status', { status: { running: 2 } })
      .reply(200, {});
    await agentNodeClient(testKubeConfig()).patchStatus({ name: 'n1' }, { running: 2 });
    scope.done();
  });

  it('addFinalizer sends the guarded JSON patch', async () => {
    let contentType: string | undefined;
    const scope = nockServer()
      .patch(`${AGENTS}/a`, [
        { op: 'test', path: '/metadata/resourceVersion', value: '7' },
        { op: 'add', path: '/metadata/finalizers', value: [FINALIZER] },
      ])
      .reply(function () {
        contentType = String(this.req.headers['content-type']);
        return [200, agent({ finalizers: [FINALIZER], resourceVersion: '8' })];
      });
    const updated = await agentClient(testKubeConfig()).addFinalizer(agent(), FINALIZER);
    scope.done();
    assert.equal(contentType, PatchStrategy.JsonPatch);
    assert.deepEqual(updated.metadata?.finalizers, [FINALIZER]);
  });

  it('addFinalizer with the finalizer already there makes no request', async () => {
    nockServer(); // any request would fail: nothing is intercepted and the network is disabled
    const a = agent({ finalizers: [FINALIZER] });
    assert.equal(await agentClient(testKubeConfig()).addFinalizer(a, FINALIZER), a);
  });

  const staleCases: { name: string; code: number; body: object; stale: boolean }[] = [
    { name: 'a failed test (bare 422) means stale', code: 422, body: FAILED_TEST, stale: true },
    { name: 'a 409 means stale', code: 409, body: status(409, 'Conflict', 'modified'), stale: true },
    {
      name: 'a validation 422 (with causes) is not stale',
      code: 422,
      body: status(422, 'Invalid', 'Agent.orchestrator.dev "a" is invalid: metadata.finalizers: Forbidden', {
        causes: [{ field: 'metadata.finalizers', reason: 'FieldValueForbidden' }],
      }),
      stale: false,
    },
  ];
  for (const c of staleCases) {
    it(`removeFinalizer: ${c.name}`, async () => {
      const scope = nockServer()
        .patch(`${AGENTS}/a`, [
          { op: 'test', path: '/metadata/finalizers', value: [FINALIZER] },
          { op: 'remove', path: '/metadata/finalizers/0' },
        ])
        .reply(c.code, c.body);
      const err = await agentClient(testKubeConfig())
        .removeFinalizer(agent({ finalizers: [FINALIZER] }), FINALIZER)
        .catch((e: unknown) => e);
      scope.done();
      assert.equal(err instanceof StaleObjectError, c.stale);
      assert.equal(isConflict(err), c.stale);
      assert.equal(statusCode(err), c.stale ? 409 : c.code);
    });
  }

  it('delete sends uid preconditions; 404 is "already gone"', async () => {
    const scope = nockServer()
      .delete(`${AGENTS}/a`, { preconditions: { uid: 'u1' } })
      .reply(200, {})
      .delete(`${AGENTS}/b`)
      .reply(404, status(404, 'NotFound', 'not found'));
    const client = agentClient(testKubeConfig());
    assert.equal(await client.delete({ name: 'a', namespace: 'ns' }, { uid: 'u1' }), true);
    assert.equal(await client.delete({ name: 'b', namespace: 'ns' }), false);
    scope.done();
  });

  it('list passes selectors and returns items, resourceVersion and continue', async () => {
    const scope = nockServer()
      .get(AGENTS)
      .query({ labelSelector: `${NODE_LABEL}=n1`, limit: '2' })
      .reply(200, { items: [agent()], metadata: { resourceVersion: '42', continue: 'next' } });
    const l = await agentClient(testKubeConfig()).list({ namespace: 'ns', labelSelector: `${NODE_LABEL}=n1`, limit: 2 });
    scope.done();
    assert.deepEqual(l, { items: [agent()], resourceVersion: '42', continue: 'next' });
  });

  it('find: undefined on 404', async () => {
    const scope = nockServer()
      .get(`${AGENTS}/gone`)
      .reply(404, status(404, 'NotFound', 'x'));
    assert.equal(await agentClient(testKubeConfig()).find({ name: 'gone', namespace: 'ns' }), undefined);
    scope.done();
  });

  it('calls time out', async () => {
    nockServer().get(`${AGENTS}/slow`).delay(1000).reply(200, agent());
    const started = Date.now();
    const err = await agentClient(testKubeConfig(), 100)
      .get({ name: 'slow', namespace: 'ns' })
      .catch((e: unknown) => e);
    assert.ok(err instanceof Error, 'rejected');
    assert.ok(Date.now() - started < 800, 'well before the reply');
  });
});

describe('shareConnections', () => {
  it('every request of a KubeConfig uses one keep-alive agent (client-node #2893)', async () => {
    const kc = testKubeConfig();
    const a: RequestOptions = {};
    const b: RequestOptions = {};
    await kc.applyToHTTPSOptions(a); // the watch/raw path
    await kc.applyToHTTPSOptions(b);
    const ctx = new RequestContext(`${kc.getCurrentCluster()?.server}/api`, HttpMethod.GET);
    await kc.applySecurityAuthentication(ctx); // the generated clients' path
    assert.ok(a.agent, 'an agent is set');
    assert.equal(a.agent, b.agent);
    assert.equal(ctx.getAgent(), a.agent);
    assert.equal(sharedAgents(kc).length, 1);
    assert.equal((a.agent as unknown as { keepAlive: boolean }).keepAlive, true);
  });

  it('new credentials get a new agent', async () => {
    const kc = testKubeConfig();
    const a: RequestOptions = {};
    await kc.applyToHTTPSOptions(a);
    (kc.getCurrentCluster() as { tlsServerName?: string }).tlsServerName = 'other.test';
    const b: RequestOptions = {};
    await kc.applyToHTTPSOptions(b);
    assert.notEqual(a.agent, b.agent);
    assert.equal(sharedAgents(kc).length, 1, 'the old one is dropped (its idle sockets time out)');
  });
});
