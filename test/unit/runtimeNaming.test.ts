import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { archiveLocation } from '../../src/sidecar/runtime/archive.js';
import { chainArgs, paneTarget, parsePanes, pipeCommand, sessionNameFor, sessionTarget, shellQuote, tmuxArg, uidFromSessionName } from '../../src/sidecar/runtime/tmux.js';
import { assertObjectRef, isAgentUid, workspacePaths } from '../../src/sidecar/runtime/workspace.js';

const UID = '0f8c2b1e-7d4a-4c3b-9e2f-1a2b3c4d5e6f';

describe('agent UIDs', () => {
  const valid = [UID, '00000000-0000-1000-8000-000000000000', 'ffffffff-ffff-5fff-bfff-ffffffffffff'];
  const invalid: unknown[] = [
    '',
    UID.toUpperCase(),
    `${UID} `,
    ` ${UID}`,
    `${UID}\n`,
    UID.replace(/-/g, ''),
    '0f8c2b1e-7d4a-0c3b-9e2f-1a2b3c4d5e6f', // version 0
    '0f8c2b1e-7d4a-6c3b-9e2f-1a2b3c4d5e6f', // version 6 (not RFC 4122)
    '0f8c2b1e-7d4a-4c3b-7e2f-1a2b3c4d5e6f', // variant 0xxx
    '0f8c2b1e-7d4a-4c3b-ce2f-1a2b3c4d5e6f', // variant 110x
    '../../etc/passwd',
    '0f8c2b1e-7d4a-4c3b-9e2f-1a2b3c4d5e6f/..',
    '0f8c2b1e-7d4a-4c3b-9e2f-1a2b3c4d5e6g',
    'agent:1.0',
    undefined,
    42,
  ];
  for (const v of valid) it(`accepts ${v}`, () => assert.equal(isAgentUid(v), true));
  for (const v of invalid) it(`rejects ${JSON.stringify(v)}`, () => assert.equal(isAgentUid(v), false));

  it('derives every workspace path from the UID under <root>/agents/<uid>', () => {
    const p = workspacePaths('/node/root/../root', UID);
    assert.equal(p.root, '/node/root');
    assert.equal(p.socket, '/node/root/tmux.sock');
    assert.equal(p.dir, `/node/root/agents/${UID}`);
    for (const f of [p.prompt, p.output, p.exitCode, p.reports, p.findings, p.scratch, p.agentJson, p.go, p.gate, p.launchDir]) {
      assert.ok(f.startsWith(`${p.dir}/`), f);
    }
    assert.throws(() => workspacePaths('/r', '../x'), /invalid agent UID/);
  });
});

describe('tmux naming and quoting', () => {
  it('session names are agent-<uid>, [a-z0-9-] only, and reversible', () => {
    const name = sessionNameFor(UID);
    assert.equal(name, `agent-${UID}`);
    assert.match(name, /^[a-z0-9-]+$/);
    assert.equal(uidFromSessionName(name), UID);
    assert.throws(() => sessionNameFor('x:y.z'), /invalid agent UID/);
  });

  const foreign = ['agent-', 'agent-x', `agent-${UID}-2`, UID, `other-${UID}`, `agent-${UID.toUpperCase()}`];
  for (const n of foreign) it(`does not take ${n} for an agent session`, () => assert.equal(uidFromSessionName(n), undefined));

  it('targets sessions by exact name', () => {
    assert.equal(sessionTarget('agent-a'), '=agent-a');
    assert.equal(paneTarget('agent-a'), '=agent-a:');
  });

  const args: [string, string][] = [
    ['plain', 'plain'],
    ['a;', 'a\\;'],
    ['a;;', 'a;\\;'],
    ['a\\;', 'a\\\\;'],
    [';', '\\;'],
    ['a;b', 'a;b'],
    ['', ''],
  ];
  for (const [input, want] of args) it(`tmuxArg(${JSON.stringify(input)})`, () => assert.equal(tmuxArg(input), want));

  it('chains commands into one client call: `;` between them, every argument escaped', () => {
    assert.deepEqual(chainArgs([['new-session', '-d', '--', 'sh', '-c', 'a;']]), ['new-session', '-d', '--', 'sh', '-c', 'a\\;']);
    assert.deepEqual(chainArgs([['set-option', 'x', ';'], ['pipe-pane', 'cat;'], ['list-panes']]), ['set-option', 'x', '\\;', ';', 'pipe-pane', 'cat\\;', ';', 'list-panes']);
    assert.deepEqual(chainArgs([]), []);
  });

  it('shell-quotes', () => {
    assert.equal(shellQuote(`a b`), `'a b'`);
    assert.equal(shellQuote(`it's`), `'it'\\''s'`);
    assert.equal(shellQuote(`$(x) \`y\``), `'$(x) \`y\`'`);
  });

  it('escapes tmux formats and strftime in the pipe-pane command', () => {
    assert.equal(pipeCommand(`exec cat >>'/r/agents/u/output.log'`), `exec cat >>'/r/agents/u/output.log'`);
    assert.equal(pipeCommand(`cat >'/r #{x} %H' $((i % 4))`), `cat >'/r ##{x} %%H' $((i %% 4))`);
  });

  it('parses list-panes output and skips foreign lines', () => {
    const out = [`agent-${UID} %3 4242 0   0 off`, `agent-${UID} %4 4243 1 3  1 on`, `agent-${UID} %5 4244 1  9 0 on`, 'my session with spaces %1 1 0   0 on', ''].join('\n');
    assert.deepEqual(parsePanes(out), [
      { sessionName: `agent-${UID}`, paneId: '%3', panePid: 4242, dead: false, piped: false, remainOnExit: false },
      { sessionName: `agent-${UID}`, paneId: '%4', panePid: 4243, dead: true, deadStatus: 3, piped: true, remainOnExit: true },
      { sessionName: `agent-${UID}`, paneId: '%5', panePid: 4244, dead: true, deadSignal: 9, piped: false, remainOnExit: true },
    ]);
  });
});

describe('archive locations', () => {
  it('is <archive>/<namespace>/<name>-<uid>', () => {
    assert.deepEqual(archiveLocation('/a', { uid: UID, namespace: 'team-1', name: 'fix.bug-2' }), {
      parent: '/a/team-1',
      base: `fix.bug-2-${UID}`,
      dir: `/a/team-1/fix.bug-2-${UID}`,
    });
  });

  it('is <archive>/_orphans/<uid> without a namespace and name', () => {
    assert.equal(archiveLocation('/a', { uid: UID }).dir, `/a/_orphans/${UID}`);
  });

  it('keeps the directory name within NAME_MAX for the longest names', () => {
    const name = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
    assert.equal(name.length, 253);
    const loc = archiveLocation('/a', { uid: UID, namespace: 'ns', name });
    assert.ok(Buffer.byteLength(`.tmp-${loc.base}.123456789abc`) <= 255);
    assert.ok(loc.base.endsWith(UID));
  });

  const bad: [string, string][] = [
    ['..', 'x'],
    ['ns', '..'],
    ['ns', '../x'],
    ['ns', 'a/b'],
    ['Ns', 'x'],
    ['ns', 'X'],
    ['a.b', 'x'],
    ['ns', ''],
    ['', 'x'],
    ['_orphans', 'x'],
  ];
  for (const [ns, name] of bad) {
    it(`rejects namespace ${JSON.stringify(ns)} name ${JSON.stringify(name)}`, () => {
      assert.throws(() => assertObjectRef(ns, name));
      assert.throws(() => archiveLocation('/a', { uid: UID, namespace: ns, name }));
    });
  }
});
