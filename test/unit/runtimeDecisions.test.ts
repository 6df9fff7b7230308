import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildManifest, manifestProblems } from '../../src/sidecar/runtime/archive.js';
import { boundErrors, decideArchive, mayDeleteWorkspace, workspaceSupersedesArchive } from '../../src/sidecar/runtime/cleanup.js';
import { composeLaunch, decideStart } from '../../src/sidecar/runtime/launch.js';
import { interpretObservation, launchProgress, type ObservedFacts } from '../../src/sidecar/runtime/observe.js';
import { descendantsOf, environValue, groupByAgent, parseStat, type Proc } from '../../src/sidecar/runtime/procfs.js';
import { decideOrphans } from '../../src/sidecar/runtime/sweep.js';
import { selectTargets } from '../../src/sidecar/runtime/terminate.js';
import type { AgentRecord } from '../../src/sidecar/runtime/workspace.js';

const UID = '0f8c2b1e-7d4a-4c3b-9e2f-1a2b3c4d5e6f';
const UID2 = '1f8c2b1e-7d4a-4c3b-9e2f-1a2b3c4d5e6f';
const UID3 = '2f8c2b1e-7d4a-4c3b-9e2f-1a2b3c4d5e6f';
const ROOT = '/node';
const promptOf = (uid: string, root = ROOT) => `${root}/agents/${uid}/prompt`;

const record: AgentRecord = { version: 1, uid: UID, namespace: 'ns', name: 'a', sessionName: `agent-${UID}`, createdAt: '2024-01-01T00:00:00.000Z', startedAt: '2024-01-01T00:00:01.000Z' };
const { startedAt: _started, ...unstarted } = record;
const pane = (over: Partial<NonNullable<ObservedFacts['pane']>> = {}) => ({ sessionName: `agent-${UID}`, paneId: '%1', panePid: 100, dead: false, piped: true, remainOnExit: true, ...over });

/** Each step of a launch and the marks it leaves: what a crash right after it leaves on the node. */
describe('launchProgress and decideStart: a launch cut short after each step', () => {
  const waiting = { workspaceExists: true, record: unstarted, goPresent: true };
  const cases: [string, ObservedFacts, ReturnType<typeof launchProgress>, ReturnType<typeof decideStart>][] = [
    ['nothing there', { workspaceExists: false, goPresent: false }, 'none', 'fresh'],
    ['workspace begun, no agent.json', { workspaceExists: true, goPresent: true }, 'begun', 'fresh'],
    ['a session without agent.json is not ours to adopt', { workspaceExists: true, goPresent: false, pane: pane() }, 'done', 'none'],
    ['after the workspace (agent.json, go), no session', waiting, 'workspace', 'fresh'],
    ['after new-session', { ...waiting, pane: pane({ piped: false, remainOnExit: false }) }, 'session', 'finish'],
    ['after remain-on-exit', { ...waiting, pane: pane({ piped: false }) }, 'remain-on-exit', 'finish'],
    ['after pipe-pane', { ...waiting, pane: pane() }, 'pipe-pane', 'finish'],
    ['after the release, start not recorded', { ...waiting, goPresent: false, pane: pane() }, 'release', 'finish'],
    ['started and recorded', { ...waiting, record, goPresent: false, pane: pane() }, 'done', 'none'],
    ['released, exited before the start was recorded', { ...waiting, goPresent: false, exitCodeText: '0\n', pane: pane({ dead: true, deadStatus: 0 }) }, 'done', 'none'],
    ['released, then the session lost: never again', { ...waiting, goPresent: false }, 'done', 'none'],
    ['launch error', { ...waiting, goPresent: false, launchErrorText: 'command not found: x', exitCodeText: '127' }, 'done', 'none'],
    ['the session died before its go: never runs there; launch() recreates it', { ...waiting, pane: pane({ dead: true, deadStatus: 125 }) }, 'done', 'recreate'],
  ];
  for (const [name, facts, progress, start] of cases) {
    it(name, () => {
      assert.equal(launchProgress(facts), progress);
      assert.equal(decideStart(facts), start);
    });
  }
});

describe('interpretObservation', () => {
  const base: ObservedFacts = { workspaceExists: true, record, goPresent: false };
  const cases: [string, ObservedFacts, Record<string, unknown>][] = [
    [
      'running',
      { ...base, pane: pane(), output: { bytes: 5, mtimeMs: Date.parse('2024-01-01T00:00:02Z') } },
      { sessionAlive: true, sessionExists: true, started: true, exited: false, lost: false, panePid: 100, outputBytes: 5, lastOutputAt: '2024-01-01T00:00:02.000Z', startTime: record.startedAt },
    ],
    ['exited 0 (file)', { ...base, exitCodeText: '0\n', pane: pane({ dead: true, deadStatus: 0 }) }, { exited: true, exitCode: 0, sessionAlive: false, sessionExists: true }],
    ['exited 3, session already killed', { ...base, exitCodeText: '3\n' }, { exited: true, exitCode: 3, sessionExists: false, lost: false }],
    ['the file wins over the pane', { ...base, exitCodeText: '3\n', pane: pane({ dead: true, deadStatus: 9 }) }, { exitCode: 3 }],
    ['killed by a signal: 128+N from tmux', { ...base, pane: pane({ dead: true, deadSignal: 9 }) }, { exited: true, exitCode: 137 }],
    [
      'launch error',
      { ...base, exitCodeText: '127\n', launchErrorText: 'command not found: nope\n', pane: pane({ dead: true, deadStatus: 127 }) },
      { exitCode: 127, launchError: 'command not found: nope' },
    ],
    ['lost', { ...base }, { lost: true, started: true, exited: false, sessionExists: false }],
    ['waiting for go', { ...base, goPresent: true, pane: pane() }, { started: false, sessionAlive: true, lost: false }],
    [
      'died before go',
      { ...base, goPresent: true, pane: pane({ dead: true, deadStatus: 125 }) },
      { started: false, exited: true, exitCode: 125, launchError: 'the session ended before the command was started (status 125)' },
    ],
    ['nothing at all', { workspaceExists: false, goPresent: false }, { workspaceExists: false, sessionExists: false, started: false, exited: false, lost: false, outputBytes: 0 }],
    ['garbage exit-code is ignored', { ...base, exitCodeText: 'x' }, { exited: false, lost: true }],
    // The sidecar died between the release and its record of the start, and the command ended before it came back.
    [
      'released, ended, its start never recorded: when its exec step ran',
      { ...base, record: unstarted, exitCodeText: '0\n', pane: pane({ dead: true, deadStatus: 0 }), execStartedAtMs: Date.parse('2024-01-01T00:00:01.250Z') },
      { started: true, exitCode: 0, startTime: '2024-01-01T00:00:01.250Z' },
    ],
    ["the record of the start wins over the exec step's time", { ...base, pane: pane(), execStartedAtMs: Date.parse('2024-01-01T00:00:01.250Z') }, { startTime: record.startedAt }],
    ['released, the exec step not run yet: no start', { ...base, record: unstarted, pane: pane() }, { started: true, startTime: undefined }],
    [
      'released and running, its start not recorded: the resume records it, not the observation',
      { ...base, record: unstarted, pane: pane(), execStartedAtMs: Date.parse('2024-01-01T00:00:01.250Z') },
      { started: true, startTime: undefined },
    ],
    [
      'not released: no start, whatever a file says',
      { ...base, record: unstarted, goPresent: true, pane: pane(), execStartedAtMs: Date.parse('2024-01-01T00:00:01.250Z') },
      { started: false, startTime: undefined },
    ],
  ];
  for (const [name, facts, want] of cases) {
    it(name, () => {
      const got = interpretObservation(UID, facts) as unknown as Record<string, unknown>;
      for (const [k, v] of Object.entries(want)) assert.deepEqual(got[k], v, k);
      if (!('launchError' in want)) assert.equal(got.launchError, undefined);
    });
  }
});

describe('composeLaunch', () => {
  const o = { root: ROOT, uid: UID, namespace: 'ns', name: 'a', binDir: '/opt/ao/bin', basePath: '/usr/bin:/bin' };
  it('sets the platform env, keeps the caller env in order and puts binDir first in PATH', () => {
    const c = composeLaunch({ ...o, command: ['run', '--prompt=$(AGENT_PROMPT_FILE)', '$(X)', '$$(X)', '$(NOPE)'], env: { AGENT_REPORT_URL: 'http://u', AGENT_REPORT_TOKEN: 't', X: 'x y' } });
    assert.deepEqual(c.argv, ['run', `--prompt=${promptOf(UID)}`, 'x y', '$(X)', '$(NOPE)']);
    assert.deepEqual(c.commandEnv, [
      ['HOME', `${ROOT}/agents/${UID}/home`],
      ['AGENT_NAME', 'a'],
      ['AGENT_NAMESPACE', 'ns'],
      ['AGENT_UID', UID],
      ['AGENT_PROMPT_FILE', promptOf(UID)],
      ['AGENT_REPORT_URL', 'http://u'],
      ['AGENT_REPORT_TOKEN', 't'],
      ['X', 'x y'],
      ['PATH', '/opt/ao/bin:/usr/bin:/bin'],
    ]);
    assert.deepEqual(c.sessionEnv, {
      AGENT_NAME: 'a',
      AGENT_NAMESPACE: 'ns',
      AGENT_UID: UID,
      AGENT_PROMPT_FILE: promptOf(UID),
      PATH: '/opt/ao/bin:/usr/bin:/bin',
      AGENT_REPORT_URL: 'http://u',
      AGENT_REPORT_TOKEN: 't',
    });
  });
  it("carries a sandboxed agent's report socket into the session env, and no token", () => {
    const c = composeLaunch({ ...o, command: ['x'], env: { AGENT_REPORT_SOCKET: '/run/agent-operator/report.sock' } });
    assert.equal(c.sessionEnv.AGENT_REPORT_SOCKET, '/run/agent-operator/report.sock');
    assert.deepEqual(
      c.commandEnv.filter(([k]) => k.startsWith('AGENT_REPORT_')),
      [['AGENT_REPORT_SOCKET', '/run/agent-operator/report.sock']],
    );
  });
  it('gives the agent its own HOME unless the spec sets one', () => {
    assert.deepEqual(
      composeLaunch({ ...o, command: ['x'], env: { HOME: '/h' } }).commandEnv.filter(([k]) => k === 'HOME'),
      [['HOME', '/h']],
    );
  });
  it("prepends binDir to the spec's own PATH", () => {
    const c = composeLaunch({ ...o, command: ['x'], env: { PATH: '/custom' } });
    assert.deepEqual(c.commandEnv.at(-1), ['PATH', '/opt/ao/bin:/custom']);
    assert.equal(c.sessionEnv.PATH, '/opt/ao/bin:/usr/bin:/bin');
  });
  const bad: [string, Partial<Parameters<typeof composeLaunch>[0]>, RegExp][] = [
    ['empty command', { command: [] }, /at least one/],
    ['platform variable', { env: { AGENT_UID: 'x' } }, /set by the platform/],
    ['platform prompt file', { env: { AGENT_PROMPT_FILE: '/etc/passwd' } }, /set by the platform/],
    ['bad env name', { env: { 'A=B': 'x' } }, /invalid environment variable name/],
    ['env name with a newline', { env: { 'A\nB': 'x' } }, /invalid environment variable name/],
    ['NUL in a value', { env: { A: 'x\0y' } }, /NUL/],
    ['NUL in an argument', { command: ['a\0b'] }, /NUL/],
    ['relative binDir', { binDir: 'bin' }, /binDir/],
    ['bad namespace', { namespace: '../x' }, /invalid namespace/],
  ];
  for (const [name, over, re] of bad) {
    it(`rejects ${name}`, () => assert.throws(() => composeLaunch({ ...o, command: ['x'], env: {}, ...over }), re));
  }
});

describe('procfs parsing', () => {
  it('parses /proc/<pid>/stat, also with a hostile command name', () => {
    const line = '4242 (a) b (c) d) S 1 4242 4242 34816 4242 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0';
    assert.deepEqual(parseStat(line), { pid: 4242, ppid: 1, pgid: 4242, sid: 4242, state: 'S', startTime: 987654, comm: 'a) b (c) d' });
    assert.equal(parseStat('garbage'), undefined);
  });
  it('reads one variable from an environ block', () => {
    const env = Buffer.from(`A=1\0AGENT_UID=${UID}\0XAGENT_UID=no\0B=x=y\0EMPTY=\0`);
    assert.equal(environValue(env, 'AGENT_UID'), UID);
    assert.equal(environValue(env, 'B'), 'x=y');
    assert.equal(environValue(env, 'EMPTY'), '');
    assert.equal(environValue(env, 'GENT_UID'), undefined);
    assert.equal(environValue(Buffer.alloc(0), 'A'), undefined);
    assert.equal(environValue(Buffer.from('A=unterminated'), 'A'), 'unterminated');
  });
  it('finds descendants', () => {
    const p = (pid: number, ppid: number) => ({ pid, ppid, pgid: pid, sid: pid, state: 'S', startTime: 0, comm: 'x' });
    const procs = [p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(13, 10), p(20, 1), p(21, 20)];
    assert.deepEqual([...descendantsOf(procs, 10)].sort(), [11, 12, 13]);
    assert.deepEqual([...descendantsOf(procs, 12)], []);
  });
});

const proc = (over: Partial<Proc> & { pid: number }): Proc => ({ ppid: 1, pgid: over.pid, sid: over.pid, state: 'S', startTime: 1, comm: 'x', ...over });
const marked = (pid: number, uid = UID, root = ROOT, over: Partial<Proc> = {}) => proc({ pid, agentUid: uid, promptFile: promptOf(uid, root), ...over });

describe('selectTargets', () => {
  const procs: Proc[] = [
    proc({ pid: 100, ppid: 50 }), // pane process (launcher)
    proc({ pid: 101, ppid: 100, pgid: 100 }), // child, environment cleared
    proc({ pid: 102, ppid: 101, pgid: 102, sid: 102 }), // setsid'd grandchild, environment cleared
    marked(200, UID, ROOT, { ppid: 1, pgid: 200 }), // escaped by double fork, marker kept
    marked(300, UID2), // another agent on this node
    marked(400, UID, '/other-node'), // the same UID on another simulated node
    proc({ pid: 500, agentUid: UID }), // marker without the matching prompt file
    marked(999), // ourselves, in theory
  ];
  const pids = (t: Proc[]) => t.map((p) => p.pid).sort((a, b) => a - b);
  it('pane alive: group, descendants and marker carriers', () => {
    assert.deepEqual(pids(selectTargets(procs, { root: ROOT, uid: UID, pane: { pid: 100, alive: true }, selfPid: 999 })), [100, 101, 102, 200]);
  });
  it('pane dead: the marker only (its pid may have been reused)', () => {
    assert.deepEqual(pids(selectTargets(procs, { root: ROOT, uid: UID, pane: { pid: 100, alive: false }, selfPid: 999 })), [200]);
  });
  it('no session: the marker only', () => {
    assert.deepEqual(pids(selectTargets(procs, { root: ROOT, uid: UID, selfPid: 999 })), [200]);
  });
  it('cgroup members are targets, whatever they did to their environment or tree', () => {
    const inCgroup = new Set([102, 600]);
    assert.deepEqual(pids(selectTargets([...procs, proc({ pid: 600, ppid: 1 })], { root: ROOT, uid: UID, selfPid: 999, inCgroup })), [102, 200, 600]);
  });
  it('sandboxed: the launcher (pane process) is spared, it ends by itself', () => {
    assert.deepEqual(pids(selectTargets(procs, { root: ROOT, uid: UID, pane: { pid: 100, alive: true }, selfPid: 999, spare: 100 })), [101, 102, 200]);
  });
  it('groups marker processes by agent, for this root only', () => {
    const g = groupByAgent(procs, ROOT);
    assert.deepEqual([...g.keys()].sort(), [UID, UID2]);
    assert.deepEqual(pids(g.get(UID)!), [200, 999]);
  });
});

describe('archive decisions', () => {
  const cases: [Parameters<typeof decideArchive>[0], ReturnType<typeof decideArchive>][] = [
    [{ keepLogs: false, archive: 'absent', workspaceExists: true }, 'skip'],
    [{ keepLogs: false, archive: 'valid', workspaceExists: false }, 'skip'],
    [{ keepLogs: true, archive: 'absent', workspaceExists: true }, 'create'],
    [{ keepLogs: true, archive: 'absent', workspaceExists: false }, 'nothing'],
    [{ keepLogs: true, archive: 'valid', workspaceExists: false }, 'reuse'],
    [{ keepLogs: true, archive: 'valid', workspaceExists: true, workspaceSupersedesArchive: false }, 'reuse'],
    [{ keepLogs: true, archive: 'valid', workspaceExists: true, workspaceSupersedesArchive: true }, 'replace'],
    [{ keepLogs: true, archive: 'invalid', workspaceExists: true }, 'replace'],
    [{ keepLogs: true, archive: 'invalid', workspaceExists: false }, 'unavailable'],
  ];
  for (const [facts, want] of cases) it(`${JSON.stringify(facts)} -> ${want}`, () => assert.equal(decideArchive(facts), want));

  const m = [
    { name: 'output.log', bytes: 3, sha256: 'a'.repeat(64) },
    { name: 'agent.json', bytes: 2, sha256: 'b'.repeat(64) },
  ];
  const d = (bytes: number, c: string) => ({ bytes, sha256: c.repeat(64) });
  const supersedes: [string, Map<string, { bytes: number; sha256: string } | undefined>, boolean][] = [
    [
      'identical',
      new Map([
        ['output.log', d(3, 'a')],
        ['agent.json', d(2, 'b')],
        ['exit-code', undefined],
      ]),
      false,
    ],
    [
      'partly deleted',
      new Map([
        ['output.log', undefined],
        ['agent.json', d(2, 'b')],
      ]),
      false,
    ],
    [
      'more output',
      new Map([
        ['output.log', d(9, 'c')],
        ['agent.json', d(2, 'b')],
      ]),
      true,
    ],
    ['same size, other bytes', new Map([['output.log', d(3, 'c')]]), true],
    [
      'a file the archive lacks',
      new Map([
        ['output.log', d(3, 'a')],
        ['exit-code', d(2, 'e')],
      ]),
      true,
    ],
  ];
  for (const [name, actual, want] of supersedes) it(`workspaceSupersedesArchive: ${name}`, () => assert.equal(workspaceSupersedesArchive(m, actual), want));

  it('manifestProblems names each difference', () => {
    assert.deepEqual(
      manifestProblems(
        m,
        new Map([
          ['output.log', d(3, 'a')],
          ['agent.json', d(2, 'b')],
        ]),
      ),
      [],
    );
    assert.deepEqual(manifestProblems(m, new Map([['output.log', d(4, 'a')]])), ['output.log has 4 bytes, manifest says 3', 'agent.json is missing']);
    assert.deepEqual(
      manifestProblems(
        m,
        new Map([
          ['output.log', d(3, 'f')],
          ['agent.json', d(2, 'b')],
        ]),
      ),
      ['output.log sha256 differs from the manifest'],
    );
  });

  it('buildManifest sorts files and drops extra fields', () => {
    const man = buildManifest({
      uid: UID,
      namespace: 'ns',
      name: 'a',
      trigger: 'Exited',
      archivedAt: 't',
      sourceDir: '/w',
      files: [
        { name: 'output.log', bytes: 1, sha256: 'x', modifiedAt: 'm1' },
        { name: 'agent.json', bytes: 2, sha256: 'y', modifiedAt: 'm2' },
      ],
    });
    assert.deepEqual(man, {
      version: 1,
      uid: UID,
      namespace: 'ns',
      name: 'a',
      trigger: 'Exited',
      archivedAt: 't',
      sourceDir: '/w',
      files: [
        { name: 'agent.json', bytes: 2, sha256: 'y', modifiedAt: 'm2' },
        { name: 'output.log', bytes: 1, sha256: 'x', modifiedAt: 'm1' },
      ],
    });
  });

  const deletions: [Parameters<typeof mayDeleteWorkspace>[0], boolean][] = [
    [{ keepLogs: false, logsArchived: false }, true],
    [{ keepLogs: true, logsArchived: true }, true],
    [{ keepLogs: true, logsArchived: false }, false],
  ];
  for (const [f, want] of deletions) it(`mayDeleteWorkspace ${JSON.stringify(f)} -> ${want}`, () => assert.equal(mayDeleteWorkspace(f), want));

  it('bounds the error list to the schema limits', () => {
    assert.deepEqual(boundErrors(['a']), ['a']);
    const many = boundErrors(Array.from({ length: 40 }, (_, i) => `e${i}`));
    assert.equal(many.length, 32);
    assert.equal(many.at(-1), '9 more errors not shown');
    assert.equal(boundErrors(['x'.repeat(5000)])[0]!.length, 1024);
  });
});

describe('decideOrphans', () => {
  const now = 1_000_000;
  const inv = {
    sessionUids: [UID, UID2],
    workspaces: [
      { uid: UID, createdAtMs: now - 600_000 },
      { uid: UID3, createdAtMs: now - 1_000 },
    ],
    processUids: [UID2],
  };
  const cases: [string, string[], number, string[]][] = [
    ['all expected', [UID, UID2, UID3], 60_000, []],
    ['none expected, young workspace spared', [], 60_000, [UID, UID2]],
    ['none expected, no minimum age', [], 0, [UID, UID2, UID3]],
    ['one expected', [UID], 60_000, [UID2]],
  ];
  for (const [name, expected, minAgeMs, want] of cases) {
    it(name, () => assert.deepEqual(decideOrphans(inv, new Set(expected), { nowMs: now, minAgeMs }), want));
  }
  it('an empty node has no orphans', () => {
    assert.deepEqual(decideOrphans({ sessionUids: [], workspaces: [], processUids: [] }, new Set(), { nowMs: now, minAgeMs: 0 }), []);
  });
});
