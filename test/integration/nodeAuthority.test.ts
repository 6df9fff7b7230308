/**
 * Node-scoped authority, with the real identities the stack gives its nodes (each sidecar's
 * ServiceAccount token bound to its own core/v1 Node, no impersonation): what node-1's sidecar may and
 * may not do to node-1's and node-2's objects, with the admission policies and RBAC of deploy/ in
 * force; the controller ignoring a forged binding; the scheduler never binding to a node that did not
 * register itself; Secrets by namespace opt-in; and tenant node pools.
 */
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { describe, it, type TestContext } from 'node:test';
import { AuthenticationV1Api, CoreV1Api, EventsV1Api, KubeConfig, RbacAuthorizationV1Api, V1MicroTime } from '@kubernetes/client-node';
import { API_VERSION, NODE_LABEL, NODE_RESTRICTION_PREFIX, NODE_SELECTOR_ANNOTATION } from '../../src/api/constants.js';
import { optInCommand, OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT } from '../../src/api/references.js';
import { apiErrorCode, apiErrorMessage } from '../../src/dev/apiErrors.js';
import { closeConnections } from '../../src/kube/client.js';
import { agentClient, agentNodeClient, type KubeObject } from '../../src/kube/resources.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { controlPlane, createTestNamespace, kubeConfig, uniqueSuffix, waitFor } from '../support/cluster.js';
import { agents, assertNothingLeft, createAgent, useStack, waitForAgent, waitForCleanedUp, type AgentObj } from '../support/stack.js';
import { eventsAbout } from '../support/telemetry.js';

const N1 = 'auth-node-1';
const N2 = 'auth-node-2';

function load(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

/** 'allowed', or the HTTP status and the API server's message of the refusal. */
async function outcome(call: () => Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await call();
    return { code: 200, message: '' };
  } catch (err) {
    const code = apiErrorCode(err);
    if (code === undefined) throw err;
    return { code, message: apiErrorMessage(err) };
  }
}

const missing = (path: string) =>
  stat(path).then(
    () => false,
    () => true,
  );

describe('node-scoped authority', () => {
  const stack = useStack('auth', { nodes: [N1, N2] });

  /** A running Agent on `node` (a long sleep), stopped after the test. */
  async function runningOn(t: TestContext, ns: string, name: string, node: string): Promise<AgentObj> {
    await createAgent(ns, name, { nodeName: node, command: ['sh', '-c', 'sleep 120'], cleanup: { gracePeriodSeconds: 1 } });
    t.after(() =>
      agents()
        .patch({ namespace: ns, name }, { spec: { stop: true } })
        .catch(() => undefined),
    );
    return waitForAgent(ns, name, (a) => a.status?.phase === 'Running', `to be Running on ${node}`);
  }

  it("node-1's identity: its own Agents' node fields, its own AgentNode and Events; nothing of node-2's, no controller field, no Secret of a closed namespace", async (t) => {
    const ns = await createTestNamespace(t, 'auth-table');
    const closed = await createTestNamespace(t, 'auth-closed', { optIn: false });
    const admin = kubeConfig();
    const core = admin.makeApiClient(CoreV1Api);
    for (const namespace of [ns, closed]) await core.createNamespacedSecret({ namespace, body: { metadata: { name: 'creds' }, stringData: { key: 'v' } } });
    const [mine, theirs] = [await runningOn(t, ns, 'mine', N1), await runningOn(t, ns, 'theirs', N2)];

    const kc = load(stack().node(N1).kubeconfig);
    t.after(() => closeConnections(kc));
    const agentApi = agentClient(kc);
    const nodeApi = agentNodeClient(kc);
    const events = kc.makeApiClient(EventsV1Api);
    const ownNode = await agentNodeClient(admin).get({ name: N1 });
    const otherNode = await agentNodeClient(admin).get({ name: N2 });
    const event = (regarding: KubeObject, instance = N1) =>
      events.createNamespacedEvent({
        namespace: regarding.metadata?.namespace ?? 'default',
        body: {
          metadata: { generateName: 'auth-test-' },
          eventTime: new V1MicroTime(Date.now()),
          type: 'Normal',
          reason: 'AuthorityTest',
          action: 'AuthorityTest',
          note: 'written by the authority test',
          reportingController: 'orchestrator.dev/sidecar',
          reportingInstance: instance,
          regarding: { apiVersion: API_VERSION, kind: regarding.kind ?? 'Agent', name: regarding.metadata?.name, namespace: regarding.metadata?.namespace, uid: regarding.metadata?.uid },
        },
      });
    // The same ServiceAccount, with a token bound to nothing: it names no node.
    const unbound = load(await (await controlPlane()).serviceAccountKubeconfig(OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT, { expirationSeconds: 600 }));
    t.after(() => closeConnections(unbound));
    t.after(() => agentNodeClient(admin).patchMeta({ name: N1 }, { labels: { 'auth-test': null } }));

    const ref = (a: AgentObj) => ({ namespace: ns, name: a.metadata!.name! });
    const rows: { what: string; call: () => Promise<unknown>; refused?: RegExp }[] = [
      { what: 'patch status.progress of its own Agent', call: () => agentApi.patchStatus(ref(mine), { progress: 42 }) },
      { what: 'post its own heartbeat', call: () => nodeApi.patchStatus({ name: N1 }, { lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }) },
      { what: 'add a label to its own AgentNode', call: () => nodeApi.patchMeta({ name: N1 }, { labels: { 'auth-test': 'yes' } }) },
      { what: 'record an Event about its own AgentNode', call: () => event(ownNode) },
      { what: 'get a Secret of an opted-in namespace', call: () => kc.makeApiClient(CoreV1Api).readNamespacedSecret({ namespace: ns, name: 'creds' }) },
      {
        what: "patch status.progress of node-2's Agent",
        call: () => agentApi.patchStatus(ref(theirs), { progress: 42 }),
        refused: /node auth-node-1 may write the status only of Agents bound to it; .*theirs is bound to auth-node-2/,
      },
      { what: "patch status.nodeName of node-2's Agent to node-1", call: () => agentApi.patchStatus(ref(theirs), { nodeName: N1 }), refused: /may write the status only of Agents bound to it/ },
      { what: 'patch status.nodeName of its own Agent', call: () => agentApi.patchStatus(ref(mine), { nodeName: N2 }), refused: /may not change status\.nodeName, phase/ },
      { what: 'patch status.phase Completed on its own Agent', call: () => agentApi.patchStatus(ref(mine), { phase: 'Completed' }), refused: /may not change status\.nodeName, phase/ },
      { what: 'patch status.conditions of its own Agent', call: () => agentApi.patchStatus(ref(mine), { conditions: [] }), refused: /may not change status\.nodeName, phase/ },
      { what: 'set the binding label on an Agent', call: () => agentApi.patchMeta(ref(theirs), { labels: { [NODE_LABEL]: N1 } }), refused: /cannot patch resource "agents"/ },
      {
        what: "patch node-2's AgentNode status (capacity 100000)",
        call: () => nodeApi.patchStatus({ name: N2 }, { capacity: 100_000 }),
        refused: /may create and write only its own AgentNode \(auth-node-1\)|only the sidecar of node auth-node-2 may post its heartbeat/,
      },
      { what: "patch node-2's AgentNode labels", call: () => nodeApi.patchMeta({ name: N2 }, { labels: { 'auth-test': 'yes' } }), refused: /only its own AgentNode/ },
      {
        what: 'create AgentNode zzz-black-hole',
        call: () => nodeApi.create({ apiVersion: API_VERSION, kind: 'AgentNode', metadata: { name: 'zzz-black-hole' } }),
        refused: /only its own AgentNode|may be registered only by the sidecar of node zzz-black-hole/,
      },
      {
        what: 'put its own AgentNode into a node pool (a node-restriction label)',
        call: () => nodeApi.patchMeta({ name: N1 }, { labels: { [`${NODE_RESTRICTION_PREFIX}pool`]: 'any' } }),
        refused: /may not set, change or remove labels under node-restriction\.orchestrator\.dev\//,
      },
      { what: "cordon its own AgentNode (spec is the admin's)", call: () => nodeApi.patch({ name: N1 }, { spec: { unschedulable: true } }), refused: /may not cordon or uncordon/ },
      { what: 'delete its own AgentNode', call: () => nodeApi.delete({ name: N1 }), refused: /cannot delete resource "agentnodes"/ },
      { what: "record an Event about node-2's AgentNode", call: () => event(otherNode), refused: /may record Events only about its own AgentNode/ },
      { what: 'record an Event as another node (reportingInstance)', call: () => event(ownNode, N2), refused: /may record Events only about its own AgentNode, as reportingInstance auth-node-1/ },
      { what: 'record an Event about an Agent, even its own', call: () => event(mine), refused: /may record Events only about its own AgentNode/ },
      {
        what: 'get a Secret of a namespace that did not opt in',
        call: () => kc.makeApiClient(CoreV1Api).readNamespacedSecret({ namespace: closed, name: 'creds' }),
        refused: /cannot get resource "secrets"/,
      },
      { what: 'list Secrets of an opted-in namespace', call: () => kc.makeApiClient(CoreV1Api).listNamespacedSecret({ namespace: ns }), refused: /cannot list resource "secrets"/ },
      { what: 'with a token that names no node: patch its own Agent', call: () => agentClient(unbound).patchStatus(ref(mine), { progress: 43 }), refused: /credential names no node/ },
    ];
    const mismatches: string[] = [];
    for (const row of rows) {
      const got = await outcome(row.call);
      const expected = row.refused ? 'refused' : 'allowed';
      const actual = got.code === 200 ? 'allowed' : got.code === 403 ? 'refused' : `HTTP ${got.code}`;
      t.diagnostic(`${actual.padEnd(8)} ${row.what}${got.message ? `: ${got.message.slice(0, 160)}` : ''}`);
      if (actual !== expected) mismatches.push(`${row.what}: expected ${expected}, got ${actual} ${got.message}`);
      else if (row.refused && !row.refused.test(got.message)) mismatches.push(`${row.what}: refused, but not as expected: ${got.message}`);
    }
    assert.deepEqual(mismatches, []);
    // Nothing refused left a trace.
    const after = await agents().get({ namespace: ns, name: 'theirs' });
    assert.equal(after.status?.nodeName, N2);
    assert.equal(after.metadata?.labels?.[NODE_LABEL], N2);
    assert.notEqual((await agentNodeClient(admin).get({ name: N2 })).status?.capacity, 100_000);
    assert.equal(await agentNodeClient(admin).find({ name: 'zzz-black-hole' }), undefined);
  });

  it("names the node in the token's user info, node-bound (the dev stack) and pod-bound (a DaemonSet pod) alike", async (t) => {
    const whoami = async (kc: KubeConfig) =>
      (await kc.makeApiClient(AuthenticationV1Api).createSelfSubjectReview({ body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' } })).status?.userInfo;
    const nodeBound = load(stack().node(N1).kubeconfig);
    t.after(() => closeConnections(nodeBound));
    const n1 = await kubeConfig().makeApiClient(CoreV1Api).readNode({ name: N1 });
    const byNode = await whoami(nodeBound);
    assert.equal(byNode?.username, `system:serviceaccount:${OPERATOR_NAMESPACE}:${SIDECAR_SERVICE_ACCOUNT}`);
    assert.deepEqual(byNode?.extra?.['authentication.kubernetes.io/node-name'], [N1]);
    assert.deepEqual(byNode?.extra?.['authentication.kubernetes.io/node-uid'], [n1.metadata!.uid!]);
    assert.equal(byNode?.extra?.['authentication.kubernetes.io/pod-name'], undefined);

    // A pod of the sidecar's ServiceAccount bound to node-2 (no kubelet runs it; the binding is what counts).
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const podName = `auth-pod-${uniqueSuffix()}`;
    const pod = await core.createNamespacedPod({
      namespace: OPERATOR_NAMESPACE,
      body: { metadata: { name: podName }, spec: { nodeName: N2, serviceAccountName: SIDECAR_SERVICE_ACCOUNT, automountServiceAccountToken: false, containers: [{ name: 'c', image: 'none' }] } },
    });
    t.after(() => core.deleteNamespacedPod({ namespace: OPERATOR_NAMESPACE, name: podName, gracePeriodSeconds: 0 }).catch(() => undefined));
    const podBound = load(
      await (await controlPlane()).serviceAccountKubeconfig(OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT, { expirationSeconds: 600, boundTo: { kind: 'Pod', name: podName, uid: pod.metadata!.uid! } }),
    );
    t.after(() => closeConnections(podBound));
    const byPod = await whoami(podBound);
    assert.deepEqual(byPod?.extra?.['authentication.kubernetes.io/pod-name'], [podName]);
    assert.deepEqual(byPod?.extra?.['authentication.kubernetes.io/node-name'], [N2]);
    t.diagnostic(`node-bound: ${JSON.stringify(byNode?.extra)}`);
    t.diagnostic(`pod-bound: ${JSON.stringify(byPod?.extra)}`);
    // And the policies take it as node-2's: its own AgentNode yes, node-1's no.
    const stamp = { lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
    assert.equal((await outcome(() => agentNodeClient(podBound).patchStatus({ name: N2 }, stamp))).code, 200);
    assert.equal((await outcome(() => agentNodeClient(podBound).patchStatus({ name: N1 }, stamp))).code, 403);
  });

  it('the controller ignores a forged binding: a Warning, the binding restored, the Agent stays where it runs', async (t) => {
    const ns = await createTestNamespace(t, 'auth-forged');
    const running = await runningOn(t, ns, 'pinned', N2);
    const uid = running.metadata!.uid!;
    // Written by someone allowed to write status (an admin): what a node can no longer do.
    await agents().patchStatus({ namespace: ns, name: 'pinned' }, { nodeName: N1 });
    const warning = await waitFor(async () => (await eventsAbout(ns, uid)).find((e) => e.reason === 'BindingMismatch'), { timeoutMs: 20_000, what: 'a BindingMismatch Event' });
    assert.equal(warning.type, 'Warning');
    assert.match(warning.note ?? '', /status\.nodeName says auth-node-1, but the Agent is bound to auth-node-2/);
    const restored = await waitForAgent(ns, 'pinned', (a) => a.status?.nodeName === N2, 'to have status.nodeName restored', 20_000);
    assert.equal(restored.metadata?.labels?.[NODE_LABEL], N2);
    assert.equal(restored.status?.phase, 'Running');
    assert.ok(
      (await listSessions(stack().node(N2).root)).some((s) => s.uid === uid && !s.dead),
      'still running on node-2',
    );
    assert.ok(await missing(workspacePaths(stack().node(N1).root, uid).dir), 'never launched on node-1');

    // An Agent nobody has bound yet: a claimed node is cleared, never followed.
    await createAgent(ns, 'unbound', { nodeSelector: { 'auth-test': 'nowhere' }, command: ['true'] });
    await waitForAgent(ns, 'unbound', (a) => a.status?.reason === 'Unschedulable', 'to be Unschedulable');
    await agents().patchStatus({ namespace: ns, name: 'unbound' }, { nodeName: N1 });
    const cleared = await waitForAgent(ns, 'unbound', (a) => a.status?.nodeName === undefined && a.status?.reason === 'Unschedulable', 'to have the claimed node cleared', 20_000);
    assert.equal(cleared.metadata?.labels?.[NODE_LABEL], undefined);
    const unboundUid = cleared.metadata!.uid!;
    assert.match((await eventsAbout(ns, unboundUid)).find((e) => e.reason === 'BindingMismatch')?.note ?? '', /never bound/);
    assert.ok(await missing(workspacePaths(stack().node(N1).root, unboundUid).dir), 'never launched on node-1');
  });

  it('only the controller binds: nobody else sets the binding label, not even an Agent author at creation', async (t) => {
    const ns = await createTestNamespace(t, 'auth-label');
    const rbac = kubeConfig().makeApiClient(RbacAuthorizationV1Api);
    const user = `auth-author-${uniqueSuffix()}`;
    await rbac.createNamespacedRole({ namespace: ns, body: { metadata: { name: 'author' }, rules: [{ apiGroups: ['orchestrator.dev'], resources: ['agents'], verbs: ['get', 'create', 'patch'] }] } });
    await rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'author' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'author' },
        subjects: [{ kind: 'User', name: user, apiGroup: 'rbac.authorization.k8s.io' }],
      },
    });
    const author = load(await (await controlPlane()).userKubeconfig(user, []));
    t.after(() => closeConnections(author));
    const api = agentClient(author);
    const manifest = (name: string, labels?: Record<string, string>) =>
      ({
        apiVersion: API_VERSION,
        kind: 'Agent',
        metadata: { name, namespace: ns, ...(labels ? { labels } : {}) },
        spec: { prompt: 'p', command: ['true'], nodeSelector: { 'auth-test': 'nowhere' } },
      }) as AgentObj;
    const preBound = await outcome(() => api.create(manifest('pre-bound', { [NODE_LABEL]: N1 })));
    assert.equal(preBound.code, 403);
    assert.match(preBound.message, /the label orchestrator\.dev\/node is the binding the controller records/);
    await api.create(manifest('plain'));
    const relabel = await outcome(() => api.patchMeta({ namespace: ns, name: 'plain' }, { labels: { [NODE_LABEL]: N1 } }));
    assert.equal(relabel.code, 403);
    assert.equal((await outcome(() => api.patchMeta({ namespace: ns, name: 'plain' }, { labels: { team: 'a' } }))).code, 200, "other labels are the author's");
  });

  it('the scheduler never binds to a node that did not register itself: nobody else creates an AgentNode or posts its heartbeat', async (t) => {
    const ns = await createTestNamespace(t, 'auth-register');
    const nodes = agentNodeClient(kubeConfig());
    // Even a cluster admin: a "node" created by anyone but its own sidecar could take every Agent.
    const created = await outcome(() => nodes.create({ apiVersion: API_VERSION, kind: 'AgentNode', metadata: { name: 'zzz-black-hole' } }));
    assert.equal(created.code, 403);
    assert.match(created.message, /AgentNode zzz-black-hole may be registered only by the sidecar of node zzz-black-hole/);
    const beat = await outcome(() => nodes.patchStatus({ name: N2 }, { capacity: 100_000, lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }));
    assert.equal(beat.code, 403);
    assert.match(beat.message, /only the sidecar of node auth-node-2 may post its heartbeat/);
    // What admins keep: labels and cordon.
    assert.equal((await outcome(() => nodes.patchMeta({ name: N2 }, { labels: { 'auth-test': 'admin' } }))).code, 200);
    await nodes.patchMeta({ name: N2 }, { labels: { 'auth-test': null } });
    // And so every Agent goes to the two nodes that registered themselves.
    const names = ['s1', 's2', 's3'];
    for (const name of names) await createAgent(ns, name, { command: ['true'] });
    for (const name of names) {
      const a = await waitForCleanedUp(ns, name);
      assert.equal(a.status?.phase, 'Completed');
      assert.ok([N1, N2].includes(a.status?.nodeName ?? ''), `${name} ran on ${a.status?.nodeName}`);
      await assertNothingLeft(stack(), a);
    }
  });

  it('Secrets by namespace opt-in: resolved where the namespace opted in; elsewhere a launch error naming the RoleBinding', async (t) => {
    const open = await createTestNamespace(t, 'auth-open');
    const closed = await createTestNamespace(t, 'auth-shut', { optIn: false });
    const core = kubeConfig().makeApiClient(CoreV1Api);
    for (const namespace of [open, closed]) await core.createNamespacedSecret({ namespace, body: { metadata: { name: 'api' }, stringData: { key: `secret-of-${namespace}` } } });
    const spec = { command: ['sh', '-c', 'echo "key=$API_KEY"'], env: [{ name: 'API_KEY', valueFrom: { secretKeyRef: { name: 'api', key: 'key' } } }] };
    await createAgent(open, 'reads', spec);
    await createAgent(closed, 'refused', spec);
    const ok = await waitForCleanedUp(open, 'reads');
    assert.equal(ok.status?.phase, 'Completed', `${ok.status?.reason}: ${ok.status?.message}`);
    assert.equal(ok.status?.exitCode, 0);
    await assertNothingLeft(stack(), ok);
    const refused = await waitForCleanedUp(closed, 'refused');
    assert.deepEqual([refused.status?.phase, refused.status?.reason], ['Error', 'LaunchFailed']);
    assert.ok(refused.status?.message?.includes(`namespace ${closed} has not opted in; create the RoleBinding agent-operator-references there: ${optInCommand(closed)}`), refused.status?.message);
    await assertNothingLeft(stack(), refused);
  });

  it("tenant node pools: a namespace's Agents only on its pool's nodes; a nodeName outside it is refused naming the annotation", async (t) => {
    const poolLabel = `${NODE_RESTRICTION_PREFIX}pool`;
    const pool = `auth-${uniqueSuffix()}`;
    const nodes = agentNodeClient(kubeConfig());
    await nodes.patchMeta({ name: N1 }, { labels: { [poolLabel]: pool } });
    t.after(() => nodes.patchMeta({ name: N1 }, { labels: { [poolLabel]: null } }));
    const ns = await createTestNamespace(t, 'auth-pool', { annotations: { [NODE_SELECTOR_ANNOTATION]: `${poolLabel}=${pool}` } });
    const names = ['p1', 'p2', 'p3', 'p4'];
    for (const name of names) await createAgent(ns, name, { command: ['true'] });
    await createAgent(ns, 'elsewhere', { nodeName: N2, command: ['true'] });
    for (const name of names) {
      const a = await waitForCleanedUp(ns, name);
      assert.equal(a.status?.nodeName, N1, `${name} ran inside the pool`);
      await assertNothingLeft(stack(), a);
    }
    const refused = await waitForAgent(ns, 'elsewhere', (a) => a.status?.phase === 'Failed', 'to be Failed');
    assert.equal(refused.status?.reason, 'NodePoolConflict');
    assert.match(
      refused.status?.message ?? '',
      new RegExp(`spec\\.nodeName ${N2} is outside the node pool of the namespace: annotation orchestrator\\.dev/node-selector="${poolLabel.replace(/\./g, '\\.')}=${pool}" on namespace ${ns}`),
    );
    assert.equal(refused.status?.nodeName, undefined);
  });
});
