/**
 * The sandbox every agent runs in (docs/architecture.md, the pieces: agents are hostile to each
 * other and to the node; docs/install.md#security-model). Built from kernel primitives by two
 * small, well-kept tools rather than by our own code:
 *
 *   setsid, setpriv       (util-linux) a session of its own; root -> the agent's own uid/gid, no supplementary groups, every capability
 *                         set emptied (bounding set included), no_new_privs;
 *   bubblewrap (bwrap)    as that unprivileged uid: a user namespace (uid mapped to itself, no
 *                         capabilities, further user namespaces disabled), its own PID, IPC and UTS
 *                         namespaces, and a mount namespace built from an empty tmpfs: the system
 *                         directories read-only, the agent's workspace and HOME writable, a private
 *                         /tmp, its prompt and the `agent-operator` shim read-only, its report
 *                         channel (a directory holding its own socket, read-only), a fresh /proc and
 *                         a minimal /dev. Nothing else of the node exists in it: not the node root,
 *                         other workspaces, the archive, the tmux socket, the sidecar's kubeconfig or
 *                         ServiceAccount token, or its state files.
 *
 * Why bwrap: it is what Flatpak and several agent CLIs use for exactly this, it is in Debian, needs
 * no daemon and no setuid bit when user namespaces are available, and every option maps onto one
 * kernel call (an allow-list of mounts, not a deny-list). setpriv first, so that the namespaces are
 * created by the agent's uid and no process of the sandbox ever runs as root, not even bwrap.
 * The network namespace is shared: agents reach the network (and the loopback report endpoint, where
 * only a token an unsandboxed agent holds is accepted).
 *
 * The launcher (outside, root) runs the sandbox as its child and records the exit status itself.
 */
import { lstat, readFile, readlink, stat } from './boundedFs.js';
import { dirname } from 'node:path';
import { SANDBOX_REPORT_DIR } from '../../api/constants.js';
import { errnoOf } from './files.js';
import { spawnProcess } from './spawn.js';
import type { AgentCgroups } from './cgroup.js';
import { effectiveCapabilities, missingCapabilities } from './capabilities.js';
import type { UidRange } from './uids.js';

export type SandboxMode = 'bwrap' | 'none';
export const SANDBOX_MODES: readonly SandboxMode[] = ['bwrap', 'none'];

/** The system directories an agent sees read-only, when they exist on the node. */
export const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/opt'] as const;

/** How a system path appears in the sandbox: a read-only bind of a directory, or the same symlink. */
export type SystemMount = { kind: 'dir'; path: string } | { kind: 'symlink'; path: string; target: string };

/** What the node offers every sandbox, found once at start-up (see probeSystemMounts). */
export interface SandboxHost {
  mode: SandboxMode;
  system: readonly SystemMount[];
  /** Further read-only paths (the agent-operator installation the shim runs). */
  readOnly: readonly string[];
  /** Directories every agent of the node shares read-write (--sandbox-shared-dir: an admin's choice). */
  shared?: readonly string[];
}

/** The node's sandbox and the range agents' uids come from. */
export interface NodeSandbox {
  host: SandboxHost;
  uids: UidRange;
  /** Where agents' cgroup leaves go (required with bwrap: see cgroup.ts). */
  cgroups?: AgentCgroups;
}

/**
 * The node's sandbox as this machine offers it: the system directories, and `readOnly` paths
 * (the agent-operator installation) unless a system directory already shows them.
 */
export async function nodeSandbox(mode: SandboxMode, uids: UidRange, readOnly: readonly string[] = [], cgroups?: AgentCgroups, shared: readonly string[] = []): Promise<NodeSandbox> {
  const system = mode === 'none' ? [] : await probeSystemMounts();
  const shown = system.filter((m) => m.kind === 'dir').map((m) => m.path);
  const extra = [...new Set(readOnly)].filter((p) => !shown.some((d) => isWithin(p, d)));
  return { host: { mode, system, readOnly: extra, ...(shared.length > 0 ? { shared } : {}) }, uids, ...(cgroups ? { cgroups } : {}) };
}

/** One agent's sandbox. Paths are absolute and appear at the same path inside. */
export interface SandboxSpec {
  uid: number;
  gid: number;
  /** Writable: the workspace (scratch) and HOME. */
  writable: readonly string[];
  /** Read-only files and directories of this agent: its prompt, the shim's directory. */
  readOnly: readonly string[];
  /** Its report channel's directory, bound read-only at SANDBOX_REPORT_DIR (a fixed path, whatever the node root). */
  channel?: string;
}

/**
 * Moves the process into a cgroup (its own pid, written by itself, so nothing races it) and execs
 * the rest: `/bin/sh -c JOIN_CGROUP agent-cgroup <leaf>/cgroup.procs <command...>`.
 */
export const JOIN_CGROUP = 'echo $$ > "$1" || exit 125; shift; exec "$@"';

/** The argv prefix that joins the agent's cgroup leaf (pure). */
export function joinCgroupArgv(leaf: string): string[] {
  return ['/bin/sh', '-c', JOIN_CGROUP, 'agent-cgroup', `${leaf}/cgroup.procs`];
}

/** The argv prefix that runs a command in the sandbox (pure). The command follows it. */
export function sandboxArgv(host: SandboxHost, s: SandboxSpec): string[] {
  if (host.mode === 'none') return [];
  for (const id of [s.uid, s.gid]) if (!Number.isInteger(id) || id <= 0) throw new Error(`sandbox uid/gid must be a positive integer, got ${id}`);
  const mounts: string[] = [];
  for (const m of host.system) mounts.push(...(m.kind === 'dir' ? ['--ro-bind', m.path, m.path] : ['--symlink', m.target, m.path]));
  // tmpfs first: the node root of a test may lie under /tmp, and later binds land inside it.
  mounts.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
  for (const p of [...host.readOnly, ...s.readOnly]) mounts.push('--ro-bind', p, p);
  for (const p of [...(host.shared ?? []), ...s.writable]) mounts.push('--bind', p, p);
  // The directory, not the socket: a socket made anew by a restarted sidecar shows through.
  if (s.channel) mounts.push('--ro-bind', s.channel, SANDBOX_REPORT_DIR);
  // The sandbox's own root (a tmpfs holding the mount points) read-only too: nothing lands there.
  mounts.push('--remount-ro', '/');
  return [
    // A session of its own (no fork: the launcher's subshell leads no group): the pane's terminal
    // is no longer its controlling terminal, so it cannot push input into it (TIOCSTI), and the
    // terminal's hangup (its tmux server killed) ends neither the agent nor the monitor: the agent
    // is then lost and cleaned up from outside, not mistaken for one that exited.
    'setsid',
    'setpriv',
    `--reuid=${s.uid}`,
    `--regid=${s.gid}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--',
    // No --hostname: sethostname is CAP_SYS_ADMIN-gated in the runtimes' seccomp profiles, the
    // sidecar's container included; the agent's UTS namespace keeps the pod's hostname.
    'bwrap',
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    '--disable-userns',
    ...mounts,
    '--',
  ];
}

/** The system directories as they are on this node (symlinks such as /bin -> usr/bin stay symlinks). */
export async function probeSystemMounts(candidates: readonly string[] = SYSTEM_DIRS): Promise<SystemMount[]> {
  const out: SystemMount[] = [];
  for (const path of candidates) {
    try {
      const st = await lstat(path);
      if (st.isSymbolicLink()) out.push({ kind: 'symlink', path, target: await readlink(path) });
      else if (st.isDirectory()) out.push({ kind: 'dir', path });
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
    }
  }
  return out;
}

/** Whether `path` is `dir` or lies under it (pure; both absolute and normalised). */
export function isWithin(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * Refuses a layout in which the sandbox would expose node state (pure): the node root, the archive
 * or the sidecar's credentials lying under a directory every agent sees.
 */
export function checkLayout(host: SandboxHost, private_: Readonly<Record<string, string | undefined>>): void {
  if (host.mode === 'none') return;
  const visible = [...host.system.filter((m) => m.kind === 'dir').map((m) => m.path), ...host.readOnly, ...(host.shared ?? [])];
  for (const [what, path] of Object.entries(private_)) {
    if (!path) continue;
    const under = visible.find((v) => isWithin(path, v) || isWithin(v, path));
    if (under) throw new Error(`sandbox: the ${what} (${path}) overlaps ${under}, which every agent sees read-only; move it elsewhere`);
  }
}

/**
 * bwrap runs as the agent's uid and opens its bind sources by path, so every directory above one
 * (the node root, the agent-operator installation, Node.js) must let others pass (x for others).
 * Checked, with the directory named, rather than left to surface as a bwrap "Permission denied".
 */
export async function checkTraversable(path: string, what: string): Promise<void> {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const st = await stat(dir);
    if ((st.mode & 0o001) === 0) {
      throw new SandboxUnavailableError(
        `sandbox: agents cannot reach ${what} at ${path}: ${dir} is mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, it needs search permission for others (chmod o+x, or install it elsewhere)`,
      );
    }
    if (dir === '/') return;
  }
}

/** The failure of a sandbox that cannot be set up on this node, naming what is missing. */
export class SandboxUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxUnavailableError';
  }
}

/**
 * Checks the sidecar's capabilities, then runs `true` in a real sandbox as `uid` (start-up check, so
 * that a node that cannot sandbox fails loudly instead of running agents unconfined). The message
 * names what is missing.
 */
export async function probeSandbox(host: SandboxHost, uid: number, timeoutMs = 10_000): Promise<void> {
  if (host.mode === 'none') return;
  // Each one named with what needs it: missing, it would surface later as one agent's launch error
  // or a cleanup that leaves processes or files behind.
  const missing = missingCapabilities(effectiveCapabilities(await readFile('/proc/self/status', 'utf8')));
  if (missing.length > 0) {
    throw new SandboxUnavailableError(
      `sandbox: the sidecar lacks ${missing.join(', ')}; add ${missing.length === 1 ? 'it' : 'them'} to its container's capabilities (deploy/base/sidecar/daemonset.yaml), or run with --sandbox=none on a trusted single-tenant node`,
    );
  }
  for (const tool of ['setpriv', 'bwrap']) {
    const r = await spawnProcess(tool, ['--version'], { reject: false, timeout: timeoutMs, stdin: 'ignore' });
    if (r.exitCode !== 0)
      throw new SandboxUnavailableError(
        `sandbox: ${tool} is not installed or does not run (${r.shortMessage}); install it (Debian: ${tool === 'bwrap' ? 'bubblewrap' : 'util-linux'}) or run with --sandbox=none on a trusted single-tenant node`,
      );
  }
  const argv = [...sandboxArgv(host, { uid, gid: uid, writable: [], readOnly: [] }), '/bin/true'];
  const r = await spawnProcess(argv[0]!, argv.slice(1), { reject: false, timeout: timeoutMs, stdin: 'ignore', cwd: '/' });
  if (r.exitCode === 0) return;
  throw new SandboxUnavailableError(`sandbox: cannot create an agent sandbox as uid ${uid}: ${String(r.stderr).trim() || r.shortMessage}. ${await userNamespaceHint()}`);
}

async function userNamespaceHint(): Promise<string> {
  const read = (p: string) =>
    readFile(p, 'utf8').then(
      (t) => t.trim(),
      () => undefined,
    );
  const max = await read('/proc/sys/user/max_user_namespaces');
  const clone = await read('/proc/sys/kernel/unprivileged_userns_clone');
  const apparmor = await read('/proc/sys/kernel/apparmor_restrict_unprivileged_userns');
  if (max === '0') return 'User namespaces are disabled (user.max_user_namespaces = 0).';
  if (clone === '0') return 'Unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0).';
  if (apparmor === '1') return 'AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1).';
  return 'In a container, the runtime must allow unshare(CLONE_NEWUSER) and mounts in the new namespace (see docs/install.md).';
}
