/**
 * Hostile agents on the real stack (issue 8's table): an attacker and a victim on one node. Every
 * attack is judged from outside (the node's files, /proc, tmux, the API), never by what the
 * attacker says about itself; the victim and the node carry on. And the positive side: a normal
 * agent has a HOME, writes its workspace and /tmp, reaches the network, reads its prompt, reports.
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPORTING_CONTROLLER } from '../../src/controller/controller.js';
import { cgroup2Mount, ownCgroup } from '../../src/sidecar/runtime/cgroup.js';
import { environValue } from '../../src/sidecar/runtime/procfs.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { readSandboxUid } from '../../src/sidecar/runtime/uids.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { createTestNamespace, waitFor } from '../support/cluster.js';
import { assertAttackGotNothing, assertNormalAgentOutput, attackScript, environOf, normalAgentScript, pidsOfUser, plantedPaths } from '../support/hostile.js';
import { eventsAbout } from '../support/telemetry.js';
import { agents, archivedOutput, assertNodeClean, createAgent, useStack, waitForAgent, waitForCleanedUp, waitForOutput } from '../support/stack.js';

const exists = (p: string) => stat(p).then(() => true, () => false);

describe('hostile agents on one node', () => {
  const stack = useStack('hostile', { nodes: 1, capacity: 6 });

  it('an attacker reaches nothing of the victim, the node or the sidecar; the victim and the node carry on', async (t) => {
    const ns = await createTestNamespace(t, 'hostile');
    const node = stack().nodes[0]!;
    const secret = `victim-secret-${Date.now()}`;
    const promptSecret = `victim-prompt-${Date.now()}`;
    await createAgent(ns, 'victim', {
      command: ['sh', '-c', 'echo victim-output-secret; echo started > started; sleep 600'],
      env: [{ name: 'VICTIM_SECRET', value: secret }],
      prompt: promptSecret,
    });
    let victim = await waitForAgent(ns, 'victim', (a) => a.status?.phase === 'Running', 'to run');
    await waitForOutput(stack(), victim, /victim-output-secret/);
    const vuid = victim.metadata!.uid!;
    const vpaths = workspacePaths(node.root, vuid);
    const victimToken = environValue(await environOf(vuid), 'AGENT_REPORT_TOKEN');
    assert.ok(victimToken, 'the victim has a report token');
    const sidecarArgs = (await readFile(`/proc/${node.process()!.pid}/cmdline`, 'utf8')).split('\0');
    const kubeconfigPath = sidecarArgs[sidecarArgs.indexOf('--kubeconfig') + 1]!;
    const kubeconfig = await readFile(kubeconfigPath, 'utf8');
    const sidecarToken = /token: (\S+)/.exec(kubeconfig)?.[1];
    assert.ok(sidecarToken, 'the sidecar kubeconfig holds a token');
    const shimBefore = await readFile(join(node.root, 'bin', 'agent-operator'));

    const attack = attackScript({ root: node.root, victim: vpaths, victimUid: vuid, credentials: [kubeconfigPath, '/var/run/secrets/kubernetes.io/serviceaccount/token'] });
    await createAgent(ns, 'attacker', { command: ['sh', '-c', attack], env: [{ name: 'ATTACKER', value: '1' }] });
    const attacker = await waitForCleanedUp(ns, 'attacker');
    const out = await archivedOutput(attacker);
    t.diagnostic(out.split('\n').filter((l) => !l.startsWith('ENV: ')).slice(0, 40).join('\n'));
    assertAttackGotNothing(out, { 'victim env': secret, 'victim prompt': promptSecret, 'victim output': 'victim-output-secret', 'victim report token': victimToken, 'sidecar token': sidecarToken });

    // From outside: the victim is untouched and the node is intact.
    victim = await waitForAgent(ns, 'victim', (a) => a.status?.phase === 'Running', 'to still run');
    assert.equal(await exists(vpaths.exitCode), false, 'the victim has an exit code while it runs');
    assert.equal((await stat(vpaths.agentJson)).isFile(), true);
    assert.ok((await listSessions(node.root)).some((s) => s.uid === vuid && !s.dead), 'the victim session is alive');
    assert.equal(await readFile(vpaths.prompt, 'utf8'), promptSecret);
    for (const f of plantedPaths(node.root, vpaths).filter((p) => !p.endsWith('/bin/agent-operator'))) assert.equal(await exists(f), false, f);
    assert.deepEqual(await readFile(join(node.root, 'bin', 'agent-operator')), shimBefore);
    const vid = await readSandboxUid(vpaths);
    assert.ok(vid !== undefined && vid > 0, 'the victim runs as its own uid');
    assert.ok((await pidsOfUser(vid)).length > 0);

    // The attacker is gone for good, by the kernel's account, and it had its own uid.
    assert.equal(attacker.status?.cleanup?.verifiedNoProcesses, true);
    assert.equal(attacker.status?.cleanup?.cgroupRemoved, true);
    await assertNodeClean(stack(), attacker.metadata!.uid!);

    // The node still launches and cleans up (the traps blocked nothing), and the victim ends normally.
    await createAgent(ns, 'after', { command: ['sh', '-c', 'echo still-works'] });
    const after = await waitForCleanedUp(ns, 'after');
    assert.equal(after.status?.phase, 'Completed');
    // Stopped from outside, the victim's exit code is its own (SIGTERM), not the forged 0.
    assert.equal(await agents().delete({ namespace: ns, name: 'victim' }), true);
    await waitFor(async () => (await exists(vpaths.dir)) ? undefined : true, { timeoutMs: 60_000, what: 'the victim to be cleaned up' });
    assert.equal(victim.metadata!.uid, vuid);
  });

  it('an escape with env -i, setsid and a double fork is killed, and verifiedNoProcesses is the kernel\'s word', async (t) => {
    const ns = await createTestNamespace(t, 'hostile-escape');
    const node = stack().nodes[0]!;
    // `$$$$` is the shell's `$$` after Kubernetes $(VAR) expansion.
    await createAgent(ns, 'escaper', {
      command: ['sh', '-c', "env -i setsid sh -c '(exec sleep 1000 &)'; env -i setsid sh -c 'trap \"\" TERM HUP; while :; do sleep 1; done' & echo escaped; sleep 3"],
    });
    const running = await waitForAgent(ns, 'escaper', (a) => a.status?.phase === 'Running', 'to run');
    await waitForOutput(stack(), running, /escaped/);
    const id = await readSandboxUid(workspacePaths(node.root, running.metadata!.uid!));
    assert.ok(id !== undefined);
    assert.ok((await pidsOfUser(id)).length >= 3, 'the escaped processes run as the agent uid');
    const done = await waitForCleanedUp(ns, 'escaper');
    assert.equal(done.status?.cleanup?.verifiedNoProcesses, true, JSON.stringify(done.status?.cleanup));
    assert.deepEqual(await pidsOfUser(id), [], 'a process of the agent outlived its cleanup');
    await assertNodeClean(stack(), done.metadata!.uid!);
  });

  it('a normal agent: its own uid, HOME, workspace and /tmp writable, prompt readable, the report endpoint reachable', async (t) => {
    const ns = await createTestNamespace(t, 'hostile-positive');
    const script = normalAgentScript(['sleep 3']);
    await createAgent(ns, 'normal', { command: ['sh', '-c', script], prompt: 'read me', resources: { limits: { memory: '256Mi', cpu: '500m', pids: 200 } } });
    // Its limits: in its cgroup where the node's cgroup v2 has the controller, else a Warning Event.
    const node = stack().nodes[0]!;
    const running = await waitForAgent(ns, 'normal', (x) => x.status?.phase === 'Running' || x.status?.phase === 'Working', 'to run');
    const own = ownCgroup(await readFile(`/proc/${node.process()!.pid}/cgroup`, 'utf8'))!;
    const agentsCgroup = join(cgroup2Mount(await readFile('/proc/self/mountinfo', 'utf8'))!, own, `agent-operator-${node.name}`);
    const controllers = (await readFile(join(agentsCgroup, 'cgroup.subtree_control'), 'utf8')).split(/\s+/);
    const leaf = join(agentsCgroup, running.metadata!.uid!);
    const want: [string, string, string][] = [['memory', 'memory.max', '268435456'], ['cpu', 'cpu.max', '50000 100000'], ['pids', 'pids.max', '200']];
    for (const [c, file, value] of want) if (controllers.includes(c)) assert.equal((await readFile(join(leaf, file), 'utf8')).trim(), value, file);
    const missing = want.map(([c]) => c).filter((c) => !controllers.includes(c));
    const a = await waitForCleanedUp(ns, 'normal');
    const out = await archivedOutput(a);
    assert.equal(a.status?.phase, 'Completed', `${a.status?.reason}: ${a.status?.message}\n${out}`);
    assertNormalAgentOutput(out);
    assert.equal(a.status?.progress, 50);
    assert.equal(a.status?.cleanup?.verifiedNoProcesses, true);
    assert.ok(a.status?.cleanup?.cpuMilliseconds !== undefined, 'CPU time recorded');
    // The node says which in status (its Events are about its AgentNode only); the controller records the Warning.
    const limitsEvent = async () => (await eventsAbout(ns, a.metadata!.uid!)).find((e) => e.reason === 'LimitsNotEnforced');
    const warned = missing.length === 0 ? await limitsEvent() : await waitFor(limitsEvent, { timeoutMs: 20_000, what: 'the LimitsNotEnforced Event' });
    const condition = a.status?.conditions?.find((c) => c.type === 'LimitsEnforced');
    if (missing.length === 0) assert.deepEqual([warned, a.status?.limitsNotEnforced, condition], [undefined, undefined, undefined]);
    else {
      assert.deepEqual(a.status?.limitsNotEnforced, missing);
      assert.equal(warned?.type, 'Warning');
      assert.equal(warned?.reportingController, REPORTING_CONTROLLER);
      assert.match(warned?.note ?? '', new RegExp(`^${missing.join(', ')} limit\\(s\\) not enforced on node ${node.name}`), `missing: ${missing.join(', ')}`);
      assert.equal(condition?.status, 'False');
    }
  });
});
