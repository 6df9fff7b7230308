/**
 * The local control plane is a real one: RBAC denies until a binding allows, client-certificate
 * users and ServiceAccount tokens authenticate, the controller manager finishes namespace
 * deletion and garbage-collects dependents, and no process outlives the one that started it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, KubeConfig, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { apiErrorCode } from '../../src/dev/apiErrors.js';
import { killLeftovers, pidDir } from '../../src/dev/processes.js';
import { controlPlane, createTestNamespace, kubeConfig, kubectl, uniqueSuffix, waitFor } from '../support/cluster.js';
import { alive, livePids } from '../support/procs.js';

const coreAs = (kubeconfigPath: string) => {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc.makeApiClient(CoreV1Api);
};

/** The HTTP status of a call: 200 when it succeeds. */
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

async function allowReadingConfigMaps(namespace: string, subject: { kind: 'User' | 'Group' | 'ServiceAccount'; name: string }) {
  const rbac = kubeConfig().makeApiClient(RbacAuthorizationV1Api);
  const name = `read-configmaps-${uniqueSuffix()}`;
  await rbac.createNamespacedRole({
    namespace,
    body: { metadata: { name }, rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }] },
  });
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: {
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
      subjects: [subject.kind === 'ServiceAccount' ? { kind: 'ServiceAccount', name: subject.name, namespace } : { kind: subject.kind, name: subject.name, apiGroup: 'rbac.authorization.k8s.io' }],
    },
  });
}

test('the admin kubeconfig is system:masters', async () => {
  const list = await kubeConfig().makeApiClient(CoreV1Api).listNamespace();
  const names = list.items.map((n) => n.metadata?.name);
  assert.ok(names.includes('kube-system'), `kube-system among ${names.join(', ')}`);
  const whoami = await kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.groups}']);
  assert.equal(whoami.exitCode, 0, whoami.stderr);
  assert.match(whoami.stdout, /system:masters/);
});

test('a client-certificate user is forbidden until RBAC allows it, and only where it allows', async (t) => {
  const cp = await controlPlane();
  const ns = await createTestNamespace(t, 'cp-rbac-user');
  const other = await createTestNamespace(t, 'cp-rbac-other');
  const user = `alice-${uniqueSuffix()}`;
  const kubeconfig = await cp.userKubeconfig(user, ['team-a', 'developers']);

  const whoami = await kubectl(['auth', 'whoami', '-o', 'json'], { kubeconfig });
  assert.equal(whoami.exitCode, 0, whoami.stderr);
  const info = (JSON.parse(whoami.stdout) as { status: { userInfo: { username: string; groups: string[] } } }).status.userInfo;
  assert.equal(info.username, user);
  assert.deepEqual(info.groups.filter((g) => g !== 'system:authenticated').sort(), ['developers', 'team-a']);

  const alice = coreAs(kubeconfig);
  assert.equal(await statusOf(() => alice.listNamespacedConfigMap({ namespace: ns })), 403);

  // Bound through a group taken from the certificate's O= field.
  await allowReadingConfigMaps(ns, { kind: 'Group', name: 'team-a' });
  await waitFor(async () => (await statusOf(() => alice.listNamespacedConfigMap({ namespace: ns }))) === 200, {
    what: `${user} to be allowed to list configmaps in ${ns}`,
    timeoutMs: 10_000,
  });
  assert.equal(await statusOf(() => alice.listNamespacedConfigMap({ namespace: other })), 403, 'still forbidden elsewhere');
  assert.equal(await statusOf(() => alice.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'x' } } })), 403, 'still forbidden to write');
});

test('a ServiceAccount token from the TokenRequest API authenticates and is subject to RBAC', async (t) => {
  const cp = await controlPlane();
  const ns = await createTestNamespace(t, 'cp-rbac-sa');
  const kubeconfig = await cp.serviceAccountKubeconfig(ns, 'robot', { expirationSeconds: 600 });

  const whoami = await kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'], { kubeconfig });
  assert.equal(whoami.exitCode, 0, whoami.stderr);
  assert.equal(whoami.stdout, `system:serviceaccount:${ns}:robot`);

  const robot = coreAs(kubeconfig);
  assert.equal(await statusOf(() => robot.listNamespacedConfigMap({ namespace: ns })), 403);
  await allowReadingConfigMaps(ns, { kind: 'ServiceAccount', name: 'robot' });
  await waitFor(async () => (await statusOf(() => robot.listNamespacedConfigMap({ namespace: ns }))) === 200, {
    what: 'the ServiceAccount to be allowed to list configmaps',
    timeoutMs: 10_000,
  });

  // A second token for the same (now existing) account works too.
  const again = await cp.serviceAccountKubeconfig(ns, 'robot');
  assert.equal(await statusOf(() => coreAs(again).listNamespacedConfigMap({ namespace: ns })), 200);
});

test('the controller manager finishes namespace deletion and garbage-collects dependents', async (t) => {
  const cp = await controlPlane();
  assert.ok(cp.hasControllerManager, 'the test control plane must run kube-controller-manager (KUBEBUILDER_ASSETS lacks one? set TEST_ASSET_KUBE_CONTROLLER_MANAGER)');
  const core = kubeConfig().makeApiClient(CoreV1Api);
  const ns = await createTestNamespace(t, 'cp-gc');

  const owner = await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'owner' } } });
  await core.createNamespacedConfigMap({
    namespace: ns,
    body: {
      metadata: {
        name: 'dependent',
        ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata!.uid! }],
      },
    },
  });
  await core.deleteNamespacedConfigMap({ namespace: ns, name: 'owner' });
  await waitFor(async () => (await statusOf(() => core.readNamespacedConfigMap({ namespace: ns, name: 'dependent' }))) === 404, {
    what: 'the dependent ConfigMap to be garbage-collected',
    timeoutMs: 60_000,
  });

  const doomed = await createTestNamespace(t, 'cp-ns-delete');
  await core.createNamespacedConfigMap({ namespace: doomed, body: { metadata: { name: 'content' } } });
  await core.deleteNamespace({ name: doomed });
  await waitFor(async () => (await statusOf(() => core.readNamespace({ name: doomed }))) === 404, {
    what: `namespace ${doomed} to finish terminating`,
    timeoutMs: 60_000,
  });
});

test('killing the process that started a control plane kills the control plane too', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ao-cp-orphan-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const stateDir = join(dir, 'state');
  const module = fileURLToPath(new URL('../../src/dev/controlPlane.js', import.meta.url));
  const script = `import(${JSON.stringify(module)}).then(async (m) => {
    await m.startControlPlane({ stateDir: ${JSON.stringify(stateDir)}, controllerManager: false });
    console.log('READY');
    setInterval(() => {}, 1000);
  }).catch((e) => { console.error(e); process.exit(1); });`;
  const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  t.after(() => {
    parent.kill('SIGKILL');
  });
  let out = '';
  parent.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(() => out.includes('READY'), { what: 'the child control plane to start', timeoutMs: 120_000, intervalMs: 250 });

  const pids = await Promise.all((await readdir(pidDir(stateDir))).map(async (f) => (JSON.parse(await readFile(join(pidDir(stateDir), f), 'utf8')) as { pid: number }).pid));
  assert.equal(pids.length, 2, 'etcd and kube-apiserver recorded');
  assert.equal((await livePids(pids)).length, pids.length, 'both running');
  t.after(async () => {
    for (const pid of await livePids(pids)) process.kill(pid, 'SIGKILL');
  });

  parent.kill('SIGKILL'); // no exit hook can run: only the kernel (PR_SET_PDEATHSIG) or the next start cleans up
  await waitFor(async () => (await livePids(pids)).length === 0, { what: 'the orphaned control plane processes to die', timeoutMs: 15_000 });
});

test('a start kills the leftovers its state dir records, and nothing else', async (t) => {
  const stateDir = await mkdtemp(join(tmpdir(), 'ao-cp-leftover-'));
  t.after(() => rm(stateDir, { recursive: true, force: true }));
  const dir = pidDir(stateDir);
  await mkdir(dir, { recursive: true });

  // A stand-in for a crashed run's server: its command line names the state dir, as ours do.
  const leftover = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300_000)', '--', `--data-dir=${stateDir}/etcd-data`], { stdio: 'ignore' });
  t.after(() => {
    leftover.kill('SIGKILL');
  });
  await waitFor(async () => leftover.pid !== undefined && (await alive(leftover.pid)), { what: 'the stand-in process' });
  await writeFile(join(dir, 'etcd.pid'), JSON.stringify({ pid: leftover.pid, command: process.execPath }));
  // A pid file whose pid now belongs to an unrelated process (pid reuse) must not get it killed.
  await writeFile(join(dir, 'kube-apiserver.pid'), JSON.stringify({ pid: process.pid, command: process.execPath }));

  const killed = await killLeftovers(stateDir, pino({ level: 'silent' }));
  assert.equal(killed, 1);
  await waitFor(async () => !(await alive(leftover.pid!)), { what: 'the leftover to die' });
  assert.ok(await alive(process.pid));
  assert.deepEqual(await readdir(dir), [], 'pid files removed');
});
