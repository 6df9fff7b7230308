/**
 * The sidecar SIGKILLed right after each step of a launch and of a cleanup (runtime/crashPoint.ts),
 * then restarted with the same command line, as a kubelet or `supervise` would: the Agent runs
 * exactly once, its output captured from the first byte, and is cleaned up with nothing left. And
 * the safety net: a launch nobody finishes ends as Error/LaunchTimeout and is cleaned up.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { CRASH_POINTS, type CrashPoint } from '../../src/sidecar/runtime/crashPoint.js';
import { exists } from '../../src/sidecar/runtime/files.js';
import { launchProgress, observeFacts, type LaunchProgress } from '../../src/sidecar/runtime/observe.js';
import { readAgentRecord, workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import type { NodeHandle } from '../../src/dev/stack.js';
import { createTestNamespace, waitFor } from '../support/cluster.js';
import { useGates } from '../support/gate.js';
import { archivedOutput, assertNodeClean, assertNothingLeft, createAgent, useStack, waitForAgent, waitForCleanedUp, type AgentObj } from '../support/stack.js';
import { eventsAbout, metricValue, scrape } from '../support/telemetry.js';

/** The agent's first output: its archived output.log must begin with it. */
const FIRST = 'first-output-line';

/** Arms the node's crash point, and waits for its sidecar to die there; the file is consumed when it fires. */
async function crashAt(node: NodeHandle, step: CrashPoint, trigger: () => Promise<unknown>): Promise<void> {
  await writeFile(node.crashFile!, step);
  await trigger();
  await waitFor(() => !node.process()!.running(), { timeoutMs: 60_000, what: `${node.name}'s sidecar to die right after ${step}` });
  assert.equal((await node.process()!.exited).signal, 'SIGKILL');
  assert.equal(await exists(node.crashFile!), false, `the crash point ${step} did not fire`);
}

const waitRunning = (ns: string, name: string) => waitForAgent(ns, name, (a) => a.status?.phase === 'Running' && !!a.status.startTime, 'to be Running', 90_000);

describe('crash points: the sidecar SIGKILLed right after each step, then restarted', () => {
  const stack = useStack('crash', { nodes: 1, crashPoints: true });
  const gates = useGates(stack);

  // What a crash right after each launch step leaves on the node, as launchProgress reads it. The
  // session, its remain-on-exit and its output capture come from one tmux call: a crash leaves all
  // three or none ('session' and 'remain-on-exit' remain resumable: runtimeDecisions.test.ts).
  const launchSteps: [CrashPoint, LaunchProgress][] = [
    ['launch:workspace', 'workspace'],
    ['launch:session', 'pipe-pane'],
    ['launch:release', 'release'],
  ];
  for (const [step, progress] of launchSteps) {
    it(`launch cut short after ${step}: resumed by the restarted sidecar, runs once, first byte captured`, async (t) => {
      const ns = await createTestNamespace(t, 'crash-launch');
      const node = stack().nodes[0]!;
      const name = step.replace(':', '-');
      let created: AgentObj | undefined;
      await crashAt(node, step, async () => {
        created = await createAgent(ns, name, gates().spec('exit 0', { nodeName: node.name }, `echo ${FIRST}`));
      });
      const uid = created!.metadata!.uid!;
      assert.equal(launchProgress(await observeFacts(node.root, uid)), progress, 'the node does not show the launch stopped at this step');
      if (progress !== 'release') assert.equal(await gates().starts(name), 0, 'the command ran before its output capture was attached');

      await stack().startComponent(node.name);
      const running = await waitRunning(ns, name);
      await gates().pid(name); // its start is recorded a moment after Running
      assert.equal(await gates().starts(name), 1);
      const samples = await scrape(node.metricsUrl);
      // At least one: a resume that fails on a busy machine (a tmux call timing out) is tried again, and counted again.
      assert.ok((metricValue(samples, 'agent_operator_launch_resumes_total', { step: progress }) ?? 0) >= 1, `no resume after ${progress} counted`);
      assert.equal(metricValue(samples, 'agent_operator_launches_unfinished'), 0);

      await gates().open(name);
      const [done] = await gates().assertFinishedOnce([running], 'Completed');
      assert.equal(done!.status?.reason, 'Exited');
      assert.ok((await archivedOutput(done!)).startsWith(FIRST), 'the first output bytes were not captured');
      await assertNothingLeft(stack(), done!);
    });
  }

  it('launch cut short after launch:release, the command ended before the sidecar came back: Completed/Exited, with when it started', async (t) => {
    const ns = await createTestNamespace(t, 'crash-release-ended');
    const node = stack().nodes[0]!;
    let created: AgentObj | undefined;
    await crashAt(node, 'launch:release', async () => {
      created = await createAgent(ns, 'ended', { command: ['sh', '-c', `echo ${FIRST}; exit 0`], nodeName: node.name });
    });
    const uid = created!.metadata!.uid!;
    const paths = workspacePaths(node.root, uid);
    await waitFor(() => exists(paths.exitCode), { timeoutMs: 30_000, what: 'the command to end while the sidecar is down' });
    assert.equal(launchProgress(await observeFacts(node.root, uid)), 'done');
    assert.equal((await readAgentRecord(paths))?.startedAt, undefined, 'the sidecar died before it recorded the start');

    await stack().startComponent(node.name);
    const done = await waitForCleanedUp(ns, 'ended');
    assert.deepEqual([done.status?.phase, done.status?.reason], ['Completed', 'Exited'], done.status?.message);
    const started = Date.parse(done.status?.startTime ?? '');
    assert.ok(Number.isFinite(started), 'status.startTime is set');
    // Whole seconds in status: within the second of its binding and its end.
    assert.ok(started >= Date.parse(done.status!.scheduledTime!) - 1000 && started <= Date.parse(done.status!.completionTime!), `started ${done.status?.startTime}`);
    assert.ok((await archivedOutput(done)).startsWith(FIRST), 'the first output bytes were not captured');
    await assertNothingLeft(stack(), done);
  });

  const cleanupSteps = CRASH_POINTS.filter((p) => p.startsWith('cleanup:'));
  for (const step of cleanupSteps) {
    it(`cleanup cut short after ${step}: finished by the restarted sidecar, nothing left`, async (t) => {
      const ns = await createTestNamespace(t, 'crash-cleanup');
      const node = stack().nodes[0]!;
      const name = step.replace(':', '-');
      await createAgent(ns, name, gates().spec('exit 0', { nodeName: node.name }, `echo ${FIRST}`));
      const running = await waitRunning(ns, name);
      await crashAt(node, step, () => gates().open(name));

      await stack().startComponent(node.name);
      const [done] = await gates().assertFinishedOnce([running], 'Completed');
      assert.equal(done!.status?.reason, 'Exited');
      assert.equal(done!.status?.cleanup?.trigger, 'Exited');
      assert.ok((await archivedOutput(done!)).startsWith(FIRST), 'the output was not archived whole');
      await assertNothingLeft(stack(), done!);
    });
  }
});

describe('launch timeout: a launch nobody finishes', () => {
  const TIMEOUT_SECONDS = 8;
  const stack = useStack('lto', { nodes: 1, crashPoints: true, launchTimeoutSeconds: TIMEOUT_SECONDS });
  const gates = useGates(stack);

  it('ends as Error/LaunchTimeout with a Warning Event, and is cleaned up once its node is back; the command never ran', async (t) => {
    const ns = await createTestNamespace(t, 'crash-lto');
    const node = stack().nodes[0]!;
    let created: AgentObj | undefined;
    // The sidecar dies with the session waiting for its go, and stays down past the timeout.
    await crashAt(node, 'launch:session', async () => {
      created = await createAgent(ns, 'stuck', gates().spec('exit 0', { nodeName: node.name }));
    });
    const uid = created!.metadata!.uid!;
    const failed = await waitForAgent(ns, 'stuck', (a) => a.status?.phase === 'Error', 'to be given up', 60_000);
    assert.equal(failed.status?.reason, 'LaunchTimeout');
    assert.match(failed.status?.message ?? '', new RegExp(`not started within ${TIMEOUT_SECONDS}s`));
    const waited = Date.parse(failed.status.completionTime!) - Date.parse(failed.status.scheduledTime!);
    assert.ok(waited >= TIMEOUT_SECONDS * 1000, `given up ${waited} ms after the binding`);
    const event = await waitFor(async () => (await eventsAbout(ns, uid)).find((e) => e.reason === 'LaunchTimeout'), { timeoutMs: 15_000, what: 'a LaunchTimeout Event' });
    assert.equal(event.type, 'Warning');

    await stack().startComponent(node.name);
    const done = await waitForCleanedUp(ns, 'stuck');
    assert.deepEqual([done.status?.phase, done.status?.reason], ['Error', 'LaunchTimeout'], 'the phase is sticky');
    assert.equal(done.status?.cleanup?.trigger, 'LaunchTimeout');
    assert.equal(done.status?.cleanup?.sessionKilled, true);
    assert.equal(done.status?.cleanup?.verifiedNoProcesses, true);
    assert.deepEqual(done.status?.cleanup?.errors, []);
    assert.equal(done.status?.startTime, undefined);
    assert.equal(await gates().starts('stuck'), 0, 'the command ran after its launch was given up');
    // Its (empty) output is archived like any agent's before the workspace goes.
    assert.equal(await readFile(`${done.status.cleanup.archivePath!}/output.log`, 'utf8'), '');
    await assertNodeClean(stack(), uid);
    const samples = await scrape(node.metricsUrl);
    assert.equal(metricValue(samples, 'agent_operator_launches_unfinished'), 0);
    assert.equal(metricValue(samples, 'agent_operator_launch_resumes_total', { step: 'pipe-pane' }), 0, 'a launch given up was resumed');
  });
});
