/**
 * The production image as `npm run image` builds it (buildah, no Docker engine; built here when
 * buildah's storage lacks it, which is how CI gets it on a fresh machine): read from its root
 * filesystem, and run in runc with the securityContext deploy/ gives the controller, against the
 * run's control plane, with a node sidecar from the local stack running the Agent.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CoordinationV1Api, type V1Container, type V1Volume } from '@kubernetes/client-node';
import { execa } from 'execa';
import { pino } from 'pino';
import { BUILD_CA_PATH, BUILD_NPMRC_PATH, HOST_CA_BUNDLE, buildImage, mountImage, type BuiltImage, type MountedImage } from '../../src/dev/image.js';
import { ociSpec } from '../../src/dev/ociSpec.js';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { freePorts } from '../../src/dev/ports.js';
import { runContainer, startContainer } from '../../src/dev/runc.js';
import { CONTROLLER_SERVICE_ACCOUNT, OPERATOR_NAMESPACE } from '../../src/dev/stack.js';
import { controlPlane, createTestNamespace, kubeConfig, uniqueSuffix, waitFor } from '../support/cluster.js';
import { CONTROLLER, baseObjects, findObject, withLoopbackPorts, type Workload } from '../support/deployManifests.js';
import { assertProductionDependenciesOnly, entrypointOf, parseStages, workdirOf } from '../support/dockerfile.js';
import { agents, assertNothingLeft, createAgent, useStack, waitForCleanedUp, waitForGone } from '../support/stack.js';

/** Cold (no base, no layers): about 2.5 min on the 2-core machine; warm: seconds. */
const BUILD_TIMEOUT_MS = 30 * 60_000;
const KUBECONFIG_IN_CONTAINER = '/etc/agent-operator/kubeconfig';

const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));
const runtime = parseStages(readFileSync(join(PACKAGE_ROOT, 'Dockerfile'), 'utf8')).at(-1)!;

/** The PEM certificates of a bundle, whitespace-normalized. */
function certificates(pem: string): string[] {
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)].map((m) => m[0].replace(/\s+/g, ''));
}

/** Fields of /proc/<pid>/status. */
function procStatus(pid: number): Record<string, string> {
  return Object.fromEntries(
    readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .map((l) => l.split(':\t'))
      .filter((kv) => kv.length === 2)
      .map(([k, v]) => [k!, v!.trim()]),
  );
}

describe('the production image', () => {
  const stack = useStack('image', { controllers: 0, nodes: 1 });
  let built: BuiltImage;
  let image: MountedImage | undefined;

  before(
    async () => {
      built = await buildImage({ logger, timeoutMs: BUILD_TIMEOUT_MS });
      image = await mountImage(built.image, `agent-operator-image-test-${uniqueSuffix()}`);
    },
    { timeout: BUILD_TIMEOUT_MS + 5 * 60_000 },
  );
  after(() => image?.release());
  const mounted = () => image!;

  it('is the Dockerfile built on the stand-in base, as its runtime stage declares', (t) => {
    t.diagnostic(`image ${built.image} ${built.id.slice(0, 12)}: ${Math.round(built.sizeBytes / 1e6)} MB uncompressed; base ${built.base.name} (${built.base.source}); ${built.seconds.toFixed(1)} s`);
    const c = mounted().config;
    assert.deepEqual(c.Entrypoint, entrypointOf(runtime));
    assert.deepEqual(c.Cmd, JSON.parse(runtime.instructions.filter((i) => i.keyword === 'CMD').at(-1)!.args));
    assert.equal(c.WorkingDir, workdirOf(runtime));
    assert.equal(c.User, '65532:65532');
    assert.ok(c.Env?.includes('NODE_ENV=production'));
    const root = mounted().rootfs;
    for (const bin of ['usr/local/bin/node', 'usr/bin/tini', 'usr/bin/tmux', 'usr/bin/ps']) assert.ok(existsSync(join(root, bin)), `/${bin} is in the image`);
    assert.ok(existsSync(join(root, 'app/dist/src/cli.js')));
    assert.ok(existsSync(join(root, 'app/crds')));
  });

  it('holds production dependencies only', () => {
    assertProductionDependenciesOnly(join(mounted().rootfs, workdirOf(runtime)));
    for (const path of ['app/src', 'app/tsconfig.json', 'app/dist/test']) assert.ok(!existsSync(join(mounted().rootfs, path)), `/${path} is not in the runtime`);
  });

  it('carries nothing of the host: no host-only CA certificate anywhere, no npmrc', async (t) => {
    const root = mounted().rootfs;
    // buildah 1.28 leaves the mount points of --volume behind, empty; they must stay empty.
    for (const path of [BUILD_CA_PATH, BUILD_NPMRC_PATH]) {
      const full = join(root, path);
      if (existsSync(full)) assert.equal(statSync(full).size, 0, `${path} in the image holds data`);
    }
    const imageCerts = new Set(certificates(readFileSync(join(root, 'etc/ssl/certs/ca-certificates.crt'), 'utf8')));
    // Certificates the host trusts beyond Debian's set: a TLS-intercepting proxy's CA, local CAs.
    const hostOnly = certificates(readFileSync(HOST_CA_BUNDLE, 'utf8')).filter((c) => !imageCerts.has(c));
    t.diagnostic(`${hostOnly.length} host-only CA certificates looked for`);
    if (hostOnly.length === 0) return;
    // A line of each certificate's body, searched for in every file of the image.
    const lines = hostOnly.map((c) => c.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').slice(64, 128));
    const patterns = join(await mkdtemp(join(tmpdir(), 'host-ca-')), 'patterns');
    t.after(() => rm(join(patterns, '..'), { recursive: true, force: true }));
    await writeFile(patterns, lines.join('\n'));
    const grep = await execa('grep', ['-rlF', '-f', patterns, root], { timeout: 120_000, reject: false });
    assert.equal(grep.exitCode, 1, `host CA certificates found in the image: ${grep.stdout}${grep.stderr}`);
  });

  it("runs its entrypoint as the image's user (65532)", async () => {
    const config = mounted().config;
    const oci = (container: V1Container) => ociSpec({ image: config, rootfs: mounted().rootfs, hostname: 'cli', container }).spec;
    const help = await runContainer(`ao-cli-${uniqueSuffix()}`, oci({ name: 'cli' }), logger);
    assert.equal(help.exitCode, 0, help.stderr);
    assert.match(help.stdout, /Usage: agent-operator/);
    // The entrypoint's own node, under tini, as the image's default user.
    const entry = config.Entrypoint!;
    const ids = await runContainer(
      `ao-id-${uniqueSuffix()}`,
      oci({ name: 'id', command: [...entry.slice(0, entry.indexOf('node') + 1), '-e', 'console.log(process.getuid(), process.getgid())'] }),
      logger,
    );
    assert.equal(ids.exitCode, 0, ids.stderr);
    assert.equal(ids.stdout.trim(), '65532 65532');
  });

  it("runs the controller with the Deployment's securityContext: it leads, reconciles an Agent and answers its probes", async (t) => {
    const deployment = findObject<Workload>(baseObjects(), CONTROLLER.kind, CONTROLLER.name);
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0]! as unknown as V1Container;
    const [metricsPort, probePort] = await freePorts(2);
    const args = withLoopbackPorts(container.args ?? [], metricsPort!, probePort!);
    assert.notDeepEqual(args, container.args, 'the Deployment sets the bind addresses this test moves to free ports');

    // The controller's ServiceAccount token (a self-contained kubeconfig), readable by uid 65532.
    const cp = await controlPlane();
    const dir = await mkdtemp(join(tmpdir(), 'controller-kubeconfig-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const kubeconfig = join(dir, 'kubeconfig');
    await copyFile(await cp.serviceAccountKubeconfig(OPERATOR_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT, { expirationSeconds: 3600 }), kubeconfig);
    await chmod(kubeconfig, 0o444);

    const id = `agent-operator-controller-${uniqueSuffix()}`;
    const { spec, notApplied } = ociSpec({
      image: mounted().config,
      rootfs: mounted().rootfs,
      hostname: id,
      pod: pod.securityContext,
      container: { ...container, args: [...args, `--kubeconfig=${KUBECONFIG_IN_CONTAINER}`] },
      volumes: pod.volumes as V1Volume[],
      resolvedEnv: { POD_NAMESPACE: OPERATOR_NAMESPACE },
      mounts: [{ source: kubeconfig, destination: KUBECONFIG_IN_CONTAINER, readOnly: true }],
    });
    t.diagnostic(`not reproduced in runc: ${notApplied.join('; ') || 'nothing'}`);
    assert.deepEqual(notApplied, ['pod securityContext.seccompProfile: {"type":"RuntimeDefault"}']);
    const ctr = await startContainer(id, spec, logger);
    t.after(() => ctr.remove());
    const probe = async (path: string) => {
      if (!ctr.runc.running()) throw new Error(`the controller container exited:\n${ctr.runc.logTail()}`);
      return (await fetch(`http://127.0.0.1:${probePort}${path}`, { signal: AbortSignal.timeout(2000) })).status === 200;
    };
    for (const path of [container.livenessProbe!.httpGet!.path!, container.readinessProbe!.httpGet!.path!]) {
      await waitFor(() => probe(path), { timeoutMs: 90_000, what: `the controller in runc to answer ${path}` });
    }

    // What the kernel holds for the container's init (tini, the entrypoint): the securityContext.
    const status = procStatus(await ctr.initPid());
    assert.equal(status.Uid, '65532\t65532\t65532\t65532');
    assert.equal(status.Gid, '65532\t65532\t65532\t65532');
    assert.equal(status.NoNewPrivs, '1');
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(status[set], '0000000000000000', `${set} is empty (drop: [ALL])`);
    const write = (path: string) => `try { require('fs').writeFileSync('${path}', 'x'); console.log('written') } catch (e) { console.log(e.code) }`;
    assert.equal((await ctr.exec(['node', '-e', write('/app/probe')])).stdout.trim(), 'EROFS', 'the root filesystem is read-only');
    assert.equal((await ctr.exec(['node', '-e', write('/tmp/probe')])).stdout.trim(), 'written', '/tmp (the emptyDir) is writable');

    const leases = kubeConfig().makeApiClient(CoordinationV1Api);
    const leaseName = args.find((a) => a.startsWith('--leader-election-id='))!.split('=')[1]!;
    // A previous file's controller may hold the Lease until it expires (15 s).
    await waitFor(
      async () => {
        if (!ctr.runc.running()) throw new Error(`the controller container exited:\n${ctr.runc.logTail()}`);
        const lease = await leases.readNamespacedLease({ namespace: OPERATOR_NAMESPACE, name: leaseName });
        return lease.spec?.holderIdentity?.startsWith(`${id}_`);
      },
      { timeoutMs: 60_000, what: `the controller in runc (${id}) to hold the Lease ${leaseName}` },
    );

    const ns = await createTestNamespace(t, 'image');
    await createAgent(ns, 'in-image', { command: ['sh', '-c', 'echo from the image controller'] });
    const done = await waitForCleanedUp(ns, 'in-image');
    assert.equal(done.status?.phase, 'Completed', JSON.stringify(done.status));
    assert.equal(done.status?.nodeName, stack().nodes[0]!.name);
    await assertNothingLeft(stack(), done);
    // Deleted while the controller still runs: it releases the cleanup finalizer.
    await agents().delete({ namespace: ns, name: 'in-image' });
    await waitForGone(ns, 'in-image');
  });
});
