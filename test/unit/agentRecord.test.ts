import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CleanupRecord } from '../../src/api/agent.js';
import { acceptsReports, advance, AgentRecords, transition, type AgentEvent, type AgentState } from '../../src/sidecar/agentRecord.js';

const record: CleanupRecord = {
  trigger: 'Exited',
  startTime: '2026-12-04T19:59:59Z',
  completionTime: '2026-12-04T20:00:00Z',
  sessionKilled: true,
  processesKilled: 1,
  escalatedToSigkill: false,
  promptDeleted: true,
  logsArchived: true,
  verifiedNoProcesses: true,
};
const launching: AgentState = { phase: 'launching' };
const begun = (since: number, step: 'none' | 'workspace' = 'none'): AgentState => ({ phase: 'launching', begun: { since, step } });
const running: AgentState = { phase: 'running' };
const terminating: AgentState = { phase: 'terminating', trigger: 'Stopped' };
const cleaned: AgentState = { phase: 'cleaned', record };

describe('transition', () => {
  const cases: { name: string; from: AgentState; event: AgentEvent; want: AgentState }[] = [
    { name: 'a launch decided: launching, since now', from: launching, event: { kind: 'launchDecided', step: 'none', at: 10 }, want: begun(10) },
    { name: 'a launch taken up again keeps when it began, with the step it is at', from: begun(10), event: { kind: 'launchDecided', step: 'workspace', at: 99 }, want: begun(10, 'workspace') },
    { name: 'started: running', from: begun(10), event: { kind: 'started' }, want: running },
    { name: 'found running after a restart: running', from: launching, event: { kind: 'started' }, want: running },
    { name: 'running stays running', from: running, event: { kind: 'started' }, want: running },
    { name: 'a launch refused for its inputs: no longer begun', from: begun(10), event: { kind: 'idle' }, want: launching },
    { name: 'idle while running changes nothing', from: running, event: { kind: 'idle' }, want: running },
    { name: 'a cleanup begins while launching', from: begun(10), event: { kind: 'cleanupBegun', trigger: 'Stopped' }, want: terminating },
    { name: 'a cleanup begins while running', from: running, event: { kind: 'cleanupBegun', trigger: 'Stopped' }, want: terminating },
    { name: 'a cleanup retried after a failure', from: terminating, event: { kind: 'cleanupBegun', trigger: 'Stopped' }, want: terminating },
    { name: 'the cleanup recorded: cleaned', from: terminating, event: { kind: 'cleaned', record }, want: cleaned },
    { name: 'a record from status after a restart: cleaned', from: launching, event: { kind: 'cleaned', record }, want: cleaned },
    { name: 'nothing launches once terminating', from: terminating, event: { kind: 'launchDecided', step: 'none', at: 10 }, want: terminating },
    { name: 'nothing starts once terminating', from: terminating, event: { kind: 'started' }, want: terminating },
    { name: 'nothing launches once cleaned', from: cleaned, event: { kind: 'launchDecided', step: 'none', at: 10 }, want: cleaned },
    { name: 'nothing starts once cleaned', from: cleaned, event: { kind: 'started' }, want: cleaned },
    { name: 'idle once cleaned changes nothing', from: cleaned, event: { kind: 'idle' }, want: cleaned },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(transition(c.from, c.event), c.want));
});

describe('acceptsReports', () => {
  const cases: [AgentState, boolean][] = [
    [launching, true], // its command may run and report before the launch is seen through
    [begun(1), true],
    [running, true],
    [terminating, false], // a report now would land after the archive
    [cleaned, false],
  ];
  for (const [s, want] of cases) it(`${s.phase}${s.phase === 'launching' && s.begun ? ' (begun)' : ''}: ${want}`, () => assert.equal(acceptsReports(s), want));
});

describe('AgentRecords', () => {
  it('one record per UID, made on first sight as launching', () => {
    const rs = new AgentRecords();
    const a = rs.ensure('a');
    assert.equal(rs.ensure('a'), a);
    assert.deepEqual(a.state, launching);
    assert.equal(rs.get('b'), undefined);
  });

  it('finds the agent a report token belongs to', () => {
    const rs = new AgentRecords();
    rs.ensure('a').tokenSha256 = 'aaa';
    rs.ensure('b').tokenSha256 = 'bbb';
    assert.equal(rs.byToken('bbb')?.uid, 'b');
    assert.equal(rs.byToken('ccc'), undefined);
  });

  it('forgets an agent at once, but one being cleaned up only when its cleanup ends', () => {
    const rs = new AgentRecords();
    rs.ensure('idle');
    const busy = rs.ensure('busy');
    advance(busy, { kind: 'cleanupBegun', trigger: 'Stopped' });
    rs.forget('idle');
    rs.forget('busy');
    assert.equal(rs.get('idle'), undefined);
    assert.equal(rs.get('busy'), busy, 'kept while its cleanup runs');
    assert.deepEqual(rs.terminating(), ['busy'], 'the sweep leaves it alone');
    advance(busy, { kind: 'cleaned', record });
    rs.cleanupEnded(busy);
    assert.equal(rs.get('busy'), undefined);
  });

  it('keeps a record whose cleanup ended while its Agent is still there', () => {
    const rs = new AgentRecords();
    const r = rs.ensure('a');
    advance(r, { kind: 'cleanupBegun', trigger: 'Stopped' });
    advance(r, { kind: 'cleaned', record });
    rs.cleanupEnded(r);
    assert.equal(rs.get('a'), r);
    assert.deepEqual(rs.terminating(), []);
  });

  it('lists the launches begun and not seen through', () => {
    const rs = new AgentRecords();
    advance(rs.ensure('a'), { kind: 'launchDecided', step: 'workspace', at: 5 });
    rs.ensure('b'); // bound here, no launch decided yet
    const c = rs.ensure('c');
    advance(c, { kind: 'launchDecided', step: 'none', at: 6 });
    advance(c, { kind: 'started' });
    assert.deepEqual(
      rs.unfinishedLaunches().map((u) => [u.record.uid, u.since, u.step]),
      [['a', 5, 'workspace']],
    );
  });
});
