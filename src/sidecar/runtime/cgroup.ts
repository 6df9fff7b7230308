/**
 * One cgroup v2 leaf per agent, `<agents cgroup>/<uid>`, as the kubelet gives each pod its own.
 * The launcher moves itself into the leaf just before it enters the sandbox (so the launcher,
 * which records the exit status, stays outside), and every process of the agent is born in it:
 *
 *   stop             cgroup.kill (the kernel kills every process in it, whatever it did: setsid,
 *                    double fork, an empty environment);
 *   nothing left     cgroup.events `populated 0` (a kernel fact, not a scan);
 *   accounting       cpu.stat usage_usec, memory.peak where the memory controller is enabled;
 *   limits           memory.max, cpu.max, pids.max where those controllers are enabled (and
 *                    reported as not enforced where they are not).
 *
 * The hierarchy is found at run time: the cgroup2 mount in /proc/self/mountinfo and this process's
 * own cgroup in /proc/self/cgroup. Production nodes mount it at /sys/fs/cgroup with controllers;
 * a hybrid host (cgroup v1 controllers, v2 at /sys/fs/cgroup/unified) has cgroup.kill and
 * cgroup.events but no controllers.
 */
import { mkdir, readdir, readFile, rmdir, writeFile } from './boundedFs.js';
import { join } from 'node:path';
import { LIMIT_CONTROLLERS, type LimitController } from '../../api/constants.js';
import { errnoOf, exists } from './files.js';
import { waitFor } from './wait.js';
import { assertAgentUid } from './workspace.js';

const SIDECAR_LEAF = 'sidecar';

/** The default name of the agents' cgroup of a node: one sidecar per machine in a cluster. */
export function defaultAgentsCgroupName(nodeName: string): string {
  return `agent-operator-${nodeName}`;
}

/**
 * Refuses a name that is not one cgroup directory of its own (pure): a path, `.`/`..`, a cgroup
 * interface file's shape, or the leaf the sidecar itself moves into. The message names the flag.
 */
export function checkAgentsCgroupName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$/.test(name)) {
    throw new Error(`--agents-cgroup: "${name}" must be one directory name (letters, digits, '-', '_', at most 200, not starting with '-' or '_')`);
  }
  if (name === SIDECAR_LEAF) throw new Error(`--agents-cgroup: "${name}" is the leaf the sidecar itself moves into`);
}

/** Where the agents' leaves go, and which controllers they have. */
export interface AgentCgroups {
  /** Absolute path of the parent of every agent leaf. */
  dir: string;
  /** Limit controllers enabled for the leaves. */
  controllers: readonly LimitController[];
}

/** The cgroup2 mount point in a /proc/self/mountinfo text (pure). */
export function cgroup2Mount(mountinfo: string): string | undefined {
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [fstype] = line.slice(sep + 3).split(' ');
    const fields = line.slice(0, sep).split(' ');
    if (fstype === 'cgroup2' && fields[4]) return fields[4].replace(/\\040/g, ' ');
  }
  return undefined;
}

/** This process's cgroup v2 path in a /proc/self/cgroup text (pure): the `0::` line. */
export function ownCgroup(procCgroup: string): string | undefined {
  const line = procCgroup.split('\n').find((l) => l.startsWith('0::'));
  return line ? line.slice(3) || '/' : undefined;
}

/** A cgroup removed while one of its files is open answers ENODEV: as gone as ENOENT. */
const isGone = (err: unknown) => errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENODEV';

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isGone(err)) return undefined;
    throw err;
  }
}

const words = (text: string | undefined) => (text ?? '').split(/\s+/).filter(Boolean);

/** Where setupAgentCgroups(name) puts the agents' cgroup, or undefined without a cgroup v2 (nothing is created). */
export async function agentCgroupDir(name: string): Promise<string | undefined> {
  const mount = cgroup2Mount((await readText('/proc/self/mountinfo')) ?? '');
  const own = ownCgroup((await readText('/proc/self/cgroup')) ?? '');
  return mount && own !== undefined ? join(mount, parentOf(own), name) : undefined;
}

const parentOf = (own: string) => (own.endsWith(`/${SIDECAR_LEAF}`) ? own.slice(0, -SIDECAR_LEAF.length - 1) || '/' : own);

/**
 * Removes an agents' cgroup and every leaf in it, killing what is left in them first (a node taken
 * down for good: the dev stack, tests; never a sidecar that stops, whose agents live on).
 */
export async function removeAgentCgroups(dir: string, timeoutMs = 5_000): Promise<void> {
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return;
    throw err;
  }
  for (const name of names) {
    const leaf = join(dir, name);
    await killLeaf(leaf);
    if (!(await waitEmpty(leaf, timeoutMs))) throw new Error(`cgroup ${leaf} still holds processes after cgroup.kill`);
    await removeLeaf(leaf);
  }
  await removeLeaf(dir);
}

/**
 * Prepares `<own cgroup>/<name>` as the parent of the agents' leaves and enables the limit
 * controllers the hierarchy offers. A non-root cgroup with processes cannot delegate controllers
 * (cgroup v2's no-internal-processes rule), so this process and whatever else sits in its cgroup
 * (the tmux server it started) first move into a `<own>/sidecar` leaf, as systemd and runc do.
 * The error says what is missing when there is no usable cgroup v2.
 */
export async function setupAgentCgroups(name: string): Promise<AgentCgroups> {
  const mount = cgroup2Mount((await readText('/proc/self/mountinfo')) ?? '');
  if (!mount) throw new Error('cgroup: no cgroup v2 hierarchy is mounted (agents need one: cgroup.kill, cgroup.events)');
  const own = ownCgroup((await readText('/proc/self/cgroup')) ?? '');
  if (own === undefined) throw new Error('cgroup: this process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)');
  // A sidecar restarted after an earlier one moved everything into `<own>/sidecar` starts there:
  // the agents' cgroup stays where the first one put it.
  const parent = join(mount, parentOf(own));
  const isRoot = (await readText(join(parent, 'cgroup.type'))) === undefined; // only the root has none
  const available = words(await readText(join(parent, 'cgroup.controllers')));
  const wanted = LIMIT_CONTROLLERS.filter((c) => available.includes(c));
  if (wanted.length > 0 && !isRoot) {
    const procs = words(await readText(join(parent, 'cgroup.procs')));
    if (procs.length > 0) {
      const leaf = join(parent, SIDECAR_LEAF);
      await mkdir(leaf, { recursive: true });
      for (const pid of procs) {
        await writeFile(join(leaf, 'cgroup.procs'), pid).catch((err: unknown) => {
          if (errnoOf(err) !== 'ESRCH') throw err;
        });
      }
    }
  }
  const dir = join(parent, name);
  await mkdir(dir, { recursive: true });
  for (const file of ['cgroup.events', 'cgroup.kill']) {
    if (!(await exists(join(dir, file)))) throw new Error(`cgroup: ${dir} has no ${file} (Linux >= 5.14 is needed for per-agent cgroup v2 leaves)`);
  }
  const enable = async (at: string) => {
    if (wanted.length > 0) await writeFile(join(at, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
  };
  await enable(parent);
  await enable(dir);
  const enabled = words(await readText(join(dir, 'cgroup.subtree_control'))) as LimitController[];
  return { dir, controllers: LIMIT_CONTROLLERS.filter((c) => enabled.includes(c)) };
}

export function leafOf(cg: AgentCgroups, uid: string): string {
  assertAgentUid(uid);
  return join(cg.dir, uid);
}

/** What an agent asks for (spec.resources.limits, parsed). */
export interface Limits {
  memoryBytes?: number;
  /** CPU in millicores. */
  cpuMillis?: number;
  pids?: number;
}

const CPU_PERIOD_US = 100_000;

/** The files to write into a leaf for `limits` (pure); what cannot be enforced is listed, not dropped. */
export function limitFiles(limits: Limits, controllers: readonly LimitController[]): { files: [string, string][]; notEnforced: LimitController[] } {
  const files: [string, string][] = [];
  const notEnforced: LimitController[] = [];
  const want = (c: LimitController, file: string, value: string) => (controllers.includes(c) ? files.push([file, value]) : notEnforced.push(c));
  if (limits.memoryBytes !== undefined) want('memory', 'memory.max', String(limits.memoryBytes));
  if (limits.cpuMillis !== undefined) want('cpu', 'cpu.max', `${Math.max(1000, Math.round((limits.cpuMillis * CPU_PERIOD_US) / 1000))} ${CPU_PERIOD_US}`);
  if (limits.pids !== undefined) want('pids', 'pids.max', String(limits.pids));
  return { files, notEnforced };
}

/** Creates the agent's leaf (idempotent) with its limits; returns the limits that are not enforced. */
export async function createLeaf(cg: AgentCgroups, uid: string, limits: Limits = {}): Promise<LimitController[]> {
  const leaf = leafOf(cg, uid);
  await mkdir(leaf, { recursive: true });
  const { files, notEnforced } = limitFiles(limits, cg.controllers);
  for (const [file, value] of files) await writeFile(join(leaf, file), value);
  return notEnforced;
}

/** `populated` from cgroup.events (pure): whether any process is in the cgroup or below. */
export function parsePopulated(events: string): boolean | undefined {
  const m = /^populated (\d)$/m.exec(events);
  return m ? m[1] === '1' : undefined;
}

/** Whether the leaf holds a process; undefined when there is no leaf. */
export async function populated(leaf: string): Promise<boolean | undefined> {
  const text = await readText(join(leaf, 'cgroup.events'));
  return text === undefined ? undefined : parsePopulated(text);
}

/** The pids in the leaf (empty when there is none). */
export async function leafPids(leaf: string): Promise<Set<number>> {
  return new Set(words(await readText(join(leaf, 'cgroup.procs'))).map(Number));
}

/** Kills every process in the leaf (cgroup.kill); false when there is no leaf. */
export async function killLeaf(leaf: string): Promise<boolean> {
  try {
    await writeFile(join(leaf, 'cgroup.kill'), '1');
    return true;
  } catch (err) {
    if (isGone(err)) return false;
    throw err;
  }
}

/** Waits (bounded) until the leaf is empty; true when it is (or there is none). */
export async function waitEmpty(leaf: string, timeoutMs: number): Promise<boolean> {
  try {
    await waitFor(async () => ((await populated(leaf)) === true ? undefined : true), { timeoutMs, what: `cgroup ${leaf} to empty` });
    return true;
  } catch {
    return false;
  }
}

export interface LeafUsage {
  cpuSeconds?: number;
  memoryPeakBytes?: number;
}

/** usage_usec from cpu.stat (pure). */
export function parseCpuUsageUsec(cpuStat: string): number | undefined {
  const m = /^usage_usec (\d+)$/m.exec(cpuStat);
  return m ? Number(m[1]) : undefined;
}

export async function leafUsage(leaf: string): Promise<LeafUsage> {
  const usec = parseCpuUsageUsec((await readText(join(leaf, 'cpu.stat'))) ?? '');
  const peak = (await readText(join(leaf, 'memory.peak')))?.trim();
  return {
    ...(usec !== undefined ? { cpuSeconds: usec / 1e6 } : {}),
    ...(peak && /^\d+$/.test(peak) ? { memoryPeakBytes: Number(peak) } : {}),
  };
}

/** Removes an empty leaf; true when it is gone. */
export async function removeLeaf(leaf: string): Promise<boolean> {
  try {
    await rmdir(leaf);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return true;
    throw err;
  }
}
