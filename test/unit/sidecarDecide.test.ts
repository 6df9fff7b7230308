import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Agent } from '../../src/api/agent.js';
import { nodeMayAct, planAgentOnNode, outputTimeResolutionMs, workersFor, type LocalFacts } from '../../src/sidecar/decide.js';
import { testAgent } from '../support/agents.js';
import { at, T0 } from '../support/time.js';

/** The node sees Agents bound to it, Scheduled, unless a case says otherwise. */
const agent = (spec: Partial<Agent['spec']> = {}, status: Agent['status'] = {}, meta: Partial<NonNullable<Agent['metadata']>> = {}): Agent =>
  testAgent({ spec, status: { nodeName: 'node-1', phase: 'Scheduled', ...status }, meta });
const fresh: LocalFacts = { launch: 'none', sessionAlive: false };
const running: LocalFacts = { launch: 'done', sessionAlive: true, sessionName: 'agent-u', startTime: at(1) };
/** Cut short by a crash: the session waits for its go, nothing written to status yet. */
const cutShort = (launch: LocalFacts['launch']): LocalFacts => ({ launch, sessionAlive: launch !== 'begun' && launch !== 'workspace', sessionName: 'agent-u' });

describe('planAgentOnNode', () => {
  const cases: { name: string; agent: Agent; local: LocalFacts; now?: number; action: string; patch?: Record<string, unknown> | undefined }[] = [
    { name: 'bound and not launched: launch', agent: agent(), local: fresh, action: 'launch' },
    { name: 'launch cut short in the workspace: resume it', agent: agent(), local: cutShort('begun'), action: 'launch:resume:begun' },
    { name: 'launch cut short after the workspace: resume it', agent: agent(), local: cutShort('workspace'), action: 'launch:resume:workspace' },
    { name: 'launch cut short after new-session: resume it (issue 11)', agent: agent(), local: cutShort('session'), action: 'launch:resume:session', patch: { sessionName: 'agent-u' } },
    { name: 'launch cut short after remain-on-exit: resume it', agent: agent(), local: cutShort('remain-on-exit'), action: 'launch:resume:remain-on-exit' },
    { name: 'launch cut short after pipe-pane: resume it', agent: agent(), local: cutShort('pipe-pane'), action: 'launch:resume:pipe-pane' },
    {
      name: 'released, start not recorded: resume it to record the start',
      agent: agent({}, { sessionName: 'agent-u' }),
      local: cutShort('release'),
      action: 'launch:resume:release',
      patch: undefined,
    },
    {
      name: 'launch cut short, then stopped: cleanup, not the launch',
      agent: agent({ stop: true }),
      local: cutShort('session'),
      action: 'cleanup:Stopped',
    },
    {
      name: 'launch cut short, then timed out by the controller: cleanup',
      agent: agent({}, { phase: 'Error', reason: 'LaunchTimeout' }),
      local: cutShort('pipe-pane'),
      action: 'cleanup:LaunchTimeout',
    },
    {
      name: 'cleanup cut short (tombstone, workspace gone), trigger not in status: the cleanup is finished, never a launch',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }),
      local: { launch: 'none', sessionAlive: false, cleanupBegun: 'Exited' },
      action: 'cleanup:Exited',
    },
    {
      name: 'cleanup cut short with the session still there: the cleanup is finished',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, cleanupBegun: 'IdleTimeout' },
      action: 'cleanup:IdleTimeout',
    },
    {
      name: 'cleanup cut short, status says why: the status trigger',
      agent: agent({}, { phase: 'Terminated', reason: 'Stopped', sessionName: 'agent-u', startTime: at(1) }),
      local: { launch: 'none', sessionAlive: false, cleanupBegun: 'Stopped' },
      action: 'cleanup:Stopped',
    },
    {
      name: "stopped, then the exit our kill caused: not the agent's exit, the stop stays the outcome",
      agent: agent({ stop: true }, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, sessionAlive: false, exitCode: 137, cleanupBegun: 'Stopped' },
      action: 'cleanup:Stopped',
      patch: undefined,
    },
    {
      name: 'past its deadline right after the release: the launch the cleanup cut off is no launch error',
      agent: agent({ activeDeadlineSeconds: 1 }, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, sessionAlive: false, launchError: "cannot set up the agent's sandbox", cleanupBegun: 'DeadlineExceeded' },
      now: T0 + 5_000,
      action: 'cleanup:DeadlineExceeded',
      patch: undefined,
    },
    {
      name: 'cleanup begun because it exited: its exit code is still written',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, sessionAlive: false, exitCode: 3, cleanupBegun: 'ExitedNonZero' },
      action: 'cleanup:ExitedNonZero',
      patch: { exitCode: 3 },
    },
    {
      name: 'launched: session facts written once',
      agent: agent(),
      local: running,
      action: 'none',
      patch: { sessionName: 'agent-u', startTime: at(1) },
    },
    {
      name: 'launched with limits the node cannot enforce: said in status with the start, for the controller to record',
      agent: agent(),
      local: { ...running, limitsNotEnforced: ['memory', 'pids'] },
      action: 'none',
      patch: { sessionName: 'agent-u', startTime: at(1), limitsNotEnforced: ['memory', 'pids'] },
    },
    {
      name: 'limits not enforced already in status: no write',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1), limitsNotEnforced: ['memory'] }),
      local: { ...running, limitsNotEnforced: ['memory'] },
      action: 'none',
      patch: undefined,
    },
    {
      name: 'launched with an output cap: written with the start, for the controller to compare with spec.output.maxSize',
      agent: agent(),
      local: { ...running, outputMaxBytes: 65536 },
      action: 'none',
      patch: { sessionName: 'agent-u', startTime: at(1), outputMaxBytes: 65536 },
    },
    {
      name: 'output cap already in status: no write',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1), outputMaxBytes: 65536 }),
      local: { ...running, outputMaxBytes: 65536 },
      action: 'none',
      patch: undefined,
    },
    { name: 'facts already in status: no write', agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }), local: running, action: 'none', patch: undefined },
    {
      name: 'exit seen locally: cleanup at once, exit code written',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, sessionAlive: false, exitCode: 0 },
      action: 'cleanup:Exited',
      patch: { exitCode: 0 },
    },
    {
      name: 'final report seen locally: cleanup at once',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, report: { state: 'failed', message: 'tests fail', time: at(5), progressReports: 0 } },
      action: 'cleanup:AgentFailed',
      patch: { reportedState: 'failed', reportedMessage: 'tests fail', lastReportTime: at(5), progressReports: 0 },
    },
    {
      name: 'working report: status reflects it, keeps running',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, report: { state: 'working', progress: 40, message: 'half', time: at(5), progressReports: 1 } },
      action: 'none',
      patch: { reportedState: 'working', progress: 40, reportedMessage: 'half', lastReportTime: at(5), progressReports: 1 },
    },
    {
      name: 'session vanished while running: cleanup at once as SessionLost, what was seen written',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }),
      local: { ...running, sessionAlive: false, sessionLost: 'the session disappeared' },
      action: 'cleanup:SessionLost',
      patch: { sessionLost: 'the session disappeared' },
    },
    { name: 'stopped: cleanup', agent: agent({ stop: true }, { sessionName: 'agent-u', startTime: at(1) }), local: running, action: 'cleanup:Stopped', patch: undefined },
    {
      name: 'deleted: cleanup',
      agent: agent({}, { sessionName: 'agent-u', startTime: at(1) }, { deletionTimestamp: at(3) }),
      local: running,
      action: 'cleanup:Deleted',
      patch: undefined,
    },
    {
      name: 'terminal phase set by the controller (deadline): cleanup with its reason',
      agent: agent({}, { phase: 'Terminated', reason: 'DeadlineExceeded', sessionName: 'agent-u', startTime: at(1) }),
      local: running,
      action: 'cleanup:DeadlineExceeded',
      patch: undefined,
    },
    {
      name: 'terminal before launch: cleanup (nothing to kill) so the finalizer can go',
      agent: agent({}, { phase: 'Error', reason: 'NodeLost' }),
      local: fresh,
      action: 'cleanup:NodeLost',
      patch: undefined,
    },
    {
      name: 'cleanup done: record written, nothing else',
      agent: agent({}, { phase: 'Completed', reason: 'Exited' }),
      local: {
        ...fresh,
        cleanup: { startTime: at(2), completionTime: at(3), sessionKilled: true, processesKilled: 0, escalatedToSigkill: false, promptDeleted: true, logsArchived: true, verifiedNoProcesses: true },
      },
      action: 'none',
      patch: {
        cleanup: { startTime: at(2), completionTime: at(3), sessionKilled: true, processesKilled: 0, escalatedToSigkill: false, promptDeleted: true, logsArchived: true, verifiedNoProcesses: true },
      },
    },
    {
      name: 'output within the resolution: lastOutputTime not moved',
      agent: agent({ idleTimeoutSeconds: 60 }, { sessionName: 'agent-u', startTime: at(1), lastOutputTime: at(10) }),
      local: { ...running, lastOutputAt: T0 + 20_000 },
      now: T0 + 21_000,
      action: 'none',
      patch: undefined,
    },
    {
      name: 'output past the resolution: lastOutputTime moved',
      agent: agent({ idleTimeoutSeconds: 60 }, { sessionName: 'agent-u', startTime: at(1), lastOutputTime: at(10) }),
      local: { ...running, lastOutputAt: T0 + 25_500 },
      now: T0 + 26_000,
      action: 'none',
      patch: { lastOutputTime: at(25) },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const d = planAgentOnNode(c.agent, c.local, c.now ?? T0 + 10_000);
      const action = d.action.kind === 'cleanup' ? `cleanup:${d.action.trigger}` : d.action.kind === 'launch' && d.action.resume ? `launch:resume:${d.action.resume}` : d.action.kind;
      assert.equal(action, c.action);
      if ('patch' in c) assert.deepEqual(d.statusPatch, c.patch);
    });
  }

  it('workers: one per agent slot plus two, at least four', () => {
    assert.deepEqual([0, 1, 2, 4, 5, 50].map(workersFor), [4, 4, 4, 6, 7, 52]);
  });

  it('output time resolution follows the idle timeout, within bounds', () => {
    assert.equal(outputTimeResolutionMs(undefined), 30_000);
    assert.equal(outputTimeResolutionMs(8), 2000);
    assert.equal(outputTimeResolutionMs(1), 1000);
    assert.equal(outputTimeResolutionMs(3600), 30_000);
  });
});

describe('nodeMayAct', () => {
  const before = agent({}, { phase: 'Scheduled', conditions: [] }, { resourceVersion: '10', labels: { 'orchestrator.dev/node': 'node-1' } });
  const changed = (over: { spec?: Partial<Agent['spec']>; status?: Agent['status']; meta?: Partial<NonNullable<Agent['metadata']>> }): Agent => ({
    ...before,
    spec: { ...before.spec, ...over.spec },
    status: { ...before.status, ...over.status },
    metadata: { ...before.metadata, resourceVersion: '11', ...over.meta },
  });
  const cases: { name: string; cur: Agent; acts: boolean }[] = [
    { name: "the node's own start written back", cur: changed({ status: { sessionName: 'agent-u', startTime: at(1), outputMaxBytes: 1024 } }), acts: false },
    { name: "the node's exit code and cleanup record written back", cur: changed({ status: { exitCode: 0, cleanup: { completionTime: at(2), processesKilled: 0 } as never } }), acts: false },
    { name: 'only managedFields moved with it', cur: changed({ status: { lastOutputTime: at(3) }, meta: { managedFields: [{ manager: 'x' }] } }), acts: false },
    { name: 'a resync (same resourceVersion)', cur: { ...before }, acts: true },
    { name: 'the phase the controller writes', cur: changed({ status: { phase: 'Running' } }), acts: true },
    { name: 'a terminal phase', cur: changed({ status: { phase: 'Failed', reason: 'LaunchTimeout' } }), acts: true },
    { name: 'spec.stop', cur: changed({ spec: { stop: true } }), acts: true },
    { name: 'deletion', cur: changed({ meta: { deletionTimestamp: at(4) } }), acts: true },
    { name: 'status.nodeName (the binding copy)', cur: changed({ status: { nodeName: 'node-2' } }), acts: true },
    { name: "the node's fields and another at once", cur: changed({ status: { startTime: at(1), phase: 'Running' } }), acts: true },
  ];
  for (const c of cases) it(c.name, () => assert.equal(nodeMayAct(before, c.cur), c.acts));
});
