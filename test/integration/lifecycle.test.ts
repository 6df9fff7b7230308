/**
 * How an Agent ends, end to end (real control plane, controller, two simulated nodes, real tmux):
 * each way of ending gives its phase and reason, and leaves nothing behind on the node.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createTestNamespace, kubectl, waitFor } from '../support/cluster.js';
import { parseStat } from '../../src/sidecar/runtime/procfs.js';
import { killServer } from '../../src/sidecar/runtime/tmux.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import {
  agents,
  archiveDirOf,
  archivedOutput,
  assertArchive,
  assertNodeClean,
  assertNothingLeft,
  createAgent,
  patchSpec,
  useStack,
  waitForAgent,
  waitForCleanedUp,
  waitForGone,
  waitForOutput,
  type AgentObj,
} from '../support/stack.js';
import { alive } from '../support/procs.js';
import { hostPidOfAgent } from '../support/sandbox.js';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';

const isRunning = (a: AgentObj) => a.status?.phase === 'Running' || a.status?.phase === 'Working';

describe('agent lifecycle', () => {
  const stack = useStack('life');

  it('completes via report: Completed, progress and message recorded, cleaned and archived', async (t) => {
    const ns = await createTestNamespace(t, 'life-complete');
    await createAgent(ns, 'reporter', {
      command: ['sh', '-c', 'echo begin; agent-operator report --status working --progress 40 --message halfway; agent-operator report --status completed --message "all done"; sleep 30'],
    });
    const a = await waitForCleanedUp(ns, 'reporter');
    assert.equal(a.status?.phase, 'Completed');
    assert.equal(a.status?.reason, 'AgentCompleted');
    assert.equal(a.status?.message, 'all done');
    assert.equal(a.status?.progress, 40);
    assert.ok(a.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True'));
    // The agent slept after reporting: cleanup stopped it from outside.
    assert.ok((a.status?.cleanup?.processesKilled ?? 0) >= 1);
    assert.match(await archivedOutput(a), /begin/);
    await assertNothingLeft(stack(), a);
  });

  for (const [state, phase, reason] of [
    ['error', 'Error', 'AgentError'],
    ['failed', 'Failed', 'AgentFailed'],
  ] as const) {
    it(`reports ${state}: phase ${phase}, the agent's message kept, cleaned`, async (t) => {
      const ns = await createTestNamespace(t, `life-${state}`);
      await createAgent(ns, 'reporter', { command: ['sh', '-c', `agent-operator report --status ${state} --message "it went wrong: ${state}"; sleep 30`] });
      const a = await waitForCleanedUp(ns, 'reporter');
      assert.equal(a.status?.phase, phase);
      assert.equal(a.status?.reason, reason);
      assert.equal(a.status?.message, `it went wrong: ${state}`);
      assert.ok(a.status?.conditions?.some((c) => c.type === 'Failed' && c.status === 'True' && c.reason === reason));
      await assertNothingLeft(stack(), a);
    });
  }

  it('stopped via spec.stop: Terminated with the stop reason, cleaned', async (t) => {
    const ns = await createTestNamespace(t, 'life-stop');
    await createAgent(ns, 'sleeper', { command: ['sh', '-c', 'echo started; sleep 60'], cleanup: { gracePeriodSeconds: 2 } });
    const r = await waitForAgent(ns, 'sleeper', isRunning, 'to run');
    await waitForOutput(stack(), r, /started/);
    // As an admin would: kubectl's merge patch on the spec.
    const patched = await kubectl(['-n', ns, 'patch', 'agent', 'sleeper', '--type=merge', '-p', JSON.stringify({ spec: { stop: true, stopReason: 'no longer needed: ticket #42 closed' } })]);
    assert.equal(patched.exitCode, 0, patched.stderr);
    const a = await waitForCleanedUp(ns, 'sleeper');
    assert.equal(a.status?.phase, 'Terminated');
    assert.equal(a.status?.reason, 'Stopped');
    assert.match(a.status?.message ?? '', /no longer needed: ticket #42 closed/);
    assert.equal(a.status?.cleanup?.trigger, 'Stopped');
    assert.ok((a.status?.cleanup?.processesKilled ?? 0) >= 1);
    assert.equal(a.status?.cleanup?.escalatedToSigkill, false, 'sh and sleep die of SIGTERM');
    assert.match(await archivedOutput(a), /started/);
    await assertNothingLeft(stack(), a);
  });

  it('graceful stop: the agent handles SIGTERM within the grace period, and what it prints then is archived', async (t) => {
    const ns = await createTestNamespace(t, 'life-graceful');
    const script = 'trap \'echo "saving state"; sleep 0.3; echo "saved"; exit 0\' TERM; echo ready; while :; do sleep 0.1; done';
    await createAgent(ns, 'careful', { command: ['sh', '-c', script], cleanup: { gracePeriodSeconds: 10 } });
    const r = await waitForAgent(ns, 'careful', isRunning, 'to run');
    await waitForOutput(stack(), r, /ready/);
    await patchSpec(ns, 'careful', { stop: true });
    const a = await waitForCleanedUp(ns, 'careful');
    assert.equal(a.status?.phase, 'Terminated');
    assert.equal(a.status?.cleanup?.escalatedToSigkill, false);
    assert.ok((a.status?.cleanup?.durationMilliseconds ?? 0) < 10_000, 'did not wait out the grace period');
    assert.match(await archivedOutput(a), /saving state[\s\S]*saved/);
    await assertNothingLeft(stack(), a);
  });

  it('exits 0 without reporting: Completed (Exited), exit code recorded', async (t) => {
    const ns = await createTestNamespace(t, 'life-exit0');
    await createAgent(ns, 'quiet', { command: ['sh', '-c', 'echo bye'] });
    // Job-like conditions: what `kubectl wait` scripts rely on.
    const waited = await kubectl(['-n', ns, 'wait', '--for=condition=Complete', '--timeout=30s', 'agent/quiet'], { timeoutMs: 40_000 });
    assert.equal(waited.exitCode, 0, waited.stderr);
    const a = await waitForCleanedUp(ns, 'quiet');
    assert.equal(a.status?.phase, 'Completed');
    assert.equal(a.status?.reason, 'Exited');
    assert.equal(a.status?.exitCode, 0);
    assert.match(await archivedOutput(a), /bye/);
    await assertNothingLeft(stack(), a);
  });

  for (const c of [
    { name: 'exit3', how: 'exits non-zero', script: 'echo oops >&2; exit 3', exitCode: 3, output: /oops/ },
    { name: 'signal', how: 'killed by a signal', script: 'echo going; kill -KILL $$$$', exitCode: 137, output: /going/ },
  ]) {
    it(`${c.how}: Failed (ExitedNonZero) with status.exitCode ${c.exitCode}`, async (t) => {
      const ns = await createTestNamespace(t, `life-${c.name}`);
      await createAgent(ns, 'crasher', { command: ['sh', '-c', c.script] });
      const a = await waitForCleanedUp(ns, 'crasher');
      assert.equal(a.status?.phase, 'Failed');
      assert.equal(a.status?.reason, 'ExitedNonZero');
      assert.equal(a.status?.exitCode, c.exitCode);
      assert.match(a.status?.message ?? '', new RegExp(`code ${c.exitCode}`));
      assert.match(await archivedOutput(a), c.output);
      await assertNothingLeft(stack(), a);
    });
  }

  it('command not found: Error (LaunchFailed) naming the command', async (t) => {
    const ns = await createTestNamespace(t, 'life-nocmd');
    await createAgent(ns, 'typo', { command: ['claude-cod3-no-such-binary', '--print'] });
    const a = await waitForCleanedUp(ns, 'typo');
    assert.equal(a.status?.phase, 'Error');
    assert.equal(a.status?.reason, 'LaunchFailed');
    assert.match(a.status?.message ?? '', /claude-cod3-no-such-binary/);
    assert.match(a.status?.message ?? '', /not found/);
    assert.equal(a.status?.exitCode, undefined, 'a launch failure is not an exit of the agent');
    await assertNothingLeft(stack(), a);
  });

  it('deleted while running: cleaned, logs archived, then the object is gone', async (t) => {
    const ns = await createTestNamespace(t, 'life-delete');
    await createAgent(ns, 'doomed', { command: ['sh', '-c', 'echo doomed-output; sleep 60'], cleanup: { gracePeriodSeconds: 2 } });
    const r = await waitForAgent(ns, 'doomed', isRunning, 'to run');
    await waitForOutput(stack(), r, /doomed-output/);
    const uid = r.metadata!.uid!;
    assert.equal(await agents().delete({ namespace: ns, name: 'doomed' }), true);
    await waitForGone(ns, 'doomed');
    // The finalizer was released only after the node's cleanup: everything is done by now.
    await assertNodeClean(stack(), uid);
    const dir = archiveDirOf(stack(), r.status!.nodeName!, ns, 'doomed', uid);
    const manifest = await assertArchive(dir);
    assert.ok(manifest.files.some((f) => f.name === 'output.log'));
    assert.match(await readFile(join(dir, 'output.log'), 'utf8'), /doomed-output/);
    const record = JSON.parse(await readFile(join(dir, 'cleanup.json'), 'utf8')) as { trigger: string; verifiedNoProcesses: boolean; logsArchived: boolean };
    assert.equal(record.trigger, 'Deleted');
    assert.equal(record.verifiedNoProcesses, true);
    assert.equal(record.logsArchived, true);
  });

  it('its tmux server killed under it: Error (SessionLost), what it printed archived, its processes gone', async (t) => {
    const ns = await createTestNamespace(t, 'life-lost');
    // Survives the SIGHUP the dying server sends, so only the marker scan can end it.
    await createAgent(ns, 'orphaned', { command: ['sh', '-c', 'trap "" HUP; echo "before the loss $$$$"; while :; do sleep 1; done'], cleanup: { gracePeriodSeconds: 1 } });
    const r = await waitForAgent(ns, 'orphaned', isRunning, 'to run');
    const out = await waitForOutput(stack(), r, /before the loss \d+/);
    const pid = await hostPidOfAgent(r.metadata!.uid!, Number(/before the loss (\d+)/.exec(out)![1]));
    assert.equal(await killServer(stack().node(r.status!.nodeName!).root), true);
    const a = await waitForCleanedUp(ns, 'orphaned');
    assert.equal(a.status?.phase, 'Error');
    assert.equal(a.status?.reason, 'SessionLost', `${a.status?.reason}: ${a.status?.message}`);
    assert.match(a.status?.message ?? '', /session disappeared/);
    assert.match(await archivedOutput(a), /before the loss/);
    assert.equal(await alive(pid), false, `agent process ${pid} outlived its session`);
    await assertNothingLeft(stack(), a);
  });

  it('a process that ignores SIGTERM and SIGHUP and a setsid child that does too: all killed with SIGKILL', async (t) => {
    const ns = await createTestNamespace(t, 'life-stubborn');
    // The child runs in its own session and process group: only the marker scan finds it.
    // `$$$$` is `$$` after the command's $(VAR) expansion (`$$` escapes a `$`).
    const child = `trap "" TERM HUP; echo "child $$$$"; while :; do sleep 1; done`;
    const parent = `trap "" TERM HUP; setsid sh -c '${child}' & echo "parent $$$$"; while :; do sleep 1; done`;
    await createAgent(ns, 'stubborn', { command: ['sh', '-c', parent], cleanup: { gracePeriodSeconds: 1 } });
    const r = await waitForAgent(ns, 'stubborn', isRunning, 'to run');
    const out = await waitForOutput(stack(), r, /(?=[\s\S]*parent \d+)(?=[\s\S]*child \d+)/);
    // The pids it printed are those of its PID namespace.
    const parentPid = await hostPidOfAgent(r.metadata!.uid!, Number(/parent (\d+)/.exec(out)![1]));
    const childPid = await hostPidOfAgent(r.metadata!.uid!, Number(/child (\d+)/.exec(out)![1]));
    const [parentInfo, childInfo] = await Promise.all([parentPid, childPid].map(async (pid) => parseStat(await readFile(`/proc/${pid}/stat`, 'utf8'))));
    assert.equal(childInfo?.sid, childPid, 'the child leads its own session');
    assert.notEqual(childInfo?.sid, parentInfo?.sid);
    await patchSpec(ns, 'stubborn', { stop: true, stopReason: 'test' });
    const a = await waitForCleanedUp(ns, 'stubborn');
    assert.equal(a.status?.phase, 'Terminated');
    const c = a.status.cleanup!;
    assert.equal(c.escalatedToSigkill, true);
    assert.ok(c.processesKilled >= 2, `processesKilled ${c.processesKilled}`);
    assert.deepEqual(c.errors ?? [], []);
    assert.equal(await alive(parentPid), false, `parent ${parentPid} still alive`);
    assert.equal(await alive(childPid), false, `setsid child ${childPid} still alive`);
    await assertNothingLeft(stack(), a);
  });

  it('activeDeadlineSeconds: Terminated (DeadlineExceeded) once the deadline passes', async (t) => {
    const ns = await createTestNamespace(t, 'life-deadline');
    await createAgent(ns, 'slow', { command: ['sleep', '60'], activeDeadlineSeconds: 3, cleanup: { gracePeriodSeconds: 1 } });
    const a = await waitForCleanedUp(ns, 'slow', 30_000);
    assert.equal(a.status?.phase, 'Terminated');
    assert.equal(a.status?.reason, 'DeadlineExceeded');
    const ran = Date.parse(a.status.completionTime!) - Date.parse(a.status.startTime!);
    // Whole-second timestamps: at least the deadline (less rounding), and not much more.
    assert.ok(ran >= 2000 && ran <= 8000, `ran ${ran} ms for a 3 s deadline`);
    await assertNothingLeft(stack(), a);
  });

  it('idleTimeoutSeconds: a silent agent is Terminated (IdleTimeout); one that keeps printing or reporting is not', async (t) => {
    const ns = await createTestNamespace(t, 'life-idle');
    // The chatty one prints every 0.5 s for 9 s, more than twice the timeout, then exits 0.
    const chatty = 'i=0; while [ $i -lt 18 ]; do echo tick $i; sleep 0.5; i=$((i+1)); done';
    // The reporter prints nothing but reports progress as often: reports are signs of life too.
    const reporter = 'i=0; while [ $i -lt 18 ]; do agent-operator report --status working --progress $((i*5)) >/dev/null 2>&1; sleep 0.5; i=$((i+1)); done';
    await Promise.all([
      createAgent(ns, 'silent', { command: ['sleep', '60'], idleTimeoutSeconds: 4, cleanup: { gracePeriodSeconds: 1 } }),
      createAgent(ns, 'chatty', { command: ['sh', '-c', chatty], idleTimeoutSeconds: 4, cleanup: { gracePeriodSeconds: 1 } }),
      createAgent(ns, 'reporter', { command: ['sh', '-c', reporter], idleTimeoutSeconds: 4, cleanup: { gracePeriodSeconds: 1 } }),
    ]);
    // 90 s: the reporter starts node 18 times, over a second each on a loaded machine (load 28 on 2 cores took it past 30 s).
    const [silent, talker, reporting] = await Promise.all(['silent', 'chatty', 'reporter'].map((n) => waitForCleanedUp(ns, n, 90_000)));
    assert.ok(silent && talker && reporting);
    assert.equal(silent.status?.phase, 'Terminated');
    assert.equal(silent.status?.reason, 'IdleTimeout');
    const idle = Date.parse(silent.status.completionTime!) - Date.parse(silent.status.startTime!);
    assert.ok(idle >= 3000 && idle <= 9000, `idle-timed-out after ${idle} ms for a 4 s timeout`);
    assert.equal(talker.status?.phase, 'Completed', `chatty ended ${talker.status?.phase}/${talker.status?.reason}`);
    assert.equal(talker.status?.reason, 'Exited');
    assert.match(await archivedOutput(talker), /tick 17/);
    assert.equal(reporting.status?.phase, 'Completed', `reporter ended ${reporting.status?.phase}/${reporting.status?.reason}`);
    assert.equal(reporting.status?.progress, 85);
    for (const a of [silent, talker, reporting]) await assertNothingLeft(stack(), a);
  });

  it('reports working, blocked, a finding, completed: each phase shown while it lasts, findings summarised', async (t) => {
    const ns = await createTestNamespace(t, 'life-phases');
    // The agent moves on when the test drops a file into its working directory (scratch/).
    const script = [
      'agent-operator report --status working --progress 10 --message "step 1"',
      'while [ ! -e step2 ]; do sleep 0.1; done',
      'agent-operator report --status blocked --message "need a decision"',
      'while [ ! -e step3 ]; do sleep 0.1; done',
      'agent-operator report finding --type bug --severity high --message "off by one in parser.ts"',
      'agent-operator report --status completed --progress 100 --message done',
      'sleep 30',
    ].join('\n');
    await createAgent(ns, 'stepper', { command: ['sh', '-c', script], cleanup: { gracePeriodSeconds: 1 } });
    const working = await waitForAgent(ns, 'stepper', (a) => a.status?.phase === 'Working', 'to be Working');
    assert.equal(working.status?.progress, 10);
    assert.equal(working.status?.message, 'step 1');
    const scratch = workspacePaths(stack().node(working.status.nodeName!).root, working.metadata!.uid!).scratch;
    await writeFile(join(scratch, 'step2'), '');
    const blocked = await waitForAgent(ns, 'stepper', (a) => a.status?.phase === 'Blocked', 'to be Blocked');
    assert.equal(blocked.status?.reason, 'AgentBlocked');
    assert.equal(blocked.status?.message, 'need a decision');
    assert.equal(blocked.status?.progress, 10, 'a report without progress keeps the last one');
    await writeFile(join(scratch, 'step3'), '');
    const a = await waitForCleanedUp(ns, 'stepper');
    assert.equal(a.status?.phase, 'Completed');
    assert.equal(a.status?.progress, 100);
    assert.equal(a.status?.findings?.total, 1);
    assert.deepEqual(a.status?.findings?.bySeverity, { high: 1 });
    assert.equal(a.status?.findings?.recent?.[0]?.message, 'off by one in parser.ts');
    const archived = (a.status?.cleanup?.archivedFiles ?? []).map((f) => f.name);
    assert.ok(archived.includes('reports.jsonl') && archived.includes('findings.jsonl'), `archived: ${archived.join(', ')}`);
    await assertNothingLeft(stack(), a);
  });

  it('launch failures name what failed: a missing working directory, a command that is not executable', async (t) => {
    const ns = await createTestNamespace(t, 'life-launchfail');
    await createAgent(ns, 'no-dir', { command: ['true'], workingDir: '/nonexistent/work dir' });
    // A plain file without the execute bit that the sandbox shows (the installation is read-only in
    // it; some hosts' /etc files are executable).
    const notExecutable = join(PACKAGE_ROOT, 'package.json');
    await createAgent(ns, 'not-exec', { command: [notExecutable] });
    const noDir = await waitForCleanedUp(ns, 'no-dir');
    assert.equal(noDir.status?.phase, 'Error');
    assert.equal(noDir.status?.reason, 'LaunchFailed');
    assert.match(noDir.status?.message ?? '', /working directory \/nonexistent\/work dir/);
    const notExec = await waitForCleanedUp(ns, 'not-exec');
    assert.equal(notExec.status?.phase, 'Error');
    assert.equal(notExec.status?.reason, 'LaunchFailed');
    assert.ok(notExec.status?.message?.includes(`not executable: ${notExecutable}`), notExec.status?.message);
    await assertNothingLeft(stack(), noDir);
    await assertNothingLeft(stack(), notExec);
  });

  it('keepLogs false: cleaned, nothing archived', async (t) => {
    const ns = await createTestNamespace(t, 'life-nologs');
    await createAgent(ns, 'secretive', { command: ['sh', '-c', 'echo private'], cleanup: { keepLogs: false } });
    const a = await waitForCleanedUp(ns, 'secretive');
    assert.equal(a.status?.phase, 'Completed');
    assert.equal(a.status?.cleanup?.logsArchived, false);
    const dir = archiveDirOf(stack(), a.status.nodeName!, ns, 'secretive', a.metadata!.uid!);
    await assert.rejects(readFile(join(dir, 'manifest.json')), { code: 'ENOENT' });
    await assertNothingLeft(stack(), a);
  });

  it('ttlSecondsAfterFinished: deleted once finished for that long, after its cleanup; its archive stays', async (t) => {
    const ns = await createTestNamespace(t, 'life-ttl');
    const created = await createAgent(ns, 'ephemeral', { command: ['sh', '-c', 'echo short-lived'], ttlSecondsAfterFinished: 2 });
    const uid = created.metadata!.uid!;
    // Poll until it is gone, remembering when it was seen finished (the TTL counts from there).
    let finished: AgentObj | undefined;
    await waitFor(
      async () => {
        const a = await agents().find({ namespace: ns, name: 'ephemeral' });
        if (a?.status?.completionTime) finished ??= a;
        return a === undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: 'the Agent to be deleted by its TTL' },
    );
    assert.ok(finished, 'never seen finished');
    assert.equal(finished.status?.phase, 'Completed');
    assert.ok(Date.now() >= Date.parse(finished.status.completionTime!) + 2000, 'deleted before the TTL passed');
    // The finalizer held the deletion until the node had cleaned up and archived.
    await assertNodeClean(stack(), uid);
    const dir = archiveDirOf(stack(), finished.status.nodeName!, ns, 'ephemeral', uid);
    await assertArchive(dir);
    const record = JSON.parse(await readFile(join(dir, 'cleanup.json'), 'utf8')) as { verifiedNoProcesses: boolean };
    assert.equal(record.verifiedNoProcesses, true);
  });

  it('exits 0 leaving a daemon behind (double fork, setsid): Completed, and the daemon is killed', async (t) => {
    const ns = await createTestNamespace(t, 'life-daemon');
    // The agent's own process ends at once; what it started lives on unless cleanup finds it by its marker.
    await createAgent(ns, 'leaky', { command: ['sh', '-c', '(setsid sh -c \'echo "daemon $$$$"; exec sleep 300\' &); sleep 2; echo parent-exits'], cleanup: { gracePeriodSeconds: 1 } });
    const r = await waitForAgent(ns, 'leaky', isRunning, 'to run');
    // The pid it printed is its PID namespace's: found on the host while it lives.
    const daemon = await hostPidOfAgent(r.metadata!.uid!, Number(/daemon (\d+)/.exec(await waitForOutput(stack(), r, /daemon \d+/))![1]));
    const a = await waitForCleanedUp(ns, 'leaky');
    assert.equal(a.status?.phase, 'Completed');
    assert.equal(await alive(daemon), false, `daemon ${daemon} still alive`);
    assert.ok((a.status?.cleanup?.processesKilled ?? 0) >= 1, 'the daemon was signalled');
    await assertNothingLeft(stack(), a);
  });

  it('a burst of output right before exiting: every byte is in the archive', async (t) => {
    const ns = await createTestNamespace(t, 'life-flush');
    await createAgent(ns, 'loud', { command: ['sh', '-c', 'seq 1 100000; echo last-line'] });
    const a = await waitForCleanedUp(ns, 'loud');
    assert.equal(a.status?.phase, 'Completed');
    const lines = (await archivedOutput(a)).split(/\r?\n/);
    assert.equal(lines.filter((l) => /^\d+$/.test(l)).length, 100000);
    assert.ok(lines.includes('100000') && lines.includes('last-line'));
    await assertNothingLeft(stack(), a);
  });

  for (const how of ['stopped', 'deleted'] as const) {
    it(`${how} right after creation (racing the binding and the launch): ends cleanly`, async (t) => {
      const ns = await createTestNamespace(t, `life-race-${how}`);
      const created = await createAgent(ns, 'hasty', { command: ['sleep', '60'], cleanup: { gracePeriodSeconds: 1 } });
      if (how === 'stopped') {
        await patchSpec(ns, 'hasty', { stop: true, stopReason: 'changed my mind' });
        const a = await waitForAgent(ns, 'hasty', (x) => x.status?.phase === 'Terminated' && (!x.status.nodeName || !!x.status.cleanup?.completionTime), 'to be Terminated and cleaned');
        assert.equal(a.status?.reason, 'Stopped');
        await assertNothingLeft(stack(), a);
      } else {
        assert.equal(await agents().delete({ namespace: ns, name: 'hasty' }), true);
        await waitForGone(ns, 'hasty');
        await assertNodeClean(stack(), created.metadata!.uid!);
      }
    });
  }
});
