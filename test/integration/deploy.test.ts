/**
 * deploy/ on a real API server: the kustomization renders and passes server-side validation and
 * admission (dry run, then for real), Pod Security admits what it should, and the least-privilege
 * contract of both identities is checked with their real ServiceAccount tokens: a complete table of
 * allowed AND refused actions, plus a few real requests (events, a lease, a secret, an AgentNode).
 *
 * There is no kubelet here, so the workloads' pods never run; instead their processes are started
 * as the pods would start them (the manifests' args and env, the ServiceAccounts' tokens) and an
 * Agent is run end to end through them, which shows the permissions are also sufficient.
 */
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { after, before, describe, it, type TestContext } from 'node:test';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { AuthorizationV1Api, CoordinationV1Api, CoreV1Api, CustomObjectsApi, EventsV1Api, KubeConfig } from '@kubernetes/client-node';
import { execa, type ResultPromise } from 'execa';
import { pino } from 'pino';
import { parseAllDocuments } from 'yaml';
import { AGENT_KIND, AGENT_NODE_PLURAL, AGENT_PLURAL, API_VERSION, GROUP, VERSION } from '../../src/api/constants.js';
import { apiErrorCode } from '../../src/dev/apiErrors.js';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { freePorts } from '../../src/dev/ports.js';
import { closeConnections, shareConnections } from '../../src/kube/client.js';
import { EventRecorder, type EventSubject } from '../../src/kube/events.js';
import { killServer } from '../../src/sidecar/runtime/tmux.js';
import { agentCgroupDir, defaultAgentsCgroupName, removeAgentCgroups } from '../../src/sidecar/runtime/cgroup.js';
import { controlPlane, createTestNamespace, kubeConfig, kubectl, uniqueSuffix, waitFor } from '../support/cluster.js';
import { CONTROLLER, DEPLOY_DIR, SIDECAR, baseObjects, findObject, flagValue, isRbacRefusal, type KubeObject, type Workload } from '../support/deployManifests.js';

const OPERATOR_NS = 'agent-operator-system';
const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli.js');
/** Any namespace an Agent may live in; it need not exist for an access review. */
const TENANT_NS = 'tenant-a';
/** An access review with no namespace asks about every namespace (what a cluster-wide informer needs). */
const ALL_NS = '';

type Identity = 'controller' | 'sidecar';
const IDENTITIES: Identity[] = ['controller', 'sidecar'];
const SERVICE_ACCOUNT: Record<Identity, string> = { controller: CONTROLLER.serviceAccount, sidecar: SIDECAR.serviceAccount };
/** Access reviews in flight at once. */
const REVIEW_CONCURRENCY = 16;

const VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'] as const;

interface Target {
  /** The row's name in the contract. */
  label: string;
  group: string;
  resource: string;
  subresource?: string;
  /** One object's name (RBAC resourceNames); absent: requests without a name (list, watch, create). */
  name?: string;
  /** Namespaces to ask about; absent for cluster-scoped resources. */
  namespaces?: string[];
  /** Verbs to ask about (default: VERBS). */
  verbs?: readonly string[];
}

const everywhere = [TENANT_NS, ALL_NS, OPERATOR_NS];
/** The Lease the controller Deployment elects on (its --leader-election-id). */
const LEASE = flagValue(findObject<Workload>(baseObjects(), CONTROLLER.kind, CONTROLLER.name).spec.template.spec.containers[0]!.args ?? [], '--leader-election-id') ?? '';
const RBAC = 'rbac.authorization.k8s.io';

/** Every row is asked for every verb and identity; anything not granted below must be refused. */
const TARGETS: Target[] = [
  { label: 'agents', group: GROUP, resource: AGENT_PLURAL, namespaces: everywhere },
  { label: 'agents/status', group: GROUP, resource: AGENT_PLURAL, subresource: 'status', namespaces: everywhere },
  { label: 'agents/finalizers', group: GROUP, resource: AGENT_PLURAL, subresource: 'finalizers', namespaces: everywhere },
  { label: 'agentnodes', group: GROUP, resource: AGENT_NODE_PLURAL },
  { label: 'agentnodes/status', group: GROUP, resource: AGENT_NODE_PLURAL, subresource: 'status' },
  { label: 'events (events.k8s.io)', group: 'events.k8s.io', resource: 'events', namespaces: everywhere },
  // Not needed: events.k8s.io Events are stored as core Events, and kubectl describe reads those.
  { label: 'events (core)', group: '', resource: 'events', namespaces: everywhere },
  { label: `leases in ${OPERATOR_NS}`, group: 'coordination.k8s.io', resource: 'leases', namespaces: [OPERATOR_NS] },
  { label: `lease ${LEASE}`, group: 'coordination.k8s.io', resource: 'leases', name: LEASE, namespaces: [OPERATOR_NS] },
  { label: `another lease in ${OPERATOR_NS}`, group: 'coordination.k8s.io', resource: 'leases', name: 'another-lease', namespaces: [OPERATOR_NS] },
  { label: 'leases elsewhere', group: 'coordination.k8s.io', resource: 'leases', namespaces: [TENANT_NS, ALL_NS, 'kube-system'] },
  { label: 'configmaps', group: '', resource: 'configmaps', namespaces: everywhere },
  { label: 'secrets', group: '', resource: 'secrets', namespaces: everywhere },
  { label: 'pods', group: '', resource: 'pods', namespaces: everywhere },
  { label: 'pods/exec', group: '', resource: 'pods', subresource: 'exec', namespaces: everywhere, verbs: ['get', 'create'] },
  { label: 'serviceaccounts/token', group: '', resource: 'serviceaccounts', subresource: 'token', namespaces: everywhere, verbs: ['create'] },
  { label: 'nodes', group: '', resource: 'nodes' },
  { label: 'namespaces', group: '', resource: 'namespaces' },
  { label: 'deployments', group: 'apps', resource: 'deployments', namespaces: [OPERATOR_NS] },
  { label: 'customresourcedefinitions', group: 'apiextensions.k8s.io', resource: 'customresourcedefinitions' },
  { label: 'roles', group: RBAC, resource: 'roles', namespaces: everywhere },
  { label: 'rolebindings', group: RBAC, resource: 'rolebindings', namespaces: everywhere },
  { label: 'clusterroles', group: RBAC, resource: 'clusterroles', verbs: [...VERBS, 'bind', 'escalate'] },
  { label: 'clusterrolebindings', group: RBAC, resource: 'clusterrolebindings' },
  { label: 'impersonate users', group: '', resource: 'users', verbs: ['impersonate'] },
  { label: 'impersonate serviceaccounts', group: '', resource: 'serviceaccounts', namespaces: everywhere, verbs: ['impersonate'] },
];

/** THE least-privilege contract: exactly these are allowed, in every namespace the row names. */
const ALLOWED: Record<Identity, Record<string, string[]>> = {
  controller: {
    // create: child Agents; agents/finalizers update: their ownerReference's blockOwnerDeletion.
    agents: ['get', 'list', 'watch', 'patch', 'delete', 'create'],
    'agents/status': ['patch'],
    'agents/finalizers': ['update'],
    agentnodes: ['get', 'list', 'watch'],
    'agentnodes/status': ['patch'],
    'events (events.k8s.io)': ['create', 'patch'],
    // Each namespace's node pool (annotation orchestrator.dev/node-selector).
    namespaces: ['list', 'watch'],
    // Create cannot be limited by name; reading and renewing can, to the controller's own Lease.
    [`leases in ${OPERATOR_NS}`]: ['create'],
    [`lease ${LEASE}`]: ['get', 'create', 'update'],
    [`another lease in ${OPERATOR_NS}`]: ['create'],
  },
  sidecar: {
    agents: ['get', 'list', 'watch'],
    'agents/status': ['patch'],
    agentnodes: ['get', 'create', 'patch'],
    'agentnodes/status': ['patch'],
    'events (events.k8s.io)': ['create', 'patch'],
    // No ConfigMaps or Secrets: a namespace opts in with a RoleBinding to agent-operator-references.
  },
};

const saKubeconfigs = new Map<Identity, KubeConfig>();
const saKubeconfigPaths = new Map<Identity, string>();

/**
 * The sidecar identity as a node's sidecar holds it: a token bound to a core/v1 Node (created here,
 * deleted after the test), so it names the node (authentication.kubernetes.io/node-name) and the
 * admission policies let it act for that node.
 */
async function sidecarOfNode(t: TestContext, node: string): Promise<{ kc: KubeConfig; path: string }> {
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const created = await core.createNode({ body: { metadata: { name: node } } });
  t.after(() => core.deleteNode({ name: node }).catch((err: unknown) => assert.equal(apiErrorCode(err), 404)));
  const path = await (
    await controlPlane()
  ).serviceAccountKubeconfig(OPERATOR_NS, SIDECAR.serviceAccount, {
    expirationSeconds: 1800,
    boundTo: { kind: 'Node', name: node, uid: created.metadata!.uid! },
  });
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  t.after(() => closeConnections(kc));
  return { kc: shareConnections(kc), path };
}
function as(identity: Identity): KubeConfig {
  const kc = saKubeconfigs.get(identity);
  assert.ok(kc, `no kubeconfig for ${identity}`);
  return kc;
}

async function render(dir: string): Promise<KubeObject[]> {
  const r = await kubectl(['kustomize', dir]);
  assert.equal(r.exitCode, 0, `kubectl kustomize ${dir}:\n${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as KubeObject);
}

const toYaml = (objects: KubeObject[]) => objects.map((o) => JSON.stringify(o)).join('\n---\n');

async function mustSucceed(args: string[], input?: string): Promise<string> {
  const r = await kubectl(args, input === undefined ? {} : { input });
  assert.equal(r.exitCode, 0, `kubectl ${args.join(' ')}:\n${r.stderr}`);
  return r.stdout;
}

/** `fn` over `items`, at most `limit` at a time, results in order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** The HTTP status of a call made with an identity's token: 200 for success. */
async function statusOf(call: () => Promise<unknown>): Promise<number> {
  try {
    await call();
    return 200;
  } catch (err) {
    const code = apiErrorCode(err);
    if (code === undefined) throw err;
    return code;
  }
}

interface RunningWorkload {
  identity: Identity;
  child: ResultPromise<{ all: true; reject: false }>;
  metricsPort: number;
  probePort: number;
  /** Volume name -> the temp dir standing in for it. */
  volumes: Record<string, string>;
  /** Its output so far (pino JSON lines). */
  output(): string;
}

/**
 * Runs a workload of deploy/ as its pod would, minus the container: the container's args and env
 * as the kubelet would give them (downward API fields, `$(VAR)` expansion), each volume mount a temp
 * dir under `dir`, the listeners on free loopback ports, and its ServiceAccount's token instead of
 * the in-cluster config. Killed after the test.
 */
async function runWorkload(t: TestContext, workload: Workload, identity: Identity, dir: string, nodeName: string, kubeconfigPath = saKubeconfigPaths.get(identity)): Promise<RunningWorkload> {
  const container = workload.spec.template.spec.containers[0]!;
  const volumes: Record<string, string> = {};
  const mounts: [string, string][] = [];
  for (const m of container.volumeMounts ?? []) {
    volumes[m.name] = join(dir, m.name);
    mounts.push([m.mountPath, volumes[m.name]!]);
    await mkdir(volumes[m.name]!, { recursive: true });
  }
  const onHost = (value: string) => {
    for (const [mountPath, local] of mounts) if (value === mountPath || value.startsWith(`${mountPath}/`)) return local + value.slice(mountPath.length);
    return value;
  };
  const downward: Record<string, string> = { 'metadata.namespace': OPERATOR_NS, 'spec.nodeName': nodeName };
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) env[e.name] = e.valueFrom ? (downward[e.valueFrom.fieldRef?.fieldPath ?? ''] ?? '') : onHost(e.value ?? '');
  const [metricsPort, probePort] = await freePorts(2);
  const args = (container.args ?? [])
    .map((a) => a.replace(/\$\((\w+)\)/g, (ref, name: string) => env[name] ?? ref))
    .map((a) => a.replace(/^(--metrics-bind-address=).*/, (_, flag: string) => `${flag}127.0.0.1:${metricsPort}`))
    .map((a) => a.replace(/^(--health-probe-bind-address=).*/, (_, flag: string) => `${flag}127.0.0.1:${probePort}`))
    .map((a) => a.replace(/^(--[\w-]+=)(\/.*)$/, (_, flag: string, path: string) => flag + onHost(path)));
  const child = execa(process.execPath, [CLI, ...args, `--kubeconfig=${kubeconfigPath}`], {
    env: { ...env, PATH: process.env.PATH ?? '' },
    extendEnv: false,
    all: true,
    reject: false,
    timeout: 180_000,
    // Its own process group: the sidecar runs under `supervise`, and both go at once.
    detached: true,
  });
  let output = '';
  child.all?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  t.after(async () => {
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    }
    await child;
    // The sidecar's private tmux server (on its --root), should a session outlive a failed test.
    const root = flagValue(args, '--root');
    if (root) await killServer(root).catch(() => undefined);
    // And the agents' cgroup it made for its node.
    const cgroups = identity === 'sidecar' ? await agentCgroupDir(defaultAgentsCgroupName(nodeName)) : undefined;
    if (cgroups) await removeAgentCgroups(cgroups);
  });
  return { identity, child, metricsPort: metricsPort!, probePort: probePort!, volumes, output: () => output };
}

async function readFilesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return Promise.all(entries.filter((e) => e.isFile()).map((e) => readFile(join(e.parentPath, e.name), 'utf8')));
}

describe('deploy/ on a real API server', () => {
  let rendered: KubeObject[] = [];
  /** What this test created and must remove; the CRDs stay (the run's other tests use them). */
  let installed: KubeObject[] = [];

  /** Deletes deploy/'s objects but the CRDs and waits for the Namespace to be gone. */
  const uninstall = async () => {
    const r = await kubectl(['delete', '--ignore-not-found', '--wait=true', '--timeout=120s', '-f', '-'], { input: toYaml(installed), timeoutMs: 150_000 });
    assert.equal(r.exitCode, 0, `uninstalling deploy/ failed:\n${r.stderr}`);
  };

  before(async () => {
    rendered = await render(DEPLOY_DIR);
    installed = rendered.filter((o) => o.kind !== 'CustomResourceDefinition');
    // An earlier file's local stack installed deploy/ (as an install stays) and its controller left
    // its Lease: this file tests a first install, so it starts from none, whatever ran before it.
    await uninstall();
  });

  after(async () => {
    for (const kc of saKubeconfigs.values()) closeConnections(kc);
    // The next test file's stack installs deploy/ into the Namespace again.
    if (installed.length > 0) await uninstall();
  });

  it('renders one Namespace, the CRDs from crds/, and the image set by kustomize', () => {
    assert.deepEqual(
      rendered.filter((o) => o.kind === 'Namespace').map((o) => o.metadata.name),
      [OPERATOR_NS],
    );
    assert.deepEqual(
      rendered
        .filter((o) => o.kind === 'CustomResourceDefinition')
        .map((o) => o.metadata.name)
        .sort(),
      ['agentnodes.orchestrator.dev', 'agents.orchestrator.dev'],
    );
    for (const o of rendered) {
      const clusterScoped = ['Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'].includes(o.kind);
      assert.equal(o.metadata.namespace, clusterScoped ? undefined : OPERATOR_NS, `${o.kind} ${o.metadata.name}`);
    }
    const workloads = rendered.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet') as Workload[];
    assert.equal(workloads.length, 2);
    for (const w of workloads)
      assert.deepEqual(
        w.spec.template.spec.containers.map((c) => c.image),
        ['ghcr.io/agent-operator/agent-operator:v0.1.0'],
      );
  });

  it('passes server-side validation and admission in a dry run, base and archive-pvc overlay', async () => {
    // A dry run cannot create the Namespace its other objects go into (they would be refused with
    // "namespace not found"), so the Namespace is applied first; everything else is new here.
    await mustSucceed(['apply', '-f', '-'], toYaml(rendered.filter((o) => o.kind === 'Namespace')));
    const out = await mustSucceed(['apply', '--dry-run=server', '--validate=strict', '-k', DEPLOY_DIR]);
    for (const o of installed.filter((o) => o.kind !== 'Namespace')) {
      assert.match(out, new RegExp(`/${o.metadata.name} created \\(server dry run\\)`), `${o.kind} ${o.metadata.name}`);
    }
    const overlay = `${DEPLOY_DIR}/overlays/archive-pvc`;
    const withPvc = await render(overlay);
    const ds = withPvc.find((o) => o.kind === SIDECAR.kind) as Workload;
    assert.deepEqual(
      ds.spec.template.spec.volumes?.find((v) => v.name === 'archive'),
      { name: 'archive', persistentVolumeClaim: { claimName: 'agent-operator-archive' } },
      'the archive volume is the claim, and no longer a hostPath',
    );
    assert.equal(withPvc.find((o) => o.kind === 'PersistentVolumeClaim')?.metadata.namespace, OPERATOR_NS);
    assert.match(await mustSucceed(['apply', '--dry-run=server', '--validate=strict', '-k', overlay]), /persistentvolumeclaim\/agent-operator-archive created \(server dry run\)/);
  });

  it('applies for real with `kubectl apply -k deploy/`, and again without changes', async () => {
    await mustSucceed(['apply', '-k', DEPLOY_DIR]);
    // Idempotent: a second apply writes nothing. (kubectl still prints "configured" for the
    // PodDisruptionBudget, whose selector it always patches with a replace directive; the
    // resourceVersions show that nothing changed.)
    const versions = async () => {
      const list = JSON.parse(await mustSucceed(['get', '-f', '-', '-o', 'json'], toYaml(installed))) as { items: KubeObject[] };
      return Object.fromEntries(list.items.map((o) => [`${o.kind}/${o.metadata.name}`, (o.metadata as { resourceVersion?: string }).resourceVersion]));
    };
    const first = await versions();
    assert.equal(Object.keys(first).length, installed.length, 'every object exists');
    await mustSucceed(['apply', '-k', DEPLOY_DIR]);
    assert.deepEqual(await versions(), first, 'a second apply changes nothing');
    // From here on, the identities' real tokens (TokenRequest for the ServiceAccounts just applied).
    const cp = await controlPlane();
    for (const identity of IDENTITIES) {
      const path = await cp.serviceAccountKubeconfig(OPERATOR_NS, SERVICE_ACCOUNT[identity], { expirationSeconds: 1800 });
      const kc = new KubeConfig();
      kc.loadFromFile(path);
      saKubeconfigPaths.set(identity, path);
      saKubeconfigs.set(identity, shareConnections(kc));
    }
  });

  it('lets Pod Security admit the controller under "restricted" and the sidecar only in its privileged namespace', async (t) => {
    const restricted = await createTestNamespace(t, 'psa-restricted');
    const baseline = await createTestNamespace(t, 'psa-baseline');
    await mustSucceed(['label', 'namespace', restricted, 'pod-security.kubernetes.io/enforce=restricted']);
    await mustSucceed(['label', 'namespace', baseline, 'pod-security.kubernetes.io/enforce=baseline']);
    const podFrom = (w: Workload, namespace: string) => {
      const { serviceAccountName: _unused, ...spec } = w.spec.template.spec;
      return JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: `psa-${uniqueSuffix()}`, namespace }, spec });
    };
    const dryRun = (w: Workload, namespace: string) => kubectl(['create', '--dry-run=server', '-f', '-'], { input: podFrom(w, namespace) });
    const controller = rendered.find((o) => o.kind === CONTROLLER.kind) as Workload;
    const sidecar = rendered.find((o) => o.kind === SIDECAR.kind) as Workload;

    const c = await dryRun(controller, restricted);
    assert.equal(c.exitCode, 0, `the controller pod should meet "restricted":\n${c.stderr}`);
    const s = await dryRun(sidecar, baseline);
    assert.notEqual(s.exitCode, 0, 'the sidecar pod (hostPath) must not pass "baseline"');
    assert.match(s.stderr, /violates PodSecurity "baseline:latest": hostPath volumes/);
    const inOwn = await dryRun(sidecar, OPERATOR_NS);
    assert.equal(inOwn.exitCode, 0, `the sidecar pod is admitted in ${OPERATOR_NS}:\n${inOwn.stderr}`);
  });

  it('grants each identity exactly its contract: every listed verb allowed, every other refused', async (t) => {
    const mismatches: string[] = [];
    const granted: Record<Identity, Record<string, Set<string>>> = { controller: {}, sidecar: {} };
    for (const identity of IDENTITIES) {
      const api = as(identity).makeApiClient(AuthorizationV1Api);
      const questions = TARGETS.flatMap((target) => (target.verbs ?? VERBS).flatMap((verb) => (target.namespaces ?? [undefined]).map((namespace) => ({ target, verb, namespace }))));
      const answers = await mapLimit(questions, REVIEW_CONCURRENCY, async ({ target, verb, namespace }) => {
        const review = await api.createSelfSubjectAccessReview({
          body: {
            apiVersion: 'authorization.k8s.io/v1',
            kind: 'SelfSubjectAccessReview',
            spec: { resourceAttributes: { group: target.group, resource: target.resource, subresource: target.subresource, name: target.name, verb, namespace } },
          },
        });
        return review.status?.allowed === true;
      });
      questions.forEach(({ target, verb, namespace }, i) => {
        const expected = (ALLOWED[identity][target.label] ?? []).includes(verb);
        const actual = answers[i]!;
        if (actual) (granted[identity][target.label] ??= new Set()).add(verb);
        if (actual !== expected) {
          mismatches.push(
            `${identity}: ${verb} ${target.label}${namespace === undefined ? '' : ` in ${namespace === ALL_NS ? 'all namespaces' : namespace}`}: expected ${expected ? 'allowed' : 'refused'}, got ${actual ? 'allowed' : 'refused'}`,
          );
        }
      });
      // The contract names no row the table does not ask about.
      for (const label of Object.keys(ALLOWED[identity]))
        assert.ok(
          TARGETS.some((x) => x.label === label),
          `contract row ${label} is asked about`,
        );
    }
    const width = Math.max(...TARGETS.map((x) => x.label.length));
    t.diagnostic(`${'resource'.padEnd(width)}  ${'controller'.padEnd(32)}  sidecar`);
    for (const x of TARGETS) {
      const cell = (id: Identity) => [...(granted[id][x.label] ?? [])].join(',') || '-';
      t.diagnostic(`${x.label.padEnd(width)}  ${cell('controller').padEnd(32)}  ${cell('sidecar')}`);
    }
    assert.deepEqual(mismatches, []);
  });

  it('really lets the controller hold its own Lease, and only that one', async () => {
    assert.ok(LEASE, 'the Deployment names its Lease');
    const leases = as('controller').makeApiClient(CoordinationV1Api);
    const body = (namespace: string, name: string) => ({ metadata: { name, namespace }, spec: { holderIdentity: 'deploy-test', leaseDurationSeconds: 15 } });
    assert.equal(await statusOf(() => leases.createNamespacedLease({ namespace: OPERATOR_NS, body: body(OPERATOR_NS, LEASE) })), 200);
    const lease = await leases.readNamespacedLease({ namespace: OPERATOR_NS, name: LEASE });
    const renewed = { ...lease, spec: { ...lease.spec, holderIdentity: 'other' } };
    assert.equal(await statusOf(() => leases.replaceNamespacedLease({ namespace: OPERATOR_NS, name: LEASE, body: renewed })), 200);
    assert.equal(await statusOf(() => leases.deleteNamespacedLease({ namespace: OPERATOR_NS, name: LEASE })), 403);
    // Another name can be created (RBAC cannot limit create by name) but not read or renewed.
    const other = `deploy-test-${uniqueSuffix()}`;
    assert.equal(await statusOf(() => leases.createNamespacedLease({ namespace: OPERATOR_NS, body: body(OPERATOR_NS, other) })), 200);
    assert.equal(await statusOf(() => leases.readNamespacedLease({ namespace: OPERATOR_NS, name: other })), 403);
    assert.equal(await statusOf(() => leases.listNamespacedLease({ namespace: OPERATOR_NS })), 403);
    assert.equal(await statusOf(() => leases.createNamespacedLease({ namespace: 'default', body: body('default', other) })), 403);
    // Leave the election to the real controller (next test).
    await kubeConfig().makeApiClient(CoordinationV1Api).deleteNamespacedLease({ namespace: OPERATOR_NS, name: LEASE });
  });

  it("runs the real controller and sidecar with the manifests' args under their own identities: an Agent runs, is archived and TTL-deleted, nothing refused", async (t) => {
    const scratch = await mkdtemp(join(tmpdir(), 'ao-deploy-'));
    t.after(() => rm(scratch, { recursive: true, force: true }));
    // The sidecar runs its agents sandboxed, as their own uids: they must pass through to the node root.
    await chmod(scratch, 0o711);
    const nodeName = `deploy-node-${uniqueSuffix()}`;
    const workload = (kind: string) => rendered.find((o) => o.kind === kind) as Workload;
    const controller = await runWorkload(t, workload(CONTROLLER.kind), 'controller', join(scratch, 'controller'), nodeName);
    // As on a real node: the pod's token names its node (here, a token bound to a Node object).
    const sidecar = await runWorkload(t, workload(SIDECAR.kind), 'sidecar', join(scratch, 'sidecar'), nodeName, (await sidecarOfNode(t, nodeName)).path);
    const admin = kubeConfig();

    await waitFor(async () => (await admin.makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: OPERATOR_NS, name: LEASE })).spec?.holderIdentity, {
      timeoutMs: 30_000,
      what: `the controller to hold Lease ${LEASE}`,
    });
    const nodes = admin.makeApiClient(CustomObjectsApi);
    await waitFor(
      async () => {
        const n = (await nodes.getClusterCustomObject({ group: GROUP, version: VERSION, plural: AGENT_NODE_PLURAL, name: nodeName })) as {
          status?: { conditions?: { type: string; status: string }[] };
        };
        return n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
      },
      { timeoutMs: 30_000, what: `the sidecar to register AgentNode ${nodeName} and report it Ready` },
    );
    t.after(() => nodes.deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: AGENT_NODE_PLURAL, name: nodeName }).catch(() => undefined));
    for (const w of [controller, sidecar]) {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${w.probePort}/readyz`)).status === 200, { timeoutMs: 30_000, what: `${w.identity} to be ready` });
      assert.equal((await fetch(`http://127.0.0.1:${w.probePort}/healthz`)).status, 200, `${w.identity} /healthz`);
      assert.equal((await fetch(`http://127.0.0.1:${w.metricsPort}/metrics`)).status, 200, `${w.identity} /metrics`);
    }

    // An Agent whose prompt comes from a Secret and whose env comes from a ConfigMap (the namespace
    // opted in: createTestNamespace binds agent-operator-references), finished with a TTL (the
    // controller's delete).
    const ns = await createTestNamespace(t, 'deploy-e2e');
    const core = admin.makeApiClient(CoreV1Api);
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'prompt' }, stringData: { text: 'prompt-from-a-secret' } } });
    await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'settings' }, data: { greeting: 'hello-from-a-configmap' } } });
    const agents = admin.makeApiClient(CustomObjectsApi);
    const where = { group: GROUP, version: VERSION, namespace: ns, plural: AGENT_PLURAL, name: 'e2e' };
    await agents.createNamespacedCustomObject({
      ...where,
      body: {
        apiVersion: API_VERSION,
        kind: AGENT_KIND,
        metadata: { name: where.name },
        spec: {
          promptFrom: { secretKeyRef: { name: 'prompt', key: 'text' } },
          env: [{ name: 'GREETING', valueFrom: { configMapKeyRef: { name: 'settings', key: 'greeting' } } }],
          command: ['sh', '-c', 'cat "$AGENT_PROMPT_FILE"; echo; echo "greeting=$GREETING"'],
          nodeName,
          ttlSecondsAfterFinished: 3,
        },
      },
    });
    type Observed = KubeObject & { status?: { phase?: string; reason?: string; message?: string; cleanup?: { completionTime?: string; logsArchived?: boolean } } };
    // A wait that times out says why: the Agent's status and what either process was refused.
    const explain = async (err: unknown): Promise<never> => {
      const status = await agents.getNamespacedCustomObject(where).then(
        (a) => JSON.stringify((a as Observed).status),
        (e: unknown) => String(e),
      );
      const refused = [controller, sidecar].flatMap((w) =>
        w
          .output()
          .split('\n')
          .filter(isRbacRefusal)
          .slice(0, 3)
          .map((l) => `${w.identity}: ${l.slice(0, 500)}`),
      );
      throw new Error(`${err instanceof Error ? err.message : String(err)}\nAgent status: ${status}\nrefused:\n${refused.join('\n') || '(nothing)'}`);
    };
    const finished = await waitFor(
      async () => {
        const a = (await agents.getNamespacedCustomObject(where)) as Observed;
        return a.status?.cleanup?.completionTime ? a : undefined;
      },
      { timeoutMs: 60_000, what: 'the Agent to run, finish and be cleaned up' },
    ).catch(explain);
    assert.equal(finished.status?.phase, 'Completed', `${finished.status?.reason}: ${finished.status?.message}`);
    assert.equal(finished.status?.cleanup?.logsArchived, true);
    await waitFor(async () => (await statusOf(() => agents.getNamespacedCustomObject(where))) === 404, { timeoutMs: 30_000, what: 'the controller to delete the Agent after its TTL' }).catch(explain);

    const archived = await readFilesUnder(sidecar.volumes.archive!);
    assert.ok(
      archived.some((text) => text.includes('prompt-from-a-secret') && text.includes('greeting=hello-from-a-configmap')),
      'the archived output shows the Secret prompt and the ConfigMap env',
    );

    for (const w of [controller, sidecar]) {
      w.child.kill('SIGTERM');
      const done = await w.child;
      assert.ok(!done.timedOut, `${w.identity} stopped on SIGTERM`);
      assert.ok(String(done.all).length > 0, `${w.identity} logged (else the next check proves nothing)`);
      const refusals = String(done.all).split('\n').filter(isRbacRefusal);
      assert.deepEqual(refusals, [], `${w.identity} was refused something by RBAC`);
    }
  });

  it("really lets a node's sidecar register its own AgentNode only, and read a Secret by name only where the namespace opted in", async (t) => {
    const ns = await createTestNamespace(t, 'deploy-sidecar');
    const closed = await createTestNamespace(t, 'deploy-closed', { optIn: false });
    const admin = kubeConfig();
    for (const namespace of [ns, closed]) {
      await admin.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace, body: { metadata: { name: 'prompt' }, stringData: { prompt: 'hello' } } });
    }
    const node = `deploy-test-${uniqueSuffix()}`;
    const { kc } = await sidecarOfNode(t, node);
    const core = kc.makeApiClient(CoreV1Api);
    const secret = await core.readNamespacedSecret({ namespace: ns, name: 'prompt' });
    assert.equal(Buffer.from(secret.data?.prompt ?? '', 'base64').toString(), 'hello');
    assert.equal(await statusOf(() => core.listNamespacedSecret({ namespace: ns })), 403);
    assert.equal(await statusOf(() => core.readNamespacedSecret({ namespace: closed, name: 'prompt' })), 403, 'a namespace that did not opt in');

    const nodes = kc.makeApiClient(CustomObjectsApi);
    const where = (name: string) => ({ group: GROUP, version: VERSION, plural: AGENT_NODE_PLURAL, name });
    t.after(async () => {
      await admin
        .makeApiClient(CustomObjectsApi)
        .deleteClusterCustomObject(where(node))
        .catch((err: unknown) => assert.equal(apiErrorCode(err), 404));
    });
    const register = (name: string) => nodes.createClusterCustomObject({ ...where(name), body: { apiVersion: API_VERSION, kind: 'AgentNode', metadata: { name } } });
    assert.equal(((await register(node)) as KubeObject).metadata.name, node);
    assert.equal(await statusOf(() => register(`${node}-other`)), 403, 'an AgentNode not named for its node');
    assert.equal(await statusOf(() => nodes.deleteClusterCustomObject(where(node))), 403);
  });

  it("shows both identities' events.k8s.io Events in `kubectl describe`, series included: the controller's on an Agent, a node's on its AgentNode", async (t) => {
    const ns = await createTestNamespace(t, 'deploy-events');
    const admin = kubeConfig().makeApiClient(CustomObjectsApi);
    const agent = (await admin.createNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ns,
      plural: AGENT_PLURAL,
      body: { apiVersion: API_VERSION, kind: AGENT_KIND, metadata: { name: 'describe-me' }, spec: { prompt: 'p', command: ['true'] } },
    })) as EventSubject;
    const node = `deploy-events-${uniqueSuffix()}`;
    const sidecar = await sidecarOfNode(t, node);
    const nodeWhere = { group: GROUP, version: VERSION, plural: AGENT_NODE_PLURAL, name: node };
    const agentNode = (await sidecar.kc
      .makeApiClient(CustomObjectsApi)
      .createClusterCustomObject({ ...nodeWhere, body: { apiVersion: API_VERSION, kind: 'AgentNode', metadata: { name: node } } })) as EventSubject;
    t.after(() => admin.deleteClusterCustomObject(nodeWhere).catch((err: unknown) => assert.equal(apiErrorCode(err), 404)));

    // Warnings the recorder logs (it never throws) are failures here: a 403 would only be logged.
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _enc, done) => (warnings.push(chunk.toString()), done()) }));
    const reason = (identity: Identity) => `From${identity[0]!.toUpperCase()}${identity.slice(1)}`;
    const writers = {
      controller: { kc: as('controller'), subject: agent, instance: 'deploy-test', describe: ['agent', 'describe-me', '-n', ns], namespace: ns },
      // A node reports as itself (reportingInstance), about its own AgentNode (agent-operator-node-events).
      sidecar: { kc: sidecar.kc, subject: agentNode, instance: node, describe: ['agentnode', node], namespace: 'default' },
    };
    for (const identity of IDENTITIES) {
      const w = writers[identity];
      const recorder = new EventRecorder(w.kc, { logger, reportingController: `orchestrator.dev/${identity}`, reportingInstance: w.instance });
      recorder.normal(w.subject, reason(identity), `written by the ${identity} identity`);
      await recorder.flush();
      recorder.normal(w.subject, reason(identity), `written by the ${identity} identity`); // the repeat patches the series
      await recorder.flush();
    }
    assert.deepEqual(warnings, []);

    for (const identity of IDENTITIES) {
      const w = writers[identity];
      const events = await kubeConfig().makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: w.namespace });
      const e = events.items.find((x) => x.reason === reason(identity) && x.regarding?.name === w.subject.metadata?.name);
      assert.equal(e?.series?.count, 2, `${identity}: the repeated event was patched into a series`);
      assert.match(await mustSucceed(['describe', ...w.describe]), new RegExp(`${reason(identity)}\\s.*written by the ${identity} identity`));
    }
  });
});
