/**
 * deploy/'s sidecar DaemonSet as a runc container on this machine, with exactly its pod and
 * container securityContext, capabilities, seccomp profile (the Localhost file deploy/ ships),
 * hostUsers: false and volumes; what the kubelet and the runtime would provide on a node, this
 * provides the same way:
 *
 *   root filesystem   a read-only bind of this machine's `/` (the built dist/ and node on it) in
 *                     place of the image: runc from Debian refuses `/` itself at pivot_root;
 *   user namespace    container ids 0..65535 onto a host range of their own (the kubelet's
 *                     allocation); the hostPath directories are owned by the mapped root, which
 *                     is what the kubelet's idmapped mounts show the pod (runc 1.1 has none);
 *   ServiceAccount    a token of the DaemonSet's ServiceAccount at the path the kubelet mounts it,
 *                     and KUBERNETES_SERVICE_HOST/PORT;
 *   cgroup            the container's cgroup v2 directory, created before runc runs and owned by
 *                     the mapped root (the delegation runc's systemd driver does on cgroup v2,
 *                     CRI-O's cgroup2-mount-hierarchy-rw), bound read-write where the sidecar
 *                     finds its cgroup2 mount. On this hybrid host runc itself mounts only the v1
 *                     controllers.
 *   network           the host's (the control plane is on 127.0.0.1): ports moved to free ones.
 */
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { V1Container, V1PodSecurityContext, V1Volume } from '@kubernetes/client-node';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { parse as parseYaml } from 'yaml';
import type { ControlPlaneClient } from '../../src/dev/controlPlane.js';
import { ociSpec, type BindMount, type OciSpec } from '../../src/dev/ociSpec.js';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { freePorts } from '../../src/dev/ports.js';
import { startContainer, type RunningContainer } from '../../src/dev/runc.js';
import { ensureNodeObject, OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT } from '../../src/dev/stack.js';
import { cgroup2Mount, defaultAgentsCgroupName, removeAgentCgroups } from '../../src/sidecar/runtime/cgroup.js';
import { kubeConfig } from './cluster.js';
import { baseObjects, findObject, withLoopbackPorts, type Workload } from './deployManifests.js';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** The kubelet's seccomp root, laid out as deploy/ ships it (`<root>/<localhostProfile>`). */
export const SECCOMP_ROOT = join(PACKAGE_ROOT, 'deploy', 'seccomp');
const USERNS_SIZE = 65_536;
/** Files of a delegated cgroup v2 directory (runc's and crun's list; the kernel's /sys/kernel/cgroup/delegate). */
const DELEGATED_FILES = ['cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads'];

export interface SidecarContainer {
  ctr: RunningContainer;
  spec: OciSpec;
  notApplied: string[];
  nodeName: string;
  /** Host uid of the container's root (its uid 0). */
  hostRoot: number;
  /** The hostPath directories as this machine holds them, by the DaemonSet's path. */
  hostPaths: Record<string, string>;
  /** The container's cgroup v2 directory on the host. */
  cgroupDir: string;
  tokenFile: string;
  healthUrl: string;
  /** The container paths of the DaemonSet's volumes, by its hostPath (root, archive). */
  paths: { root: string; archive: string };
  /** Where a path of the container's hostPath volumes lies on this machine. */
  onHost(containerPath: string): string;
  remove(): Promise<void>;
}

/** Whether something is mounted on `path` (a bind of the same filesystem included). */
async function isMountPoint(path: string): Promise<boolean> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  return mountinfo.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Creates `dir` (and what is missing above it) and returns the topmost directory created, to remove later. */
async function createMountPoint(dir: string): Promise<string | undefined> {
  let top: string | undefined;
  for (let d = dir; !existsSync(d); d = dirname(d)) top = d;
  await mkdir(dir, { recursive: true });
  return top;
}

/** `withoutCapabilities`: deploy/'s capabilities less these (as the manifest spells them: KILL). */
export async function startSidecarContainer(o: { cp: ControlPlaneClient; nodeName: string; logger: Logger; id: string; withoutCapabilities?: readonly string[] }): Promise<SidecarContainer> {
  const ds = findObject<Workload>(baseObjects(), 'DaemonSet', 'agent-operator-sidecar');
  const podSpec = ds.spec.template.spec as unknown as { hostUsers?: boolean; securityContext?: V1PodSecurityContext; volumes?: V1Volume[]; containers: V1Container[] };
  const declared = podSpec.containers[0]!;
  const sc = declared.securityContext ?? {};
  // deploy/'s container, less the capabilities a test takes away.
  const container: V1Container = o.withoutCapabilities?.length
    ? { ...declared, securityContext: { ...sc, capabilities: { ...sc.capabilities, add: (sc.capabilities?.add ?? []).filter((c) => !o.withoutCapabilities!.includes(c)) } } }
    : declared;
  const cleanups: (() => Promise<unknown>)[] = [];
  const remove = async () => {
    for (const c of cleanups.reverse()) await c().catch((err: unknown) => o.logger.warn({ err }, 'sidecar container cleanup step failed'));
  };
  try {
    // Not under the test run's TMPDIR (0700): the container's root, a uid of its own, opens the
    // bundle's paths, so every directory above them must let others pass.
    const dir = await mkdtemp('/tmp/ao-sidecar-oci-');
    // Never recursively into the machine's `/`: the directory is removed only once nothing is
    // mounted on its rootfs (and that mount is read-only besides).
    cleanups.push(async () => {
      if (await isMountPoint(join(dir, 'rootfs'))) throw new Error(`${dir}/rootfs is still mounted; ${dir} left in place`);
      await rm(dir, { recursive: true, force: true });
    });
    await chmod(dir, 0o711);
    // A host range of 65536 ids of this run's own, well above every other uid on the machine.
    const hostRoot = 2_000_000_000 + (process.pid % 16_384) * USERNS_SIZE;
    const own = (p: string) => chown(p, hostRoot, hostRoot);

    const rootfs = join(dir, 'rootfs');
    await mkdir(rootfs);
    // Mount points the bundle needs on the read-only root (this machine's `/`), made beforehand.
    const mountPoints = [...(container.volumeMounts ?? []).map((m) => m.mountPath), SERVICE_ACCOUNT_DIR];
    for (const m of mountPoints) {
      const created = await createMountPoint(m);
      if (created) cleanups.push(() => rm(created, { recursive: true, force: true }));
    }
    await execa('mount', ['--bind', '/', rootfs], { timeout: 30_000 });
    cleanups.push(() => execa('umount', [rootfs], { timeout: 30_000 }));
    await execa('mount', ['-o', 'remount,bind,ro', rootfs], { timeout: 30_000 });

    const hostPaths: Record<string, string> = {};
    for (const v of podSpec.volumes ?? []) {
      if (!v.hostPath) continue;
      const path = join(dir, 'host', v.hostPath.path);
      await mkdir(path, { recursive: true, mode: 0o755 });
      await own(path);
      hostPaths[v.hostPath.path] = path;
    }

    // The ServiceAccount token, as the kubelet projects it (0600, the pod's root), and its CA.
    const kc = parseYaml(
      await readFile(await o.cp.serviceAccountKubeconfig(OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT, { expirationSeconds: 3600, boundTo: await ensureNodeObject(kubeConfig(), o.nodeName) }), 'utf8'),
    ) as {
      clusters: { cluster: { server: string; 'certificate-authority'?: string; 'certificate-authority-data'?: string } }[];
      users: { user: { token: string } }[];
    };
    const cluster = kc.clusters[0]!.cluster;
    const sa = join(dir, 'serviceaccount');
    await mkdir(sa);
    const tokenFile = join(sa, 'token');
    await writeFile(tokenFile, kc.users[0]!.user.token, { mode: 0o600 });
    const ca = cluster['certificate-authority-data'] ? Buffer.from(cluster['certificate-authority-data'], 'base64') : await readFile(cluster['certificate-authority']!);
    await writeFile(join(sa, 'ca.crt'), ca, { mode: 0o644 });
    await writeFile(join(sa, 'namespace'), OPERATOR_NAMESPACE, { mode: 0o644 });
    for (const f of ['', 'token', 'ca.crt', 'namespace']) await own(join(sa, f));
    const server = new URL(cluster.server);

    // The container's cgroup, delegated to its root before runc joins it.
    const unified = cgroup2Mount(await readFile('/proc/self/mountinfo', 'utf8'));
    if (!unified) throw new Error('no cgroup v2 hierarchy on this machine');
    const cgroupsPath = `/agent-operator-test/${o.id}`;
    const cgroupDir = join(unified, cgroupsPath);
    await mkdir(cgroupDir, { recursive: true });
    for (const f of ['', ...DELEGATED_FILES]) await own(join(cgroupDir, f));
    cleanups.push(async () => {
      await removeAgentCgroups(join(cgroupDir, defaultAgentsCgroupName(o.nodeName)));
      await rmdir(cgroupDir).catch(() => undefined);
      await rmdir(dirname(cgroupDir)).catch(() => undefined);
      // runc made the path in every cgroup v1 hierarchy too (a hybrid machine); it removes its leaf, not the parent.
      for (const c of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) await rmdir(join('/sys/fs/cgroup', c, dirname(cgroupsPath))).catch(() => undefined);
    });

    const [metricsPort, probePort] = await freePorts(2);
    const args = withLoopbackPorts(container.args ?? [], metricsPort!, probePort!);
    const mounts: BindMount[] = [
      { source: sa, destination: SERVICE_ACCOUNT_DIR, readOnly: true },
      { source: cgroupDir, destination: unified, readOnly: false },
    ];
    const { spec, notApplied } = ociSpec({
      // The image's entrypoint, on this machine: node and the built CLI.
      image: {
        Entrypoint: [process.execPath, join(PACKAGE_ROOT, 'dist', 'src', 'cli.js')],
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NODE_ENV=production'],
        WorkingDir: '/',
      },
      rootfs,
      hostname: o.nodeName,
      pod: podSpec.securityContext ?? {},
      hostUsers: podSpec.hostUsers ?? true,
      container: { ...container, args, env: [...(container.env ?? []), { name: 'KUBERNETES_SERVICE_HOST', value: server.hostname }, { name: 'KUBERNETES_SERVICE_PORT', value: server.port }] },
      volumes: podSpec.volumes ?? [],
      resolvedEnv: { NODE_NAME: o.nodeName },
      mounts,
      hostPaths,
      userNamespace: { hostId: hostRoot, size: USERNS_SIZE },
      seccompRoot: SECCOMP_ROOT,
      cgroupsPath,
    });
    const ctr = await startContainer(o.id, spec, o.logger);
    cleanups.push(() => ctr.remove());
    const mountOf = (hostPath: string) => (container.volumeMounts ?? []).find((m) => podSpec.volumes?.find((v) => v.name === m.name)?.hostPath?.path === hostPath)!.mountPath;
    const [rootPath, archivePath] = Object.keys(hostPaths);
    return {
      ctr,
      spec,
      notApplied,
      nodeName: o.nodeName,
      hostRoot,
      hostPaths,
      cgroupDir,
      tokenFile,
      healthUrl: `http://127.0.0.1:${probePort}`,
      paths: { root: mountOf(rootPath!), archive: mountOf(archivePath!) },
      onHost: (p) => {
        for (const hp of [rootPath!, archivePath!]) {
          const m = mountOf(hp);
          if (p === m || p.startsWith(`${m}/`)) return join(hostPaths[hp]!, p.slice(m.length));
        }
        throw new Error(`${p} is on no hostPath volume of the sidecar`);
      },
      remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}
