/**
 * A Pod's container as an OCI runtime spec (config.json), the way the kubelet and containerd turn
 * one into the other, for running the image's root filesystem in runc with exactly the security
 * settings deploy/ declares. Pure: the caller supplies the image config, the pod and container
 * specs, and what the kubelet would resolve (downward-API env, extra mounts).
 *
 * Host network (no network namespace), so the container reaches a control plane on 127.0.0.1.
 * Settings this does not reproduce are returned in `notApplied`, never silently dropped.
 *
 * What the kubelet would resolve on a node, the caller supplies: the host ids of a user-namespaced
 * pod (`hostUsers: false`), where each hostPath lies, the kubelet's seccomp root (Localhost
 * profiles), the values of downward-API env, extra mounts (the ServiceAccount token, a cgroup).
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join, normalize } from 'node:path';
import type { V1Container, V1PodSecurityContext, V1SeccompProfile, V1Volume } from '@kubernetes/client-node';
import { expandArgs } from '../sidecar/runtime/expand.js';

/** The runnable part of an OCI image config (buildah inspect's OCIv1.config). */
export interface ImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
}

export interface BindMount {
  source: string;
  destination: string;
  readOnly: boolean;
}

export interface ContainerInput {
  image: ImageConfig;
  rootfs: string;
  hostname: string;
  pod?: V1PodSecurityContext;
  container: V1Container;
  volumes?: V1Volume[];
  /** Values of env vars the container takes from the downward API (valueFrom), by name. */
  resolvedEnv?: Record<string, string>;
  mounts?: BindMount[];
  /** The pod's spec.hostUsers (false: a user namespace of its own). */
  hostUsers?: boolean;
  /** `hostUsers: false`: the host ids container ids 0..size-1 map to (the kubelet allocates them). */
  userNamespace?: { hostId: number; size: number };
  /** Where each hostPath volume's path lies on this machine (a test cannot use the node's own paths). */
  hostPaths?: Record<string, string>;
  /** The kubelet's seccomp root: Localhost profiles are `<root>/<localhostProfile>`. */
  seccompRoot?: string;
  /** The linux.cgroupsPath runc creates the container's cgroup at. */
  cgroupsPath?: string;
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface OciSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: Record<'bounding' | 'effective' | 'permitted' | 'inheritable' | 'ambient', string[]>;
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: {
    namespaces: { type: string }[];
    uidMappings?: IdMapping[];
    gidMappings?: IdMapping[];
    cgroupsPath?: string;
    seccomp?: OciSeccomp;
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

export interface IdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

interface SeccompRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
}

export interface OciSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: SeccompRule[];
}

/** A Localhost seccomp profile as the kubelet passes it on (Docker's format: archMap, includes/excludes). */
interface SeccompProfileFile {
  defaultAction: string;
  defaultErrnoRet?: number;
  archMap?: { architecture: string; subArchitectures?: string[] }[];
  syscalls?: (SeccompRule & { includes?: SeccompCondition; excludes?: SeccompCondition })[];
}

interface SeccompCondition {
  caps?: string[];
  arches?: string[];
  minKernel?: string;
}

/** libseccomp's name of each Go architecture. */
const SCMP_ARCH: Record<string, string> = {
  amd64: 'SCMP_ARCH_X86_64',
  arm64: 'SCMP_ARCH_AARCH64',
  '386': 'SCMP_ARCH_X86',
  arm: 'SCMP_ARCH_ARM',
  s390x: 'SCMP_ARCH_S390X',
  ppc64le: 'SCMP_ARCH_PPC64LE',
};

/** Node's process.arch as the Go architecture names seccomp profiles use. */
const GO_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', ia32: '386', arm: 'arm', s390x: 's390x', ppc64: 'ppc64le' };

/**
 * A Docker-format seccomp profile as containerd and CRI-O load it for a container (pure): a rule
 * applies when its `includes` hold and its `excludes` do not, judged against the container's
 * capabilities and the machine's architecture.
 */
export function seccompForContainer(profile: SeccompProfileFile, caps: readonly string[], arch: string = GO_ARCH[process.arch] ?? process.arch): OciSeccomp {
  const holds = (c: SeccompCondition | undefined, ifEmpty: boolean) => {
    if (!c || (!c.caps?.length && !c.arches?.length)) return ifEmpty;
    if (c.minKernel) throw new Error(`seccomp: minKernel conditions are not supported (${c.minKernel})`);
    return (c.caps ?? []).every((cap) => caps.includes(cap)) && (c.arches?.length ? c.arches.includes(arch) : true);
  };
  const syscalls = (profile.syscalls ?? [])
    .filter((r) => holds(r.includes, true) && !holds(r.excludes, false))
    .map(({ includes: _i, excludes: _e, ...rule }) => ({ ...rule, ...(rule.args?.length ? {} : { args: undefined }) }))
    .map((rule) => JSON.parse(JSON.stringify(rule)) as SeccompRule);
  return {
    defaultAction: profile.defaultAction,
    ...(profile.defaultErrnoRet !== undefined ? { defaultErrnoRet: profile.defaultErrnoRet } : {}),
    // Only the machine's own architecture and its sub-architectures, as containerd picks them.
    architectures: (profile.archMap ?? []).filter((a) => a.architecture === SCMP_ARCH[arch]).flatMap((a) => [a.architecture, ...(a.subArchitectures ?? [])]),
    syscalls,
  };
}

/** The profile a Localhost seccompProfile names, read from the kubelet's seccomp root. */
export function loadLocalhostProfile(root: string, profile: string): SeccompProfileFile {
  if (isAbsolute(profile) || normalize(profile).startsWith('..')) throw new Error(`seccompProfile.localhostProfile '${profile}' must be a relative path under the kubelet's seccomp root`);
  const text = readFileSync(join(root, profile), 'utf8');
  const parsed = JSON.parse(text) as SeccompProfileFile;
  if (typeof parsed.defaultAction !== 'string') throw new Error(`seccomp profile ${profile}: no defaultAction`);
  return parsed;
}

/** containerd's default capability set, what a container gets before its securityContext drops or adds. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

const BINARY_SUFFIX: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
const DECIMAL_SUFFIX: Record<string, number> = { '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12 };

/** A Kubernetes quantity of bytes ("64Mi", "1G", "1024"). */
export function parseBytes(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q.trim());
  if (!m) throw new Error(`'${q}' is not a byte quantity (e.g. 64Mi)`);
  return Math.round(Number(m[1]) * (BINARY_SUFFIX[m[2] ?? ''] ?? DECIMAL_SUFFIX[m[2] ?? '']!));
}

/** The image's USER as uid/gid: numeric only (a name would need the image's /etc/passwd). */
export function imageUser(user: string | undefined): { uid: number; gid: number | undefined } {
  if (!user) return { uid: 0, gid: undefined };
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m) throw new Error(`image USER '${user}' is not numeric (uid[:gid])`);
  return { uid: Number(m[1]), gid: m[2] === undefined ? undefined : Number(m[2]) };
}

const normalizeCap = (c: string) => (c.toUpperCase() === 'ALL' ? 'ALL' : `CAP_${c.toUpperCase().replace(/^CAP_/, '')}`);

/** The capability set after the securityContext's drop, then add (the kubelet's order). */
export function capabilitiesAfter(drop: string[] = [], add: string[] = []): string[] {
  const dropped = drop.map(normalizeCap);
  const kept = dropped.includes('ALL') ? [] : DEFAULT_CAPABILITIES.filter((c) => !dropped.includes(c));
  const added = add.map(normalizeCap);
  if (added.includes('ALL')) throw new Error('capabilities.add: ALL is not supported here');
  return [...new Set([...kept, ...added])];
}

const HANDLED_POD = new Set(['runAsUser', 'runAsGroup', 'runAsNonRoot', 'supplementalGroups', 'seccompProfile']);
const HANDLED_CONTAINER = new Set(['runAsUser', 'runAsGroup', 'runAsNonRoot', 'allowPrivilegeEscalation', 'readOnlyRootFilesystem', 'capabilities', 'privileged', 'procMount', 'seccompProfile']);

/** The seccomp filter for a seccompProfile (Localhost: the file's rules for these capabilities); undefined for none. */
function seccompOf(p: V1SeccompProfile | undefined, caps: readonly string[], root: string | undefined): OciSeccomp | undefined {
  if (!p || p.type === 'Unconfined') return undefined;
  if (p.type !== 'Localhost') throw new Error(`seccompProfile type ${p.type} is not applied here`);
  if (!p.localhostProfile) throw new Error('seccompProfile type Localhost needs localhostProfile');
  if (!root) throw new Error(`seccompProfile Localhost '${p.localhostProfile}': no seccomp root given`);
  return seccompForContainer(loadLocalhostProfile(root, p.localhostProfile), caps);
}

export function ociSpec(i: ContainerInput): { spec: OciSpec; notApplied: string[] } {
  const pod = i.pod ?? {};
  const sc = i.container.securityContext ?? {};
  // The container's profile wins over the pod's. RuntimeDefault is the runtime's own (containerd's
  // and CRI-O's differ): not reproduced, and reported as such.
  const seccompProfile = sc.seccompProfile ?? pod.seccompProfile;
  const runtimeDefault = seccompProfile?.type === 'RuntimeDefault';
  const notApplied = [
    ...(runtimeDefault ? [`${sc.seccompProfile ? 'container' : 'pod'} securityContext.seccompProfile: ${JSON.stringify(seccompProfile)}`] : []),
    ...Object.keys(pod)
      .filter((k) => !HANDLED_POD.has(k) && pod[k as keyof V1PodSecurityContext] !== undefined)
      .map((k) => `pod securityContext.${k}: ${JSON.stringify(pod[k as keyof V1PodSecurityContext])}`),
    ...Object.keys(sc)
      .filter((k) => !HANDLED_CONTAINER.has(k) && sc[k as keyof typeof sc] !== undefined)
      .map((k) => `container securityContext.${k}: ${JSON.stringify(sc[k as keyof typeof sc])}`),
  ];
  if (sc.privileged) throw new Error('privileged containers are not supported here');
  const userns = i.hostUsers === false;
  if (userns && !i.userNamespace) throw new Error('hostUsers: false needs the host ids the pod maps to (userNamespace)');
  // The API server refuses Unmasked without a user namespace (KEP-4265); so does this.
  if (sc.procMount === 'Unmasked' && !userns) throw new Error('procMount: Unmasked needs hostUsers: false');

  const fromImage = imageUser(i.image.User);
  const uid = sc.runAsUser ?? pod.runAsUser ?? fromImage.uid;
  const gid = sc.runAsGroup ?? pod.runAsGroup ?? fromImage.gid ?? 0;
  // The kubelet refuses to start such a container (CreateContainerConfigError).
  if ((sc.runAsNonRoot ?? pod.runAsNonRoot) && uid === 0) throw new Error(`runAsNonRoot is set but the container would run as uid 0 (image USER '${i.image.User ?? ''}')`);

  // Kubernetes: `command` replaces the ENTRYPOINT (and drops CMD), `args` replaces CMD.
  const unexpanded = i.container.command ? [...i.container.command, ...(i.container.args ?? [])] : [...(i.image.Entrypoint ?? []), ...(i.container.args ?? i.image.Cmd ?? [])];
  if (unexpanded.length === 0) throw new Error('nothing to run: no command, args, ENTRYPOINT or CMD');

  const env = new Map<string, string>();
  for (const e of i.image.Env ?? []) {
    const at = e.indexOf('=');
    env.set(e.slice(0, at), e.slice(at + 1));
  }
  for (const e of i.container.env ?? []) {
    const value = e.value ?? i.resolvedEnv?.[e.name];
    if (value === undefined) throw new Error(`env ${e.name}: valueFrom must be resolved by the caller (resolvedEnv)`);
    env.set(e.name, value);
  }
  // The kubelet expands $(VAR) in command and args from the container's env.
  const args = expandArgs(unexpanded, Object.fromEntries(env));

  const mounts: OciMount[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // sysfs cannot be mounted from a user namespace that does not own the network namespace
    // (the host's, here): the host's /sys, read-only, as rootless runc does.
    userns
      ? { destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] }
      : { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  ];
  const volumes = new Map((i.volumes ?? []).map((v) => [v.name, v]));
  for (const vm of i.container.volumeMounts ?? []) {
    const v = volumes.get(vm.name);
    if (!v) throw new Error(`volumeMount ${vm.name}: no such volume`);
    if (v.hostPath) {
      const source = i.hostPaths?.[v.hostPath.path];
      if (!source) throw new Error(`volume ${vm.name}: hostPath ${v.hostPath.path} has no place on this machine (hostPaths)`);
      mounts.push({ destination: vm.mountPath, type: 'bind', source, options: ['rbind', 'nosuid', 'nodev', vm.readOnly ? 'ro' : 'rw'] });
      continue;
    }
    if (!v.emptyDir) throw new Error(`volume ${vm.name}: only emptyDir and hostPath volumes are supported here`);
    if (v.emptyDir.medium && v.emptyDir.medium !== 'Memory') throw new Error(`volume ${vm.name}: emptyDir medium '${v.emptyDir.medium}' is not supported`);
    // An emptyDir is a fresh world-writable directory; a tmpfs is the closest thing without a node disk.
    const size = v.emptyDir.sizeLimit ? [`size=${parseBytes(String(v.emptyDir.sizeLimit))}`] : [];
    mounts.push({ destination: vm.mountPath, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', ...size, ...(vm.readOnly ? ['ro'] : [])] });
  }
  for (const b of i.mounts ?? []) mounts.push({ destination: b.destination, type: 'bind', source: b.source, options: ['rbind', 'nosuid', 'nodev', b.readOnly ? 'ro' : 'rw'] });

  const caps = capabilitiesAfter(sc.capabilities?.drop, sc.capabilities?.add);
  const seccomp = runtimeDefault ? undefined : seccompOf(seccompProfile, caps, i.seccompRoot);
  const idMap = userns ? [{ containerID: 0, hostID: i.userNamespace!.hostId, size: i.userNamespace!.size }] : undefined;
  const spec: OciSpec = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid, gid, ...(pod.supplementalGroups?.length ? { additionalGids: pod.supplementalGroups } : {}) },
      args,
      env: [...env].map(([k, v]) => `${k}=${v}`),
      cwd: i.container.workingDir ?? (i.image.WorkingDir || '/'),
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      // Kubernetes sets no_new_privs only when allowPrivilegeEscalation is false.
      noNewPrivileges: sc.allowPrivilegeEscalation === false,
    },
    root: { path: i.rootfs, readonly: sc.readOnlyRootFilesystem === true },
    hostname: i.hostname,
    mounts,
    linux: {
      // A cgroup namespace of its own, as the kubelet gives every container on cgroup v2.
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'cgroup' }, ...(userns ? [{ type: 'user' }] : [])],
      ...(idMap ? { uidMappings: idMap, gidMappings: idMap } : {}),
      ...(i.cgroupsPath ? { cgroupsPath: i.cgroupsPath } : {}),
      ...(seccomp ? { seccomp } : {}),
      // runc's and containerd's defaults; procMount: Unmasked lifts them.
      maskedPaths:
        sc.procMount === 'Unmasked'
          ? []
          : ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware'],
      readonlyPaths: sc.procMount === 'Unmasked' ? [] : ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  return { spec, notApplied };
}
