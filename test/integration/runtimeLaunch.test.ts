/**
 * Launching agents for real: a private tmux server, real processes, real files. Output capture from
 * the first byte, env and argv byte-exact in every process, exit codes, launch errors, idempotency.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cleanupAgent } from '../../src/sidecar/runtime/cleanup.js';
import { LAUNCH_EXIT, LAUNCHER_ARGV0, LAUNCHER_SCRIPT } from '../../src/sidecar/runtime/launcher.js';
import { launch } from '../../src/sidecar/runtime/launch.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { environValue, parseStat } from '../../src/sidecar/runtime/procfs.js';
import { killSession, sessionNameFor } from '../../src/sidecar/runtime/tmux.js';
import { readSandboxUid } from '../../src/sidecar/runtime/uids.js';
import { nodeFixture, type NodeFixture } from '../support/runtimeFixture.js';

/** Every value a shell could misread, plus bytes that must come through untouched. */
const HOSTILE = [
  'semi;',
  ';',
  '$(touch PWNED_SUBST)',
  '`touch PWNED_BACKTICK`',
  "it's",
  '"double"',
  'new\nline',
  'trailing newlines\n\n',
  ' leading and trailing ',
  '*',
  '~',
  '-e',
  '--',
  '$HOME ${HOME}',
  'back\\slash\\;',
  '{',
  '#{pane_id} #(touch PWNED_TMUX) %H',
  '| & > < 2>&1',
  'ünïcødé ✓',
  '\t\r\x1b[31m',
];

async function archivedOutput(fx: NodeFixture, uid: string): Promise<string> {
  const rec = await cleanupAgent({ root: fx.root, archiveDir: fx.archiveDir, uid, gracePeriodSeconds: 1, trigger: 'Test', cgroups: fx.sandbox.cgroups!, logger: fx.logger });
  assert.equal(rec.logsArchived, true, JSON.stringify(rec));
  return readFile(join(rec.archivePath!, 'output.log'), 'latin1');
}

const splitNul = (b: Buffer) => b.toString('utf8').split('\0').slice(0, -1);

/** An `env -0` dump (or a copy of /proc/<pid>/environ) as a map. */
async function envMap(path: string): Promise<Map<string, string>> {
  return new Map(splitNul(await readFile(path)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

describe('launch', () => {
  it('captures the output from the first byte and records the exit code', async (t) => {
    const fx = await nodeFixture(t);
    const zero = await fx.launch({ command: ['printf', 'first'] });
    const three = await fx.launch({ command: ['/bin/sh', '-c', 'printf "x\\n"; exit 3'] });
    assert.equal(zero.started, true);
    assert.equal(zero.sessionName, sessionNameFor(zero.uid));
    assert.equal((await fx.waitExited(zero.uid)).exitCode, 0);
    const o3 = await fx.waitExited(three.uid);
    assert.equal(o3.exitCode, 3);
    assert.equal(o3.launchError, undefined);
    assert.equal((await readFile(fx.paths(three.uid).exitCode, 'utf8')).trim(), '3');
    assert.equal(await archivedOutput(fx, zero.uid), 'first');
    assert.equal(await archivedOutput(fx, three.uid), 'x\r\n'); // the pty's onlcr: the stream as a terminal shows it
  });

  it('captures the whole stream of a burst that ends at once', async (t) => {
    const fx = await nodeFixture(t);
    const { uid } = await fx.launch({ command: ['/bin/sh', '-c', 'i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done'] });
    await fx.waitExited(uid);
    const want = Array.from({ length: 3000 }, (_, i) => `line ${i}\r\n`).join('');
    assert.equal(await archivedOutput(fx, uid), want);
  });

  it('runs the launcher through tmux without a shell in between, and records the session facts', async (t) => {
    const fx = await nodeFixture(t);
    const r = await fx.launch({ command: ['sleep', '30'] });
    const o = r.observation;
    assert.equal(o.sessionAlive, true);
    assert.equal(o.started, true);
    assert.ok(o.startTime && o.record?.createdAt);
    const cmdline = splitNul(await readFile(`/proc/${o.panePid}/cmdline`));
    assert.deepEqual(cmdline, ['/bin/sh', '-c', LAUNCHER_SCRIPT, LAUNCHER_ARGV0, fx.paths(r.uid).dir]);
    const parent = parseStat(await readFile(`/proc/${parseStat(await readFile(`/proc/${o.panePid}/stat`, 'utf8'))!.ppid}/stat`, 'utf8'));
    assert.equal(parent?.comm, 'tmux: server');
    // The marker is on the session (new-session -e), so even the launcher carries it.
    const env = await readFile(`/proc/${o.panePid}/environ`);
    assert.equal(environValue(env, 'AGENT_UID'), r.uid);
    assert.equal(environValue(env, 'AGENT_PROMPT_FILE'), fx.paths(r.uid).prompt);
    const sessions = await listSessions(fx.root);
    assert.deepEqual(
      sessions.map((s) => s.uid),
      [r.uid],
    );
    const record = JSON.parse(await readFile(fx.paths(r.uid).agentJson, 'utf8')) as Record<string, unknown>;
    assert.deepEqual(
      { uid: record.uid, namespace: record.namespace, name: record.name, sessionName: record.sessionName },
      { uid: r.uid, namespace: 'team-a', name: `agent-${r.uid.slice(0, 8)}`, sessionName: r.sessionName },
    );
  });

  it('gives every process of the session the env, byte-exact, with binDir first in PATH and nothing of the sidecar', async (t) => {
    const fx = await nodeFixture(t);
    process.env.AO_SIDECAR_SECRET = 'must-not-leak';
    t.after(() => delete process.env.AO_SIDECAR_SECRET);
    const env: Record<string, string> = {
      AGENT_REPORT_URL: 'http://127.0.0.1:1/report;',
      AGENT_REPORT_TOKEN: 'tok.en;',
      EMPTY: '',
      PS4: '$(touch PWNED_PS4)',
      ...Object.fromEntries(HOSTILE.map((v, i) => [`HOSTILE_${i}`, v])),
    };
    const script = ['env -0 > child.env', '/bin/sh -c "env -0 > grandchild.env"', 'setsid /bin/sh -c "env -0 > setsid.env"', 'agent-operator called'].join('; ');
    const { uid } = await fx.launch({ command: ['/bin/sh', '-c', script], env });
    const o = await fx.waitExited(uid);
    assert.equal(o.exitCode, 0);
    const p = fx.paths(uid);
    for (const file of ['child.env', 'grandchild.env', 'setsid.env']) {
      const got = await envMap(join(p.scratch, file));
      for (const [k, v] of Object.entries(env)) assert.equal(got.get(k), v, `${file}: ${k}`);
      assert.equal(got.get('AGENT_UID'), uid, file);
      assert.equal(got.get('AGENT_NAME'), `agent-${uid.slice(0, 8)}`, file);
      assert.equal(got.get('AGENT_NAMESPACE'), 'team-a', file);
      assert.equal(got.get('AGENT_PROMPT_FILE'), p.prompt, file);
      assert.ok(got.get('PATH')?.startsWith(`${fx.binDir}:`), `${file}: PATH=${got.get('PATH')}`);
      assert.equal(got.get('AO_SIDECAR_SECRET'), undefined, `${file}: the sidecar's env leaked`);
    }
    assert.equal(await readFile(join(p.scratch, 'ao-called'), 'utf8'), 'fake agent-operator called\n');
    // A program exec'd directly (no shell of its own to reset them) also gets the names shells treat specially.
    const special = { IFS: ' :', PS1: '$(touch PWNED_PS1)', ENV: '/nonexistent', CDPATH: '/tmp', LINENO: 'x', PPID: '1', SHELLOPTS: 'xtrace' };
    const direct = await fx.launch({ command: ['/bin/cp', '/proc/self/environ', 'direct.env'], env: special });
    assert.equal((await fx.waitExited(direct.uid)).exitCode, 0);
    const got = await envMap(join(fx.paths(direct.uid).scratch, 'direct.env'));
    for (const [k, v] of Object.entries(special)) assert.equal(got.get(k), v, `direct: ${k}`);
    for (const f of ['PWNED_SUBST', 'PWNED_BACKTICK', 'PWNED_TMUX', 'PWNED_PS4']) {
      await assert.rejects(stat(join(p.scratch, f)), { code: 'ENOENT' }, f);
      await assert.rejects(stat(join(p.dir, f)), { code: 'ENOENT' }, f);
    }
    // The launch files (env, possibly secrets) are gone once the launcher read them.
    await assert.rejects(stat(p.launchDir), { code: 'ENOENT' });
  });

  it('passes hostile argv through untouched and executes none of it', async (t) => {
    const fx = await nodeFixture(t);
    const { uid } = await fx.launch({
      command: ['/bin/sh', '-c', 'for a; do printf "%s\\0" "$a"; done > args.bin; pwd > pwd.txt', 'sh', ...HOSTILE, '$(AGENT_NAMESPACE)', '$$(AGENT_NAMESPACE)', '$(UNSET)'],
      env: { X: 'x' },
    });
    assert.equal((await fx.waitExited(uid)).exitCode, 0);
    const p = fx.paths(uid);
    assert.deepEqual(splitNul(await readFile(join(p.scratch, 'args.bin'))), [...HOSTILE, 'team-a', '$(AGENT_NAMESPACE)', '$(UNSET)']);
    assert.equal((await readFile(join(p.scratch, 'pwd.txt'), 'utf8')).trim(), p.scratch);
    for (const f of ['PWNED_SUBST', 'PWNED_BACKTICK', 'PWNED_TMUX']) await assert.rejects(stat(join(p.scratch, f)), { code: 'ENOENT' });
  });

  it('writes the prompt byte-exact, readable only by root and the agent, and delivers it by file, by $(AGENT_PROMPT_FILE) and on stdin', async (t) => {
    const fx = await nodeFixture(t);
    const prompt = Buffer.concat([Buffer.from('héllo \'"$(x)`y`\n'), Buffer.from([0xff, 0xfe, 0x00, 0x80, 0xc3]), randomBytes(200 * 1024)]);
    const byFile = await fx.launch({ command: ['/bin/cp', '$(AGENT_PROMPT_FILE)', 'copy.bin'], prompt });
    const onStdin = await fx.launch({ command: ['/bin/sh', '-c', 'cat > stdin.bin'], prompt, promptOnStdin: true });
    for (const r of [byFile, onStdin]) {
      const st = await stat(fx.paths(r.uid).prompt);
      assert.equal(st.mode & 0o777, 0o440);
      assert.deepEqual([st.uid, st.gid], [0, await readSandboxUid(fx.paths(r.uid))]);
      assert.ok((await readFile(fx.paths(r.uid).prompt)).equals(prompt));
    }
    assert.equal((await fx.waitExited(byFile.uid)).exitCode, 0);
    assert.equal((await fx.waitExited(onStdin.uid)).exitCode, 0);
    assert.ok((await readFile(join(fx.paths(byFile.uid).scratch, 'copy.bin'))).equals(prompt));
    assert.ok((await readFile(join(fx.paths(onStdin.uid).scratch, 'stdin.bin'))).equals(prompt));
  });

  it('a sandbox that cannot be set up is a launch error quoting bwrap, never an unconfined run', async (t) => {
    const fx = await nodeFixture(t);
    const broken = { ...fx.sandbox, host: { ...fx.sandbox.host, readOnly: ['/no/such/dir-for-the-sandbox'] } };
    const r = await fx.launch({ command: ['/bin/sh', '-c', 'echo ran > ran'], sandbox: broken });
    const o = await fx.waitExited(r.uid);
    assert.equal(o.exitCode, LAUNCH_EXIT.launcherFailed);
    assert.match(o.launchError ?? '', /^cannot set up the agent's sandbox \(exit \d+\): bwrap: .*\/no\/such\/dir-for-the-sandbox/);
    await assert.rejects(stat(join(fx.paths(r.uid).scratch, 'ran')), { code: 'ENOENT' });
  });

  it('reports a command that cannot be started as a launch error', async (t) => {
    const fx = await nodeFixture(t);
    const plain = '/etc/passwd'; // visible in the sandbox, and not executable
    const cases = [
      { command: ['no-such-command-ao'], code: LAUNCH_EXIT.notFound, message: 'command not found: no-such-command-ao' },
      { command: ['/no/such/path'], code: LAUNCH_EXIT.notFound, message: 'command not found: /no/such/path' },
      { command: [plain], code: LAUNCH_EXIT.notExecutable, message: `command not executable: ${plain}` },
      { command: ['/tmp'], code: LAUNCH_EXIT.notExecutable, message: 'command not executable: /tmp' },
      { command: ['true'], workingDir: '/no/such/dir', code: LAUNCH_EXIT.launcherFailed, message: 'cannot change to working directory /no/such/dir' },
    ];
    const launched = await Promise.all(cases.map((c) => fx.launch({ command: c.command, ...(c.workingDir ? { workingDir: c.workingDir } : {}) })));
    for (const [i, c] of cases.entries()) {
      const o = await fx.waitExited(launched[i]!.uid);
      assert.equal(o.exitCode, c.code, c.message);
      assert.equal(o.launchError, c.message);
    }
    // A command that itself exits 127 is not a launch error.
    const own = await fx.launch({ command: ['/bin/sh', '-c', 'exit 127'] });
    const o = await fx.waitExited(own.uid);
    assert.equal(o.exitCode, 127);
    assert.equal(o.launchError, undefined);
    // The message is in the captured output too.
    assert.match(await archivedOutput(fx, launched[0]!.uid), /agent-operator: command not found: no-such-command-ao/);
  });

  it('is idempotent by UID: a second launch starts nothing, also concurrently and after exit', async (t) => {
    const fx = await nodeFixture(t);
    const first = await fx.launch({ command: ['sleep', '30'] });
    const again = await fx.launch({ uid: first.uid, command: ['/bin/sh', '-c', 'touch SECOND'] });
    assert.equal(again.started, false);
    assert.equal(again.observation.panePid, first.observation.panePid);
    assert.equal((await listSessions(fx.root)).length, 1);

    const racing = await Promise.all([1, 2, 3].map(() => fx.launch({ uid: '7a1c9e52-3b4d-4e5f-8a6b-7c8d9e0f1a2b', command: ['sleep', '30'] })));
    assert.equal(racing.filter((r) => r.started).length, 1);
    assert.equal(new Set(racing.map((r) => r.observation.panePid)).size, 1);

    const done = await fx.launch({ command: ['/bin/sh', '-c', 'echo run >> runs.txt; exit 4'] });
    await fx.waitExited(done.uid);
    const rerun = await fx.launch({ uid: done.uid, command: ['/bin/sh', '-c', 'echo run >> runs.txt; exit 4'] });
    assert.equal(rerun.started, false);
    assert.equal(rerun.observation.exitCode, 4);
    assert.equal(await readFile(join(fx.paths(done.uid).scratch, 'runs.txt'), 'utf8'), 'run\n');
    await assert.rejects(stat(join(fx.paths(first.uid).scratch, 'SECOND')), { code: 'ENOENT' });
  });

  it('never restarts an agent whose session was lost after it started', async (t) => {
    const fx = await nodeFixture(t);
    const r = await fx.launch({ command: ['/bin/sh', '-c', 'echo run >> runs.txt; exec sleep 30'] });
    await fx.waitForLine(join(fx.paths(r.uid).scratch, 'runs.txt'));
    assert.equal(await killSession(fx.root, r.sessionName), true); // SIGHUP ends the launcher before it records an exit code
    const lost = await fx.waitFor(r.uid, 'the session to be lost', (o) => o.lost);
    assert.equal(lost.started, true);
    const again = await launch({ root: fx.root, uid: r.uid, namespace: 'team-a', name: 'x', command: ['true'], env: {}, prompt: '', binDir: fx.binDir, sandbox: fx.sandbox, logger: fx.logger });
    assert.equal(again.started, false);
    assert.equal(again.observation.lost, true);
    assert.equal((await listSessions(fx.root)).length, 0);
    assert.equal(await readFile(join(fx.paths(r.uid).scratch, 'runs.txt'), 'utf8'), 'run\n');
  });

  it('rejects bad input before touching anything', async (t) => {
    const fx = await nodeFixture(t);
    await assert.rejects(fx.launch({ uid: '../../etc', command: ['true'] }), /invalid agent UID/);
    await assert.rejects(fx.launch({ command: ['true'], env: { AGENT_UID: 'other' } }), /set by the platform/);
    await assert.rejects(fx.launch({ command: ['true'], namespace: 'a/b' }), /invalid namespace/);
    await assert.rejects(stat(join(fx.root, 'agents')), { code: 'ENOENT' });
    await assert.rejects(readlink(join(fx.root, 'tmux.sock')), { code: 'ENOENT' });
  });
});
