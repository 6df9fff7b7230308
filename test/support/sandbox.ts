/** The sandbox tests launch agents with: the real one (bwrap), with a uid range of this test process's own. */
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import type { TestContext } from 'node:test';
import { removeAgentCgroups, setupAgentCgroups } from '../../src/sidecar/runtime/cgroup.js';
import { environValue } from '../../src/sidecar/runtime/procfs.js';
import { nodeSandbox, type NodeSandbox } from '../../src/sidecar/runtime/sandbox.js';

/**
 * 64 uids from 300000 up, chosen by pid: test processes running at once on this machine (several
 * simulated nodes) never hand out the same uid, as two live agents of one node never share one.
 */
export function testUidRange(): { first: number; count: number } {
  return { first: 300_000 + (process.pid % 10_000) * 64, count: 64 };
}

/**
 * The real sandbox with its own agent cgroup, removed after the test (every leaf killed first,
 * also when the test failed).
 */
export async function testSandbox(t: TestContext): Promise<NodeSandbox> {
  const cgroups = await setupAgentCgroups(`ao-test-${process.pid}-${randomBytes(4).toString('hex')}`);
  t.after(() => removeAgentCgroups(cgroups.dir));
  return nodeSandbox('bwrap', testUidRange(), [], cgroups);
}

/** The host pid of the process that is `nsPid` in a PID namespace below `ancestor` (NSpid in /proc/<pid>/status). */
export async function hostPid(nsPid: number, ancestor: number): Promise<number> {
  const status = async (pid: string) => readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const text = await status(pid);
    const ns = /^NSpid:\s+(.*)$/m.exec(text)?.[1]?.split(/\s+/).map(Number);
    if (!ns || ns.length < 2 || ns.at(-1) !== nsPid) continue;
    // Below the ancestor: walk up the parents.
    for (let p = Number(pid); p > 1;) {
      const ppid = Number(/^PPid:\s+(\d+)$/m.exec(await status(String(p)))?.[1] ?? 0);
      if (ppid === ancestor) return Number(pid);
      p = ppid;
    }
  }
  throw new Error(`no process is pid ${nsPid} in a PID namespace below ${ancestor}`);
}

/** The host pid of the process whose `name` env var is `value` and that is `nsPid` in its PID namespace. */
async function hostPidByEnv(name: string, value: string, nsPid: number): Promise<number | undefined> {
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const ns = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/).map(Number);
    if (ns?.at(-1) !== nsPid) continue;
    const env = await readFile(`/proc/${pid}/environ`).catch(() => Buffer.alloc(0));
    if (environValue(env, name) === value) return Number(pid);
  }
  return undefined;
}

/**
 * The host pid of the process of agent `agentUid` (its AGENT_UID marker) that is `nsPid` in the
 * agent's PID namespace: what an agent prints as `$$` is the pid it sees.
 */
export async function hostPidOfAgent(agentUid: string, nsPid: number): Promise<number> {
  const pid = await hostPidByEnv('AGENT_UID', agentUid, nsPid);
  if (pid === undefined) throw new Error(`agent ${agentUid} has no process that is pid ${nsPid} in its PID namespace`);
  return pid;
}

/** As hostPidOfAgent, for an agent known by its name (AGENT_NAME; names are unique within a test file). */
export async function hostPidOfAgentNamed(agentName: string, nsPid: number): Promise<number> {
  const pid = await hostPidByEnv('AGENT_NAME', agentName, nsPid);
  if (pid === undefined) throw new Error(`agent ${agentName} has no process that is pid ${nsPid} in its PID namespace`);
  return pid;
}
