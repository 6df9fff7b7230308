/**
 * Crashes and shutdowns of the operator's own parts while agents run: the controller and a sidecar
 * killed with SIGKILL and restarted, a sidecar stopped gracefully, a namespace deleted under running
 * Agents, and a node that never comes back. Nothing may be launched twice, lost, or left behind.
 */
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { findCondition } from '../../src/api/conditions.js';
import { AGENT_ENV } from '../../src/api/constants.js';
import { apiErrorCode } from '../../src/dev/apiErrors.js';
import { killNodeLeftovers } from '../../src/dev/stack.js';
import { agentNodeClient } from '../../src/kube/resources.js';
import { exists } from '../../src/sidecar/runtime/files.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { environValue, findMarkerProcesses } from '../../src/sidecar/runtime/procfs.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { REPORTING_CONTROLLER as SIDECAR_EVENTS } from '../../src/sidecar/sidecar.js';
import { createTestNamespace, kubeConfig, waitFor } from '../support/cluster.js';
import { useGates } from '../support/gate.js';
import { agents, archiveDirOf, assertArchive, assertNodeClean, assertNothingLeft, createAgent, patchSpec, useStack, waitForAgent, waitForGone, type AgentObj } from '../support/stack.js';
import { eventsAbout, EXITED_ONCE, waitForEvents } from '../support/telemetry.js';

const waitRunning = (ns: string, name: string) => waitForAgent(ns, name, (a) => a.status?.phase === 'Running' && !!a.status.startTime, 'to be Running');

const uidOf = (a: AgentObj) => a.metadata!.uid!;

async function markerPids(root: string, uid: string): Promise<number[]> {
  return (await findMarkerProcesses(root, uid)).map((p) => p.pid);
}

/** The agent's command (`pid`) is alive with its marker, in a live session: its sidecar's end did not touch it. */
async function assertStillRunning(root: string, uid: string, pid: number): Promise<void> {
  assert.ok((await markerPids(root, uid)).includes(pid), `agent process ${pid} of ${uid} is gone`);
  assert.ok(
    (await listSessions(root)).some((s) => s.uid === uid && !s.dead),
    `session of ${uid} is gone`,
  );
}

describe('resilience: crashes and restarts of the controller and the sidecars', () => {
  const stack = useStack('res');
  const gates = useGates(stack);

  it('controller killed with SIGKILL mid-run: after its restart every Agent finishes once and is cleaned up', async (t) => {
    const ns = await createTestNamespace(t, 'res-controller');
    for (const name of ['c1', 'c2']) await createAgent(ns, name, gates().spec());
    const running = [await waitRunning(ns, 'c1'), await waitRunning(ns, 'c2')];
    // Its Events are written before it dies, so a repeat can only come from its successor.
    for (const a of running) await waitForEvents(ns, uidOf(a), ['Scheduled', 'SessionStarted']);
    const controller = stack().controllerComponents[0]!;
    await stack().stopComponent(controller.name, 'kill');
    assert.equal((await controller.process()!.exited).signal, 'SIGKILL');

    // With no controller: a new Agent waits unscheduled, and an agent that ends is still cleaned up by its node.
    await createAgent(ns, 'c3', gates().spec());
    await gates().open('c1');
    const c1 = await waitForAgent(ns, 'c1', (a) => !!a.status?.cleanup?.completionTime, 'to be cleaned up by its node');
    assert.equal(c1.status?.exitCode, 0);
    assert.equal((await agents().get({ namespace: ns, name: 'c3' })).status?.nodeName, undefined);

    await stack().startComponent(controller.name);
    running.push(await waitRunning(ns, 'c3'));
    await gates().open('c2');
    await gates().open('c3');
    const done = await gates().assertFinishedOnce(running, 'Completed');
    for (const a of done) {
      assert.equal(a.status?.reason, 'Exited');
      assert.deepEqual(await waitForEvents(ns, uidOf(a), ['CleanedUp']), EXITED_ONCE, `Events of ${a.metadata?.name}`);
      await assertNothingLeft(stack(), a);
    }
  });

  it('sidecar killed with SIGKILL mid-run: sessions live on, and after its restart it adopts them, takes reports and sees exits', async (t) => {
    const ns = await createTestNamespace(t, 'res-sidecar-kill');
    const node = stack().nodes[0]!;
    // r1 reports through the endpoint after the restart (a failed report exits 9 and fails the agent);
    // r2 exits while its sidecar is down.
    await createAgent(ns, 'r1', gates().spec('agent-operator report --status completed --message "reported after the restart" || exit 9\nsleep 60', { nodeName: node.name }));
    await createAgent(ns, 'r2', gates().spec('exit 0', { nodeName: node.name }));
    const running = [await waitRunning(ns, 'r1'), await waitRunning(ns, 'r2')];
    const [r1, r2] = running.map(uidOf) as [string, string];
    const reportPort = async () => (JSON.parse(await readFile(join(node.root, 'sidecar.json'), 'utf8')) as { reportPort: number }).reportPort;
    const port = await reportPort();
    const pid1 = await gates().pid('r1');
    const pid2 = await gates().pid('r2');
    const r1Socket = join(workspacePaths(node.root, r1).channel, 'report.sock');
    const socketBefore = await stat(r1Socket);

    await stack().stopComponent(node.name, 'kill');
    await assertStillRunning(node.root, r1, pid1);
    await assertStillRunning(node.root, r2, pid2);
    await gates().open('r2');
    await waitFor(() => exists(workspacePaths(node.root, r2).exitCode), { timeoutMs: 15_000, what: 'r2 to exit while its sidecar is down' });

    await stack().startComponent(node.name);
    assert.equal(await reportPort(), port, 'the report endpoint moved: running sessions could no longer report');
    // What only the node knows goes on its AgentNode, for `kubectl describe agentnode`.
    const agentNode = await agentNodeClient(kubeConfig()).get({ name: node.name });
    const rediscovered = await waitFor(
      async () => (await eventsAbout('default', agentNode.metadata!.uid!)).find((e) => e.reason === 'SessionsRediscovered' && e.reportingController === SIDECAR_EVENTS),
      { timeoutMs: 15_000, what: `a SessionsRediscovered Event on AgentNode ${node.name}` },
    );
    assert.match(rediscovered.note ?? '', /found [2-9]\d* agent workspace\(s\) from before this sidecar started/);
    // Sandboxed sessions report on their own socket, which the restarted sidecar listens on again.
    const environ = await readFile(`/proc/${pid1}/environ`);
    assert.equal(environValue(environ, AGENT_ENV.reportSocket), '/run/agent-operator/report.sock');
    const socketAfter = await stat(r1Socket);
    // Not the inode: a file system may hand the freed number straight to the new socket.
    assert.ok(socketAfter.isSocket() && socketAfter.ctimeMs > socketBefore.ctimeMs, 'the restarted sidecar made the socket anew');

    const [exited] = await gates().assertFinishedOnce([running[1]!], 'Completed');
    assert.equal(exited!.status?.reason, 'Exited');
    await gates().open('r1');
    const [reported] = await gates().assertFinishedOnce([running[0]!], 'Completed');
    assert.equal(reported!.status?.reason, 'AgentCompleted');
    assert.equal(reported!.status?.message, 'reported after the restart');
    for (const a of [exited!, reported!]) await assertNothingLeft(stack(), a);
  });

  it('sidecar stopped gracefully (SIGTERM): it exits 0 and its running sessions keep running', async (t) => {
    const ns = await createTestNamespace(t, 'res-sidecar-term');
    const node = stack().nodes[1]!;
    await createAgent(ns, 'g1', gates().spec('exit 0', { nodeName: node.name }));
    const running = await waitRunning(ns, 'g1');
    const uid = uidOf(running);
    const pid = await gates().pid('g1');
    await assertStillRunning(node.root, uid, pid);

    await stack().stopComponent(node.name, 'graceful');
    assert.deepEqual(await node.process()!.exited, { code: 0, signal: null });
    await assertStillRunning(node.root, uid, pid);

    await stack().startComponent(node.name);
    await gates().open('g1');
    const [done] = await gates().assertFinishedOnce([running], 'Completed');
    await assertNothingLeft(stack(), done!);
  });

  it('sidecar killed with SIGKILL in the middle of a cleanup: after its restart the cleanup finishes, nothing is left', async (t) => {
    const ns = await createTestNamespace(t, 'res-mid-cleanup');
    const node = stack().nodes[0]!;
    // Ignores SIGTERM (as its sleeps do): the cleanup waits out the grace period before SIGKILL.
    await createAgent(ns, 'm1', gates().spec('exit 0', { nodeName: node.name, cleanup: { gracePeriodSeconds: 4 } }, "trap '' TERM"));
    const running = await waitRunning(ns, 'm1');
    const uid = uidOf(running);
    const pid = await gates().pid('m1');
    await patchSpec(ns, 'm1', { stop: true, stopReason: 'stopped by the test' });
    await waitFor(() => exists(workspacePaths(node.root, uid).tombstone), { timeoutMs: 15_000, what: 'the cleanup of m1 to begin' });
    await stack().stopComponent(node.name, 'kill');
    await assertStillRunning(node.root, uid, pid);

    await stack().startComponent(node.name);
    const [done] = await gates().assertFinishedOnce([running], 'Terminated');
    assert.equal(done!.status?.reason, 'Stopped');
    assert.equal(done!.status?.cleanup?.escalatedToSigkill, true);
    assert.deepEqual(done!.status?.cleanup?.errors, []);
    await assertNothingLeft(stack(), done!);
  });

  it('deleting a namespace with running Agents completes: each agent is cleaned up and archived, no finalizer sticks', async (t) => {
    const core = kubeConfig().makeApiClient(CoreV1Api);
    const ns = await createTestNamespace(t, 'res-nsdel');
    for (const name of ['d1', 'd2']) await createAgent(ns, name, gates().spec());
    const running = [await waitRunning(ns, 'd1'), await waitRunning(ns, 'd2')];

    await core.deleteNamespace({ name: ns });
    await waitFor(
      async () => {
        try {
          await core.readNamespace({ name: ns });
          return false;
        } catch (err) {
          if (apiErrorCode(err) === 404) return true;
          throw err;
        }
      },
      { timeoutMs: 60_000, what: `namespace ${ns} to be gone` },
    );
    for (const a of running) {
      const name = a.metadata!.name!;
      const dir = archiveDirOf(stack(), a.status!.nodeName!, ns, name, uidOf(a));
      await assertArchive(dir);
      const record = JSON.parse(await readFile(join(dir, 'cleanup.json'), 'utf8')) as { trigger: string; verifiedNoProcesses: boolean; errors: string[] };
      assert.equal(record.trigger, 'Deleted');
      assert.equal(record.verifiedNoProcesses, true);
      assert.deepEqual(record.errors, []);
      assert.equal(await gates().starts(name), 1);
      await assertNodeClean(stack(), uidOf(a));
    }
  });
});

describe('resilience: a node that never comes back', () => {
  const stack = useStack('lost', { nodes: 1, heartbeatIntervalSeconds: 1, heartbeatGraceSeconds: 4, nodeLostGraceSeconds: 8 });
  const gates = useGates(stack);

  it('goes Ready=Unknown, its Agent becomes Error/NodeLost, and deleting the Agent releases it with a CleanupSkipped Warning', async (t) => {
    const ns = await createTestNamespace(t, 'res-lost');
    const node = stack().nodes[0]!;
    await createAgent(ns, 'l1', gates().spec());
    const uid = uidOf(await waitRunning(ns, 'l1'));
    await stack().stopComponent(node.name, 'kill');

    const nodes = agentNodeClient(kubeConfig());
    const unknown = await waitFor(
      async () => {
        const ready = findCondition((await nodes.get({ name: node.name })).status?.conditions, 'Ready');
        return ready?.status === 'Unknown' ? ready : undefined;
      },
      { timeoutMs: 30_000, what: `AgentNode ${node.name} to be Ready=Unknown` },
    );
    assert.equal(unknown.reason, 'NodeStatusUnknown');
    const lost = await waitForAgent(ns, 'l1', (a) => a.status?.phase === 'Error', 'to be given up', 40_000);
    assert.equal(lost.status?.reason, 'NodeLost');
    const lastHeartbeat = Date.parse((await nodes.get({ name: node.name })).status!.lastHeartbeatTime!);
    assert.ok(Date.parse(lost.status.completionTime!) - lastHeartbeat >= 8_000, 'given up before nodeLostGraceSeconds passed');
    // Nobody could stop it: the node is gone as far as the cluster knows.
    assert.ok((await markerPids(node.root, uid)).length > 0, 'the agent was stopped although its node was down');

    await agents().delete({ namespace: ns, name: 'l1' });
    await waitForGone(ns, 'l1', 30_000);
    const skipped = await waitFor(async () => (await eventsAbout(ns, uid)).find((e) => e.reason === 'CleanupSkipped'), { timeoutMs: 15_000, what: 'a CleanupSkipped Event' });
    assert.equal(skipped.type, 'Warning');
    assert.match(skipped.note ?? '', /NodeLost/);

    // What the lost node still runs is the node's business; here we are the node.
    await killNodeLeftovers(node.root, pino({ level: 'warn' }));
    assert.deepEqual(await markerPids(node.root, uid), []);
    assert.ok(!(await listSessions(node.root)).some((s) => s.uid === uid));
  });
});
