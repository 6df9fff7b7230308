/** Where the control-plane binaries come from (envtest conventions, then the cache). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { acquireLock, BINARY_NAMES, buildSteps, cacheDirFor, formatElapsed, fromEnvironment, readVersions, requiredVersion } from '../../src/dev/binaries.js';
import { kstatusPath } from '../../src/dev/kstatus.js';

const only = (paths: string[]) => (p: string) => paths.includes(p);

test('fromEnvironment: KUBEBUILDER_ASSETS first, then TEST_ASSET_* per binary', () => {
  const cases: {
    name: string;
    env: NodeJS.ProcessEnv;
    executables: string[];
    want: Record<string, string>;
  }[] = [
    { name: 'nothing set', env: {}, executables: ['/a/etcd'], want: {} },
    {
      name: 'envtest dir without a controller manager',
      env: { KUBEBUILDER_ASSETS: '/a' },
      executables: ['/a/etcd', '/a/kube-apiserver', '/a/kubectl'],
      want: { etcd: '/a/etcd', 'kube-apiserver': '/a/kube-apiserver', kubectl: '/a/kubectl' },
    },
    {
      name: 'assets dir wins over an individual variable',
      env: { KUBEBUILDER_ASSETS: '/a', TEST_ASSET_ETCD: '/b/etcd' },
      executables: ['/a/etcd', '/b/etcd'],
      want: { etcd: '/a/etcd' },
    },
    {
      name: 'individual variables fill what the dir lacks',
      env: { KUBEBUILDER_ASSETS: '/a', TEST_ASSET_KUBE_CONTROLLER_MANAGER: '/b/kcm', TEST_ASSET_KUBECTL: '/b/kubectl' },
      executables: ['/a/kubectl', '/b/kcm', '/b/kubectl'],
      want: { 'kube-controller-manager': '/b/kcm', kubectl: '/a/kubectl' },
    },
    {
      name: 'a variable naming no executable is ignored',
      env: { TEST_ASSET_KUBE_APISERVER: '/nope' },
      executables: [],
      want: {},
    },
  ];
  for (const c of cases) {
    const found = fromEnvironment(c.env, only(c.executables));
    const paths = Object.fromEntries(Object.entries(found).map(([k, v]) => [k, v.path]));
    assert.deepEqual(paths, c.want, c.name);
  }
});

test('versions come from the wrapper go.mod files', async () => {
  const v = readVersions();
  assert.match(v.kubernetes, /^v1\.\d+\.\d+$/);
  assert.match(v.etcd, /^v3\.\d+\.\d+$/);
  assert.equal(cacheDirFor(v, { XDG_CACHE_HOME: '/x' }), `/x/agent-operator/k8s/${v.kubernetes}-etcd${v.etcd.slice(1)}`);

  const dir = await mkdtemp(join(tmpdir(), 'gomod-'));
  try {
    const mod = join(dir, 'go.mod');
    await writeFile(mod, 'module x\n\nrequire (\n\tk8s.io/kubernetes v1.2.3 // pinned\n\tk8s.io/kubernetes-other v9.9.9\n)\n');
    assert.equal(requiredVersion(mod, 'k8s.io/kubernetes'), 'v1.2.3');
    assert.throws(() => requiredVersion(mod, 'go.etcd.io/etcd/server/v3'), /does not require/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the build lock: exclusive, waits for a live holder, takes over from a dead one', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'build.lock');
  const logger = pino({ level: 'silent' });
  const soon = () => Date.now() + 5_000;

  const lock = await acquireLock(path, { deadline: soon(), done: () => false, logger });
  assert.ok(lock);
  assert.equal(await readFile(path, 'utf8'), String(process.pid));
  // Held by a live process (this one): a second builder waits until the result exists...
  let checks = 0;
  assert.equal(await acquireLock(path, { deadline: soon(), done: () => ++checks > 2, logger, pollMs: 10 }), undefined);
  // ...or until its deadline.
  await assert.rejects(acquireLock(path, { deadline: Date.now(), done: () => false, logger }), /timed out waiting for process/);
  await lock.release();
  assert.equal(existsSync(path), false);

  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  await writeFile(path, dead);
  const taken = await acquireLock(path, { deadline: soon(), done: () => false, logger });
  assert.ok(taken, 'a lock whose holder is dead is taken over');
  assert.equal(await readFile(path, 'utf8'), String(process.pid));
  await taken.release();
});

test('the kstatus check is cached per cli-utils version, as pinned by hack/kstatus/go.mod', () => {
  assert.match(kstatusPath({ XDG_CACHE_HOME: '/x' }), /^\/x\/agent-operator\/kstatus\/cli-utils-v0\.\d+\.\d+\/kstatus$/);
});

test('buildSteps: one go build per binary, in BINARY_NAMES order, each writing only its own output', () => {
  const versions = { kubernetes: 'v1.35.4', etcd: 'v3.6.16' };
  const steps = buildSteps(versions, '/hack', '/out');
  assert.deepEqual(
    steps.map((s) => s.name),
    [...BINARY_NAMES],
  );
  for (const s of steps) {
    const o = s.args.indexOf('-o');
    assert.equal(s.args[o + 1], `/out/${s.name}`, `${s.name} writes its own file`);
    assert.equal(s.args.filter((a) => a === '-o').length, 1);
    assert.ok(s.what.startsWith(s.name), `progress names ${s.name}: ${s.what}`);
  }
  assert.equal(steps[0]?.cwd, '/hack/etcd');
  assert.ok(steps.slice(1).every((s) => s.cwd === '/hack/kubernetes' && s.args.at(-1) === `k8s.io/kubernetes/cmd/${s.name}`));
  assert.ok(steps.slice(1).every((s) => s.args.some((a) => a.includes('version.gitVersion=v1.35.4') && a.includes('version.gitMinor=35'))));
});

test('formatElapsed: seconds under a minute, then minutes and two-digit seconds', () => {
  const cases: [number, string][] = [
    [0, '0s'],
    [1_499, '1s'],
    [59_400, '59s'],
    [60_000, '1m00s'],
    [605_000, '10m05s'],
  ];
  for (const [ms, want] of cases) assert.equal(formatElapsed(ms), want, `${ms} ms`);
});
