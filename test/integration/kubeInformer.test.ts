/**
 * The informer against a real API server: events, server-side watch closes, a network partition that
 * leaves the watch silent (watchdog), a resourceVersion the server no longer serves (410) with deletes
 * diffed on relist, and no file descriptor growth across many watch reconnects.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiextensionsV1Api, KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { AGENT_KIND, API_VERSION, NODE_LABEL } from '../../src/api/constants.js';
import { closeConnections, shareConnections } from '../../src/kube/client.js';
import { Informer, type InformerOptions } from '../../src/kube/informer.js';
import { AGENT_RESOURCE, agentClient, ResourceClient, type KubeObject, type ResourceKind } from '../../src/kube/resources.js';
import { createTestNamespace, kubeConfig, uniqueSuffix, waitFor } from '../support/cluster.js';

const logger = pino({ level: process.env.AO_TEST_LOG_LEVEL ?? 'warn' });

function sharedKubeConfig(t: TestContext): KubeConfig {
  const kc = shareConnections(kubeConfig());
  t.after(() => closeConnections(kc));
  return kc;
}

/** Starts an informer that records its events as strings and is stopped after the test. */
function startInformer(t: TestContext, kc: KubeConfig, o: Omit<InformerOptions, 'logger'>) {
  const events: string[] = [];
  const errors: string[] = [];
  const inf = new Informer<KubeObject>(kc, { logger, onError: (_e, phase) => errors.push(phase), ...o });
  inf
    .onAdd((x) => events.push(`add ${x.metadata?.name}`))
    .onUpdate((a, b) => a.metadata?.resourceVersion !== b.metadata?.resourceVersion && events.push(`update ${b.metadata?.name}`))
    .onDelete((x) => events.push(`delete ${x.metadata?.name}`));
  inf.start();
  t.after(() => inf.stop());
  return { inf, events, errors };
}

const agentBody = (name: string, namespace: string, labels: Record<string, string> = {}) => ({
  apiVersion: API_VERSION,
  kind: AGENT_KIND,
  metadata: { name, namespace, labels },
  spec: { prompt: 'p', command: ['true'] },
});

test('sees adds, updates and deletes of the Agents matching its label selector', async (t) => {
  const ns = await createTestNamespace(t, 'kube-informer');
  const kc = sharedKubeConfig(t);
  const agents = agentClient(kc);
  const { inf, events, errors } = startInformer(t, kc, {
    resource: AGENT_RESOURCE,
    namespace: ns,
    labelSelector: `${NODE_LABEL}=n1`,
  });
  await agents.create(agentBody('before', ns, { [NODE_LABEL]: 'n1' }));
  await inf.waitForSync(10_000);
  await agents.create(agentBody('mine', ns, { [NODE_LABEL]: 'n1' }));
  await agents.create(agentBody('other-node', ns, { [NODE_LABEL]: 'n2' }));
  await agents.create(agentBody('unbound', ns));
  await agents.patchStatus({ name: 'mine', namespace: ns }, { phase: 'Running' });
  await agents.patchMeta({ name: 'before', namespace: ns }, { labels: { [NODE_LABEL]: 'n2' } }); // moved away: a delete for us
  await agents.delete({ name: 'mine', namespace: ns });
  await waitFor(() => events.length >= 5, { what: 'informer events', timeoutMs: 10_000 });
  await sleep(300); // nothing else may arrive
  assert.deepEqual(events, ['add before', 'add mine', 'update mine', 'delete before', 'delete mine']);
  assert.deepEqual(inf.keys(), []);
  assert.deepEqual(errors, []);
});

test('carries on across watches the server closes (timeoutSeconds=1) without losing events', async (t) => {
  const ns = await createTestNamespace(t, 'kube-informer-close');
  const kc = sharedKubeConfig(t);
  const agents = agentClient(kc);
  const { inf, errors } = startInformer(t, kc, { resource: agents.resource, namespace: ns, watchTimeoutSeconds: { min: 1, max: 1 } });
  await inf.waitForSync(10_000);
  const names: string[] = [];
  for (let i = 0; i < 16; i++) {
    names.push(`a${i}`);
    await agents.create(agentBody(`a${i}`, ns));
    await sleep(250); // spread over ~4 s: several watches
  }
  await waitFor(() => inf.keys().length === names.length, { what: 'every Agent in the cache', timeoutMs: 10_000 });
  assert.deepEqual(
    inf
      .keys()
      .map((k) => k.split('/')[1])
      .sort(),
    [...names].sort(),
  );
  assert.deepEqual(errors, []);
});

/** A TCP proxy that can stop forwarding (a network partition: connections stay open, nothing flows). */
class PausableProxy {
  private readonly server: Server;
  private readonly pairs = new Set<[Socket, Socket]>();
  private held: Socket[] = [];
  private paused = false;
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    this.server = createServer((client) => (this.paused ? this.held.push(client) : this.forward(client)));
  }
  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }
  private forward(client: Socket): void {
    const upstream = connect(this.target);
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  }
  pause(): void {
    this.paused = true;
    for (const [a, b] of this.pairs) {
      a.pause();
      b.pause();
    }
  }
  resume(): void {
    this.paused = false;
    for (const [a, b] of this.pairs) {
      a.resume();
      b.resume();
    }
    for (const c of this.held.splice(0)) if (!c.destroyed) this.forward(c);
  }
  async close(): Promise<void> {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    for (const c of this.held) c.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** A throwaway namespaced CRD, so the test may change it without touching the operator's CRDs. */
async function createWidgetCrd(t: TestContext): Promise<ResourceKind & { crdName: string }> {
  const group = `w${uniqueSuffix()}.kubetest.orchestrator.dev`;
  const crdName = `widgets.${group}`;
  const api = kubeConfig().makeApiClient(ApiextensionsV1Api);
  await api.createCustomResourceDefinition({
    body: {
      metadata: { name: crdName },
      spec: {
        group,
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
        versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', x_kubernetes_preserve_unknown_fields: true } } }],
      },
    },
  });
  t.after(() => api.deleteCustomResourceDefinition({ name: crdName }));
  await waitFor(async () => (await api.readCustomResourceDefinition({ name: crdName })).status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True'), {
    what: `${crdName} Established`,
    timeoutMs: 20_000,
  });
  return { group, version: 'v1', plural: 'widgets', kind: 'Widget', namespaced: true, crdName };
}

test('after a partition: the watchdog ends the silent watch, the 410 relists, and what vanished is deleted', async (t) => {
  const ns = await createTestNamespace(t, 'kube-informer-410');
  const widget = await createWidgetCrd(t);
  const direct = sharedKubeConfig(t);
  const widgets = new ResourceClient<KubeObject>(direct, widget);
  const body = (name: string, extra: object = {}) => ({ apiVersion: `${widget.group}/v1`, kind: 'Widget', metadata: { name, namespace: ns }, ...extra });
  // Widget storage comes up asynchronously after Established: retry the first create briefly.
  await waitFor(() => widgets.create(body('a')).then(() => true), { what: 'widget storage', timeoutMs: 10_000 });
  for (const n of ['b', 'c']) await widgets.create(body(n));

  const server = new URL(direct.getCurrentCluster()!.server);
  const proxy = new PausableProxy({ host: server.hostname, port: Number(server.port) });
  await proxy.listen();
  t.after(() => proxy.close());
  const viaProxy = shareConnections(new KubeConfig());
  viaProxy.loadFromClusterAndUser({ ...direct.getCurrentCluster()!, server: `https://127.0.0.1:${proxy.port}` }, direct.getCurrentUser()!);
  t.after(() => closeConnections(viaProxy));

  const { inf, events, errors } = startInformer(t, viaProxy, {
    resource: widget,
    namespace: ns,
    inactivityTimeoutMs: 2000,
    backoff: { baseMs: 100, maxMs: 500 },
  });
  await inf.waitForSync(10_000);
  await widgets.patch({ name: 'a', namespace: ns }, { spec: { n: 1 } });
  await waitFor(() => events.includes('update a'), { what: 'the update before the partition' });

  proxy.pause();
  await widgets.delete({ name: 'b', namespace: ns });
  await widgets.delete({ name: 'c', namespace: ns });
  await widgets.patch({ name: 'a', namespace: ns }, { spec: { n: 2 } });
  await widgets.create(body('d'));
  // Changing the CRD restarts its storage: the watch cache starts over, so our resourceVersion is now
  // older than anything the server can replay (as after etcd compaction) and a watch from it gets 410.
  await kubeConfig()
    .makeApiClient(ApiextensionsV1Api)
    .patchCustomResourceDefinition({
      name: widget.crdName,
      body: [{ op: 'add', path: '/spec/versions/0/additionalPrinterColumns', value: [{ name: 'N', type: 'integer', jsonPath: '.spec.n' }] }],
    });
  await sleep(2500); // longer than the inactivity timeout: the watchdog fires during the partition
  proxy.resume();

  await waitFor(() => events.length >= 8, { what: 'the relist diff', timeoutMs: 20_000 });
  assert.deepEqual(events.slice(0, 4), ['add a', 'add b', 'add c', 'update a']);
  assert.deepEqual(events.slice(4).sort(), ['add d', 'delete b', 'delete c', 'update a']);
  assert.deepEqual(inf.keys().sort(), [`${ns}/a`, `${ns}/d`]);
  assert.equal((inf.get(`${ns}/a`) as { spec?: { n?: number } }).spec?.n, 2);
  // Whatever failed during the partition (e.g. the re-watch attempt) was retried; the loop is healthy now.
  await widgets.create(body('e'));
  await waitFor(() => events.includes('add e'), { what: 'events after recovery' });
  logger.info({ errors }, 'failures during the partition');
});

test('no file descriptor growth across many watch reconnects and API calls (client-node #2893)', async (t) => {
  const ns = await createTestNamespace(t, 'kube-informer-fds');
  const kc = sharedKubeConfig(t);
  const agents = agentClient(kc);
  const { inf } = startInformer(t, kc, { resource: agents.resource, namespace: ns, watchTimeoutSeconds: { min: 1, max: 1 } });
  await inf.waitForSync(10_000);
  const fds = () => readdirSync('/proc/self/fd').length;
  const churn = async (rounds: number) => {
    for (let i = 0; i < rounds; i++) {
      await agents.list({ namespace: ns });
      await sleep(100);
    }
  };
  await churn(15); // warm up: the pool reaches its working size
  const before = fds();
  await churn(60); // ~6 s: ~6 watch reconnects and 60 calls
  const after = fds();
  assert.ok(after - before <= 2, `fds went from ${before} to ${after}`);
});
