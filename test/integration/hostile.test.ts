/**
 * Hostile agents on the real stack (issue 8's table): an attacker and a victim on one node. Every
 * attack is judged from outside (the node's files, /proc, tmux, the API), never by what the
 * attacker says about itself; the victim and the node carry on. And the positive side: a normal
 * agent has a HOME, writes its workspace and /tmp, reaches the network, reads its prompt, reports.
 */
import assert from 'node:assert/strict';
import { readFile, rm, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { REPORTING_CONTROLLER } from '../../src/controller/controller.js';
import { MAX_BODY_BYTES } from '../../src/report/protocol.js';
import { captureAccounting, captureLimits, readCaptureFiles, workspaceOutput } from '../../src/sidecar/runtime/capture.js';
import { cgroup2Mount, ownCgroup } from '../../src/sidecar/runtime/cgroup.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { readSandboxUid } from '../../src/sidecar/runtime/uids.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { createTestNamespace, waitFor } from '../support/cluster.js';
import { assertAttackGotNothing, assertChannelOnly, assertNormalAgentOutput, attackDiagnostic, attackScript, environOf, normalAgentScript, pidsOfUser, plantedPaths } from '../support/hostile.js';
import { eventsAbout, metricValue, scrape } from '../support/telemetry.js';
import { agents, archivedOutput, assertNodeClean, createAgent, patchSpec, useStack, waitForAgent, waitForCleanedUp, waitForOutput } from '../support/stack.js';

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

describe('hostile agents on one node', () => {
  // Low report caps, so that a flood shows within a test: 6 reports and one large report a minute.
  const stack = useStack('hostile', { nodes: 1, capacity: 6, sidecarArgs: ['--report-max-per-minute', '6', '--report-max-bytes-per-minute', String(MAX_BODY_BYTES)] });

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
    // Its report channel is its own socket: no token in its env or on the node for anyone to steal.
    assertChannelOnly(await environOf(vuid));
    assert.equal((JSON.parse(await readFile(vpaths.agentJson, 'utf8')) as { reportTokenSha256?: string }).reportTokenSha256, undefined);
    const vsocket = join(vpaths.channel, 'report.sock');
    assert.ok((await stat(vsocket)).isSocket());
    const reportPort = (JSON.parse(await readFile(join(node.root, 'sidecar.json'), 'utf8')) as { reportPort: number }).reportPort;
    const sidecarArgs = (await readFile(`/proc/${node.process()!.pid}/cmdline`, 'utf8')).split('\0');
    const kubeconfigPath = sidecarArgs[sidecarArgs.indexOf('--kubeconfig') + 1]!;
    const kubeconfig = await readFile(kubeconfigPath, 'utf8');
    const sidecarToken = /token: (\S+)/.exec(kubeconfig)?.[1];
    assert.ok(sidecarToken, 'the sidecar kubeconfig holds a token');
    const shimBefore = await readFile(join(node.root, 'bin', 'agent-operator'));

    const attack = attackScript({ root: node.root, victim: vpaths, victimUid: vuid, credentials: [kubeconfigPath, '/var/run/secrets/kubernetes.io/serviceaccount/token'], reportPort });
    await createAgent(ns, 'attacker', { command: ['sh', '-c', attack], env: [{ name: 'ATTACKER', value: '1' }] });
    const attacker = await waitForCleanedUp(ns, 'attacker');
    const out = await archivedOutput(attacker);
    t.diagnostic(attackDiagnostic(out));
    assertAttackGotNothing(out, { 'victim env': secret, 'victim prompt': promptSecret, 'victim output': 'victim-output-secret', 'sidecar token': sidecarToken });

    // From outside: the victim is untouched and the node is intact.
    victim = await waitForAgent(ns, 'victim', (a) => a.status?.phase === 'Running', 'to still run');
    assert.equal(await exists(vpaths.exitCode), false, 'the victim has an exit code while it runs');
    assert.equal((await stat(vpaths.agentJson)).isFile(), true);
    assert.ok(
      (await listSessions(node.root)).some((s) => s.uid === vuid && !s.dead),
      'the victim session is alive',
    );
    assert.equal(await readFile(vpaths.prompt, 'utf8'), promptSecret);
    // Its channel is intact and still its own: a report on it (root may connect) lands on the victim.
    const link = join('/tmp', `ao-hostile-${process.pid}`);
    await symlink(vpaths.channel, link);
    try {
      const r = await execa(
        'curl',
        ['-fsS', '--max-time', '10', '--unix-socket', join(link, 'report.sock'), '-H', 'Content-Type: application/json', '-d', '{"status":"working","progress":33}', 'http://agent/v1/report'],
        { reject: false, timeout: 20_000 },
      );
      assert.equal(r.exitCode, 0, r.stderr);
    } finally {
      await rm(link, { force: true });
    }
    victim = await waitForAgent(ns, 'victim', (a) => a.status?.progress === 33, 'to show the report made on its socket');
    for (const f of plantedPaths(node.root, vpaths).filter((p) => !p.endsWith('/bin/agent-operator'))) assert.equal(await exists(f), false, f);
    assert.deepEqual(await readFile(join(node.root, 'bin', 'agent-operator')), shimBefore);
    const vid = await readSandboxUid(vpaths);
    assert.ok(vid !== undefined && vid > 0, 'the victim runs as its own uid');
    assert.ok((await pidsOfUser(vid)).length > 0);

    assert.equal(attacker.status?.progress, 77);
    await assert.rejects(stat(join(workspacePaths(node.root, attacker.metadata!.uid!).channel, 'report.sock')), { code: 'ENOENT' }, 'the socket goes with the agent');

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
    await waitFor(async () => ((await exists(vpaths.dir)) ? undefined : true), { timeoutMs: 60_000, what: 'the victim to be cleaned up' });
    assert.equal(victim.metadata!.uid, vuid);
  });

  it("an escape with env -i, setsid and a double fork is killed, and verifiedNoProcesses is the kernel's word", async (t) => {
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

  it('output beyond its cap, without end: the node keeps its head and tail and no more, and kill -9 -1 does not reach the capture', async (t) => {
    const ns = await createTestNamespace(t, 'hostile-flood');
    const node = stack().nodes[0]!;
    await createAgent(ns, 'flood', { command: ['sh', '-c', 'yes flood-first & sleep 0.5; kill -9 -1; exec yes flood-line'], output: { maxSize: '64Ki' } });
    const running = await waitForAgent(ns, 'flood', (a) => a.status?.phase === 'Running', 'to run');
    const dir = workspacePaths(node.root, running.metadata!.uid!).dir;
    const limits = captureLimits(64 * 1024);
    // Judged from outside while it prints: far past its cap and still captured (after its kill -9 -1),
    // the node holding no more than the cap.
    let most = 0;
    const seen = await waitFor(
      async () => {
        const files = await readCaptureFiles(dir, limits);
        most = Math.max(most, files.headBytes + files.newBytes + files.slotBytes.reduce<number>((n, b) => n + (b ?? 0), 0));
        const total = captureAccounting(limits, files).totalBytes;
        if (total <= 20 * limits.maxBytes) return undefined;
        // And the capture is past the kill: the newest part it keeps holds what came after it.
        const newest = (await workspaceOutput(dir, limits)).parts.at(-1);
        return newest && (await readFile(newest, 'utf8').catch(() => '')).includes('flood-line') ? total : undefined;
      },
      { timeoutMs: 60_000, what: 'the flood to pass 20 times its cap, and on past its kill -9 -1', intervalMs: 20 },
    );
    t.diagnostic(`seen ${seen} bytes; the node held at most ${most}`);
    assert.ok(most <= limits.maxBytes, `the node held ${most} bytes of output, cap ${limits.maxBytes}`);
    await patchSpec(ns, 'flood', { stop: true });
    const a = await waitForCleanedUp(ns, 'flood');
    const o = a.status?.cleanup?.output;
    assert.equal(o?.maxBytes, limits.maxBytes);
    assert.equal(o?.truncated, true);
    assert.ok((o?.totalBytes ?? 0) >= seen && o.droppedBytes === o.totalBytes - (a.status?.cleanup?.archivedFiles ?? []).filter((f) => f.name.startsWith('output')).reduce((n, f) => n + f.bytes, 0));
    const archive = a.status!.cleanup!.archivePath!;
    assert.match(await readFile(join(archive, 'output.log'), 'utf8'), /^(flood-first\r\n)+/);
    assert.match(await readFile(join(archive, 'output-tail.log'), 'utf8'), /(flood-line\r\n)+/);
    await assertNodeClean(stack(), a.metadata!.uid!);
  });

  it('a normal agent: its own uid, HOME, workspace and /tmp writable, prompt readable, the report endpoint reachable', async (t) => {
    const ns = await createTestNamespace(t, 'hostile-positive');
    const script = normalAgentScript(['sleep 3']);
    await createAgent(ns, 'normal', { command: ['sh', '-c', script], prompt: 'read me', resources: { limits: { memory: '256Mi', cpu: '500m', pids: 200 } } });
    // Its limits: in its cgroup where the node's cgroup v2 has the controller, else a Warning Event.
    const node = stack().nodes[0]!;
    const running = await waitForAgent(ns, 'normal', (x) => x.status?.phase === 'Running' || x.status?.phase === 'Working', 'to run');
    const own = ownCgroup(await readFile(`/proc/${node.process()!.pid}/cgroup`, 'utf8'))!;
    const agentsCgroup = join(cgroup2Mount(await readFile('/proc/self/mountinfo', 'utf8'))!, own, node.agentsCgroup);
    const controllers = (await readFile(join(agentsCgroup, 'cgroup.subtree_control'), 'utf8')).split(/\s+/);
    const leaf = join(agentsCgroup, running.metadata!.uid!);
    const want: [string, string, string][] = [
      ['memory', 'memory.max', '268435456'],
      ['cpu', 'cpu.max', '50000 100000'],
      ['pids', 'pids.max', '200'],
    ];
    for (const [c, file, value] of want) if (controllers.includes(c)) assert.equal((await readFile(join(leaf, file), 'utf8')).trim(), value, file);
    const missing = want.map(([c]) => c).filter((c) => !controllers.includes(c));
    const a = await waitForCleanedUp(ns, 'normal');
    const out = await archivedOutput(a);
    assert.equal(a.status?.phase, 'Completed', `${a.status?.reason}: ${a.status?.message}\n${out}`);
    assertNormalAgentOutput(out);
    assert.equal(a.status?.progress, 50);
    assert.equal(a.status?.findings?.recent?.[0]?.message, 'via curl');
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

  it("a report flood is refused at the agent's caps (429, counted in /metrics); other agents and the node carry on", async (t) => {
    const ns = await createTestNamespace(t, 'hostile-flood');
    const node = stack().nodes[0]!;
    const capped = async (cap: string) => metricValue(await scrape(node.metricsUrl), 'agent_operator_reports_capped_total', { cap }) ?? 0;
    const before = { rate: await capped('rate'), bytes: await capped('bytes') };
    // Rate: eight reports at once over its socket (curl, fast: no refill of one per 10 s between them).
    const flood = [
      'for i in 1 2 3 4 5 6 7 8; do',
      `  curl -sS --max-time 10 --unix-socket "$AGENT_REPORT_SOCKET" -H 'Content-Type: application/json' -d "{\\"status\\":\\"working\\",\\"progress\\":$i}" -w " http=%{http_code}\\n" http://agent/v1/report`,
      'done',
      'echo flood-done',
    ].join('\n');
    // Bytes: the first large finding (60 kB, made in the session: a spec arg holds 16 KiB) fits the
    // minute's bytes, the second does not (the CLI prints the refusal).
    const hoard = [
      'big="\\"$$(head -c 60000 /dev/zero | tr "\\0" x)\\""',
      ...[1, 2].map((i) => `agent-operator report finding --type dump --severity info --message big${i} --data "$big"; echo "big${i} rc=$?"`),
    ].join('\n');
    await createAgent(ns, 'flooder', { command: ['sh', '-c', flood] });
    await createAgent(ns, 'hoarder', { command: ['sh', '-c', hoard] });
    await createAgent(ns, 'calm', { command: ['sh', '-c', 'sleep 2; agent-operator report --status completed --progress 100 --message calm-and-done'] });
    const flooder = await waitForCleanedUp(ns, 'flooder');
    const out = await archivedOutput(flooder);
    assert.match(out, /flood-done/);
    const codes = [...out.matchAll(/http=(\d+)/g)].map((m) => m[1]);
    assert.deepEqual(codes, ['202', '202', '202', '202', '202', '202', '429', '429'], out);
    assert.match(out, /\{"error":"report rate cap reached: this agent may send at most 6 reports per minute; retry in \d+ s"\} http=429/);
    assert.equal(flooder.status?.progress, 6, 'what was admitted is recorded, what was refused is not');
    const hoarder = await waitForCleanedUp(ns, 'hoarder');
    const hoarded = await archivedOutput(hoarder);
    assert.match(hoarded, /big1 rc=0/);
    assert.match(hoarded, /refused \(HTTP 429\): report bytes cap reached: this agent may send at most \d+ bytes of reports per minute; retry in \d+ s\r?\nbig2 rc=1/);
    assert.equal(hoarder.status?.findings?.total, 1);
    assert.equal(await capped('rate'), before.rate + 2);
    assert.equal(await capped('bytes'), before.bytes + 1);
    const calm = await waitForCleanedUp(ns, 'calm');
    assert.equal(calm.status?.phase, 'Completed');
    assert.equal(calm.status?.message, 'calm-and-done');
  });
});
