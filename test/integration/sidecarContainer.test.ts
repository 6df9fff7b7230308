/**
 * The sidecar in the DaemonSet's own container (issue 8, item 7): deploy/'s DaemonSet run in runc
 * with exactly its securityContext, capabilities, seccomp profile, user namespace and volumes
 * (test/support/sidecarContainer.ts), against the run's control plane and a controller, and the
 * hostile-agent table in it, judged from outside: the host's /proc, the hostPath directories, the
 * API. And the positive side, with a workspace left hard to delete; and the start-up refusal of a
 * container lacking capabilities deploy/ adds (docs/install.md, "What each privilege is for, measured").
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { capabilityNames, SANDBOX_CAPABILITIES } from '../../src/sidecar/runtime/capabilities.js';
import { readSandboxUid } from '../../src/sidecar/runtime/uids.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { controlPlane, createTestNamespace, uniqueSuffix, waitFor } from '../support/cluster.js';
import { assertAttackGotNothing, assertChannelOnly, assertNormalAgentOutput, attackDiagnostic, attackScript, environOf, normalAgentScript, pidsOfUser, plantedPaths } from '../support/hostile.js';
import { SERVICE_ACCOUNT_DIR, startSidecarContainer, type SidecarContainer } from '../support/sidecarContainer.js';
import { agents, createAgent, useStack, waitForAgent, waitForCleanedUp } from '../support/stack.js';

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );
const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));

/** Fields of /proc/<pid>/status. */
async function procStatus(pid: number): Promise<Record<string, string>> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(
    text
      .split('\n')
      .map((l) => l.split(':\t'))
      .filter((kv) => kv.length === 2)
      .map(([k, v]) => [k!, v!.trim()]),
  );
}

describe("the sidecar in the DaemonSet's container (runc)", () => {
  // A controller of its own; the node is the container below.
  useStack('sidecar-oci', { nodes: 0, controllers: 1 });
  let sc: SidecarContainer | undefined;
  const node = () => sc!;

  before(
    async () => {
      const id = `ao-sidecar-${uniqueSuffix()}`;
      sc = await startSidecarContainer({ cp: await controlPlane(), nodeName: `oci-node-${uniqueSuffix()}`, logger, id });
      const ready = await waitFor(
        async () => {
          if (!sc!.ctr.runc.running()) return 'exited';
          return (await fetch(`${sc!.healthUrl}/readyz`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined))?.ok ? 'ready' : undefined;
        },
        { timeoutMs: 90_000, what: 'the sidecar in runc to be ready' },
      ).catch((err: unknown) => (err as Error).message);
      if (ready !== 'ready') throw new Error(`the sidecar in runc: ${ready}\n${sc.ctr.runc.logTail()}`);
    },
    { timeout: 180_000 },
  );
  after(async () => {
    if (!sc) return;
    const cp = await controlPlane();
    await sc.remove();
    // Its AgentNode, and the Node its token is bound to.
    for (const kind of ['agentnodes', 'nodes']) await cp.kubectl(['delete', kind, sc.nodeName, '--ignore-not-found', '--wait=false'], { timeoutMs: 30_000 });
  });

  it('runs with exactly what deploy/ declares: its capabilities, no_new_privs, the Localhost seccomp profile, its own user namespace', async (t) => {
    t.diagnostic(`not reproduced in runc: ${node().notApplied.join('; ') || 'nothing'}`);
    assert.deepEqual(node().notApplied, []);
    const pid = await node().ctr.initPid();
    const status = await procStatus(pid);
    assert.equal(status.NoNewPrivs, '1');
    assert.equal(status.Seccomp, '2', 'a seccomp filter is installed');
    assert.deepEqual(capabilityNames(status.CapEff!), [...node().spec.process.capabilities.effective].sort());
    assert.deepEqual(capabilityNames(status.CapEff!), Object.keys(SANDBOX_CAPABILITIES).sort(), "deploy/'s capabilities are the sandbox's");
    assert.equal(status.CapBnd, status.CapEff);
    // Root in the container is an unprivileged uid on the host.
    assert.equal(status.Uid, Array(4).fill(node().hostRoot).join('\t'));
    assert.equal((await readFile(`/proc/${pid}/uid_map`, 'utf8')).trim().split(/\s+/).join(' '), `0 ${node().hostRoot} 65536`);
    assert.equal(node().spec.linux.maskedPaths.length, 0, 'procMount: Unmasked');
  });

  it('without any one capability deploy/ adds, it refuses to start, naming it and what needs it', async () => {
    const cp = await controlPlane();
    for (const [cap, why] of Object.entries(SANDBOX_CAPABILITIES)) {
      const lacking = await startSidecarContainer({ cp, nodeName: `oci-lacking-${uniqueSuffix()}`, logger, id: `ao-lacking-${uniqueSuffix()}`, withoutCapabilities: [cap.replace(/^CAP_/, '')] });
      try {
        const said = `the sidecar lacks ${cap} (${why}); add it to its container's capabilities`;
        await waitFor(async () => (lacking.ctr.runc.logTail(400).includes(said) ? true : undefined), { timeoutMs: 60_000, what: `the start-up error naming ${cap}` }).catch((err: unknown) => {
          throw new Error(`${(err as Error).message}\n${lacking.ctr.runc.logTail()}`);
        });
        const ready = await fetch(`${lacking.healthUrl}/readyz`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
        assert.notEqual(ready?.status, 200, `without ${cap}: a sidecar that cannot sandbox is never ready`);
        assert.doesNotMatch(lacking.ctr.runc.logTail(400), /agents run sandboxed|registered AgentNode/, cap);
      } finally {
        await lacking.remove();
        await cp.kubectl(['delete', 'nodes', lacking.nodeName, '--ignore-not-found', '--wait=false'], { timeoutMs: 30_000 });
      }
    }
  });

  it('a normal agent: its own uid, HOME, workspace and /tmp writable, prompt readable, reports; cleaned up by its cgroup', async (t) => {
    const ns = await createTestNamespace(t, 'oci-positive');
    // What it leaves is made hard to remove: a directory with no permissions at all and a sticky
    // one, in its workspace and HOME (cleanup deletes both whatever modes they carry).
    const script = normalAgentScript([
      'for d in . "$HOME"; do mkdir -p "$d/locked/inner" "$d/sticky"; echo x > "$d/locked/inner/f"; echo x > "$d/sticky/f"; chmod 0 "$d/locked/inner" "$d/locked"; chmod 1777 "$d/sticky"; done',
      'echo left-a-mess',
    ]);
    await createAgent(ns, 'normal', { command: ['sh', '-c', script], prompt: 'read me', nodeName: node().nodeName });
    const a = await waitForCleanedUp(ns, 'normal', 120_000);
    const out = await readFile(join(node().onHost(a.status!.cleanup!.archivePath!), 'output.log'), 'utf8').catch(() => '');
    assert.equal(a.status?.phase, 'Completed', `${a.status?.reason}: ${a.status?.message}\n${out}\n${node().ctr.runc.logTail()}`);
    assert.equal(a.status?.nodeName, node().nodeName);
    assertNormalAgentOutput(out);
    assert.equal(a.status?.progress, 50);
    assert.equal(a.status?.cleanup?.verifiedNoProcesses, true);
    assert.equal(a.status?.cleanup?.cgroupRemoved, true);
    assert.match(out, /left-a-mess/);
    assert.equal(a.status?.cleanup?.workspaceDeleted, true, JSON.stringify(a.status?.cleanup));
    assert.deepEqual(a.status?.cleanup?.errors ?? [], []);
    assert.equal(await exists(workspacePaths(node().onHost(node().paths.root), a.metadata!.uid!).dir), false);
  });

  it('an attacker in the container reaches nothing of the victim, the node or the sidecar; the victim and the node carry on', async (t) => {
    const ns = await createTestNamespace(t, 'oci-hostile');
    const n = node();
    const secret = `victim-secret-${Date.now()}`;
    const promptSecret = `victim-prompt-${Date.now()}`;
    await createAgent(ns, 'victim', {
      command: ['sh', '-c', 'echo victim-output-secret; sleep 600'],
      env: [{ name: 'VICTIM_SECRET', value: secret }],
      prompt: promptSecret,
      nodeName: n.nodeName,
    });
    const victim = await waitForAgent(ns, 'victim', (a) => a.status?.phase === 'Running', 'to run', 120_000);
    const vuid = victim.metadata!.uid!;
    const inside = workspacePaths(n.paths.root, vuid);
    const outside = workspacePaths(n.onHost(n.paths.root), vuid);
    await waitFor(async () => ((await readFile(outside.output, 'utf8').catch(() => '')).includes('victim-output-secret') ? true : undefined), { timeoutMs: 30_000, what: 'the victim output' });
    // Its report channel is its own socket: no token in its env for anyone to steal.
    assertChannelOnly(await environOf(vuid));
    const reportPort = (JSON.parse(await readFile(join(n.onHost(n.paths.root), 'sidecar.json'), 'utf8')) as { reportPort: number }).reportPort;
    const sidecarToken = (await readFile(n.tokenFile, 'utf8')).trim();
    const shim = join(n.onHost(n.paths.root), 'bin', 'agent-operator');
    const shimBefore = await readFile(shim);

    const attack = attackScript({ root: n.paths.root, victim: inside, victimUid: vuid, credentials: [`${SERVICE_ACCOUNT_DIR}/token`], reportPort });
    await createAgent(ns, 'attacker', { command: ['sh', '-c', attack], nodeName: n.nodeName });
    const attacker = await waitForCleanedUp(ns, 'attacker', 120_000);
    const out = await readFile(join(n.onHost(attacker.status!.cleanup!.archivePath!), 'output.log'), 'utf8');
    t.diagnostic(attackDiagnostic(out));
    assertAttackGotNothing(out, { 'victim env': secret, 'victim prompt': promptSecret, 'victim output': 'victim-output-secret', 'sidecar token': sidecarToken });

    // From outside: the victim runs on untouched, as its own uid; the node's files are intact.
    await waitForAgent(ns, 'victim', (a) => a.status?.phase === 'Running', 'to still run');
    assert.equal(await exists(outside.exitCode), false, 'the victim has an exit code while it runs');
    assert.equal((await stat(outside.agentJson)).isFile(), true);
    assert.equal(await readFile(outside.prompt, 'utf8'), promptSecret);
    for (const f of plantedPaths(n.paths.root, inside).filter((p) => !p.endsWith('/bin/agent-operator'))) {
      const host = f.startsWith(`${n.paths.root}/`) ? n.onHost(f) : f;
      assert.equal(await exists(host), false, `${f} (${host})`);
    }
    assert.deepEqual(await readFile(shim), shimBefore);
    const vid = await readSandboxUid(outside);
    assert.ok(vid !== undefined && vid > 0 && vid < 65_536, `the victim runs as its own uid of the pod (${vid})`);
    assert.ok((await pidsOfUser(n.hostRoot + vid)).length > 0, 'the victim runs as the host uid its pod uid maps to');
    assert.equal(attacker.status?.cleanup?.verifiedNoProcesses, true);
    assert.equal(attacker.status?.cleanup?.cgroupRemoved, true);
    // kill -9 -1 and `tmux kill-server` reached neither the sidecar nor the container.
    assert.ok(n.ctr.runc.running());
    assert.equal((await fetch(`${n.healthUrl}/healthz`, { signal: AbortSignal.timeout(2000) })).status, 200);

    // Stopped from outside, the victim is cleaned up: no process of its uid is left.
    assert.equal(await agents().delete({ namespace: ns, name: 'victim' }), true);
    await waitFor(async () => ((await exists(outside.dir)) ? undefined : true), { timeoutMs: 90_000, what: 'the victim to be cleaned up' });
    assert.deepEqual(await pidsOfUser(n.hostRoot + vid), []);
  });

  it("an escape with env -i, setsid and a double fork is killed, and verifiedNoProcesses is the kernel's word", async (t) => {
    const ns = await createTestNamespace(t, 'oci-escape');
    const n = node();
    await createAgent(ns, 'escaper', {
      command: ['sh', '-c', "env -i setsid sh -c '(exec sleep 1000 &)'; env -i setsid sh -c 'trap \"\" TERM HUP; while :; do sleep 1; done' & echo escaped; sleep 3"],
      nodeName: n.nodeName,
    });
    const running = await waitForAgent(ns, 'escaper', (a) => a.status?.phase === 'Running', 'to run', 120_000);
    const paths = workspacePaths(n.onHost(n.paths.root), running.metadata!.uid!);
    await waitFor(async () => ((await readFile(paths.output, 'utf8').catch(() => '')).includes('escaped') ? true : undefined), { timeoutMs: 30_000, what: 'the escape' });
    const id = await readSandboxUid(paths);
    assert.ok(id !== undefined);
    assert.ok((await pidsOfUser(n.hostRoot + id)).length >= 3, 'the escaped processes run as the agent uid');
    const done = await waitForCleanedUp(ns, 'escaper', 120_000);
    assert.equal(done.status?.cleanup?.verifiedNoProcesses, true, JSON.stringify(done.status?.cleanup));
    assert.deepEqual(await pidsOfUser(n.hostRoot + id), [], 'a process of the agent outlived its cleanup');
  });
});
