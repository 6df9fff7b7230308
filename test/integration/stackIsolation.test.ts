/**
 * Stacks that share one machine (the soak, `agent-operator dev`, several engineers' test runs) never
 * touch each other's agents, even with the same node names: a stack that stops removes its own
 * nodes' agents' cgroups, never another's. (The 1000-Agent soak once ended 9 Agents as
 * ExitedNonZero 137 and 2 as LaunchFailed "cgroup.procs: Directory nonexistent": a concurrent
 * `agent-operator dev` with the soak's node names had cgroup.kill-ed and removed them at its exit.)
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { isTerminalPhase } from '../../src/api/phase.js';
import { reapStacks, Stack } from '../../src/dev/stack.js';
import { agentCgroupDir, leafPids } from '../../src/sidecar/runtime/cgroup.js';
import { observeSession } from '../../src/sidecar/runtime/observe.js';
import { controlPlane, createTestNamespace, waitFor } from '../support/cluster.js';
import { alive } from '../support/procs.js';
import { assertNothingLeft, createAgent, patchSpec, useStack, waitForAgent, waitForCleanedUp } from '../support/stack.js';

const NODE = 'iso-node-1';

describe('stacks on one machine', () => {
  const stack = useStack('iso', { nodes: [NODE] });

  it("another stack with the same node name starts and stops: this stack's running agent is untouched, then stops as asked", async (t) => {
    const ns = await createTestNamespace(t, 'iso');
    await createAgent(ns, 'long', { command: ['sleep', '600'], cleanup: { gracePeriodSeconds: 2 } });
    const running = await waitForAgent(ns, 'long', (a) => a.status?.phase === 'Running', 'to run');
    const uid = running.metadata!.uid!;
    const node = stack().node(NODE);
    const leaf = join((await agentCgroupDir(node.agentsCgroup))!, uid);
    // Running once released: its launcher joins the leaf a moment later.
    const pids = await waitFor(
      async () => {
        const p = await leafPids(leaf);
        return p.size > 0 ? p : undefined;
      },
      { timeoutMs: 30_000, what: `the agent's processes in its leaf ${leaf}` },
    );

    // A second stack, its own control plane, the same node name: started and stopped as a test file or `agent-operator dev` would.
    const dir = await mkdtemp(join(tmpdir(), 'stack-iso-other-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const other = await Stack.start({ stateDir: dir, logger: pino({ level: 'warn' }, pino.destination(2)), nodes: [NODE], controllers: 0 });
    const otherCgroup = other.node(NODE).agentsCgroup;
    await other.stop();

    const obs = await observeSession(node.root, uid);
    assert.deepEqual({ alive: obs.sessionAlive, exitCode: obs.exitCode, launchError: obs.launchError }, { alive: true, exitCode: undefined, launchError: undefined }, 'its command still runs');
    for (const pid of pids) assert.ok(await alive(pid), `process ${pid} of the agent still runs`);
    assert.ok((await stat(leaf)).isDirectory(), "the agent's leaf is still there");

    assert.notEqual(otherCgroup, node.agentsCgroup, "each stack's node has its own agents' cgroup");

    await patchSpec(ns, 'long', { stop: true, stopReason: 'done with it' });
    const done = await waitForCleanedUp(ns, 'long');
    assert.ok(isTerminalPhase(done.status?.phase));
    assert.deepEqual([done.status?.phase, done.status?.reason], ['Terminated', 'Stopped'], done.status?.message);
    assert.equal(done.status?.exitCode, undefined);
    assert.equal(done.status?.cleanup?.cgroupRemoved, true);
    await assertNothingLeft(stack(), done);
  });

  it('a stack whose test process was killed mid-file: the runner ends its tmux server, agent processes and cgroup (reapStacks)', async (t) => {
    const parent = await mkdtemp(join(tmpdir(), 'reap-'));
    t.after(() => rm(parent, { recursive: true, force: true }));
    await chmod(parent, 0o711); // sandboxed agents' uids pass through it to their workspaces
    const stateDir = join(parent, 'stack-reap');
    const name = 'reap-node-1';
    const reaped = await Stack.start({ stateDir, logger: pino({ level: 'warn' }, pino.destination(2)), controlPlane: await controlPlane(), nodes: [name], controllers: 0 });
    t.after(() => reaped.stop());
    const node = reaped.node(name);
    const cgroup = (await agentCgroupDir(node.agentsCgroup))!;
    // What the node held when the process that ran the stack died: a session on its tmux server and
    // an agent's process in its leaf (its components die with that process: processes.ts).
    const sock = join(node.root, 'tmux.sock');
    execFileSync('tmux', ['-f', '/dev/null', '-S', sock, 'new-session', '-d', '-s', 'left', 'sleep 600'], { timeout: 10_000 });
    const leaf = join(cgroup, '00000000-0000-4000-8000-00000000beef');
    await mkdir(leaf);
    const agent = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    agent.unref();
    t.after(() => void (agent.exitCode === null && agent.kill('SIGKILL')));
    await writeFile(join(leaf, 'cgroup.procs'), String(agent.pid));
    await reaped.stopComponent(name, 'kill');

    await reapStacks(parent, pino({ level: 'warn' }, pino.destination(2)));

    assert.throws(() => execFileSync('tmux', ['-S', sock, 'has-session'], { timeout: 10_000, stdio: 'ignore' }), "the node's tmux server still answers");
    await waitFor(async () => !(await alive(agent.pid!)), { timeoutMs: 10_000, what: `the agent's process ${agent.pid} to be gone` });
    await assert.rejects(stat(cgroup), { code: 'ENOENT' }, "the node's agents' cgroup is still there");
  });
});
