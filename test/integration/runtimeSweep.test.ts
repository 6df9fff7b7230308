/** The node sweeper for real: orphaned sessions, workspaces and marker processes are cleaned; expected and young ones are not. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ORPHANS_DIR } from '../../src/sidecar/runtime/archive.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { findMarkerProcesses, sendSignal } from '../../src/sidecar/runtime/procfs.js';
import { inventoryNode, ORPHANED_TRIGGER, sweepNode } from '../../src/sidecar/runtime/sweep.js';
import { waitFor } from '../../src/sidecar/runtime/wait.js';
import { nodeFixture } from '../support/runtimeFixture.js';

describe('sweepNode', () => {
  it('cleans orphans (archived by agent.json, or under _orphans) and spares expected and young agents', async (t) => {
    const fx = await nodeFixture(t);
    const expected = await fx.launch({ command: ['sleep', '60'] });
    const known = await fx.launch({ command: ['/bin/sh', '-c', 'echo known; exec sleep 60'] });
    const anonymous = await fx.launch({ command: ['/bin/sh', '-c', 'echo anonymous; exec sleep 60'] });
    await fx.waitFor(anonymous.uid, 'output', (o) => o.outputBytes > 0);
    await rm(fx.paths(anonymous.uid).agentJson); // its identity is lost: archived under _orphans
    // A stray process carrying this node's marker, with no session and no workspace.
    const strayUid = randomUUID();
    const stray = spawn('sleep', ['60'], {
      detached: true,
      stdio: 'ignore',
      env: { PATH: process.env.PATH, AGENT_UID: strayUid, AGENT_PROMPT_FILE: fx.paths(strayUid).prompt },
    });
    stray.unref();
    await waitFor(async () => ((await findMarkerProcesses(fx.root, strayUid)).length ? true : undefined), { timeoutMs: 5_000, what: 'the stray process' });
    // The same UID's marker for another node root must not count here.
    const elsewhere = spawn('sleep', ['60'], {
      detached: true,
      stdio: 'ignore',
      env: { PATH: process.env.PATH, AGENT_UID: strayUid, AGENT_PROMPT_FILE: `/other-node/agents/${strayUid}/prompt` },
    });
    elsewhere.unref();
    t.after(() => {
      elsewhere.kill('SIGKILL');
    });
    assert.ok(elsewhere.pid);

    const inv = await inventoryNode(fx.root);
    assert.deepEqual(inv.sessionUids.sort(), [expected.uid, known.uid, anonymous.uid].sort());
    assert.deepEqual(inv.processUids.sort(), [expected.uid, known.uid, anonymous.uid, strayUid].sort());

    // Young workspaces are spared: only the stray (no workspace) goes.
    const first = await sweepNode({ root: fx.root, archiveDir: fx.archiveDir, expectedUids: [expected.uid], gracePeriodSeconds: 1, logger: fx.logger });
    assert.deepEqual(
      first.map((r) => r.uid),
      [strayUid],
    );
    assert.equal(first[0]!.record?.verifiedNoProcesses, true);
    assert.equal(first[0]!.record?.processesKilled, 1);
    assert.equal(first[0]!.record?.logsArchived, false);
    assert.equal(first[0]!.record?.trigger, ORPHANED_TRIGGER);
    assert.equal(sendSignal(elsewhere.pid, 0), true, "another node's process was left alone");
    assert.equal((await listSessions(fx.root)).length, 3);

    const t0 = Date.now();
    const second = await sweepNode({ root: fx.root, archiveDir: fx.archiveDir, expectedUids: [expected.uid], gracePeriodSeconds: 1, minAgeSeconds: 0, logger: fx.logger });
    t.diagnostic(`sweeping 2 orphans took ${Date.now() - t0} ms`);
    assert.deepEqual(second.map((r) => r.uid).sort(), [known.uid, anonymous.uid].sort());
    for (const r of second) {
      assert.deepEqual(r.record?.errors, [], r.uid);
      assert.equal(r.record?.verifiedNoProcesses, true);
      assert.equal(r.record?.logsArchived, true);
      assert.equal(r.record?.workspaceDeleted, true);
    }
    const byUid = new Map(second.map((r) => [r.uid, r.record!]));
    assert.equal(byUid.get(known.uid)!.archivePath, join(fx.archiveDir, 'team-a', `agent-${known.uid.slice(0, 8)}-${known.uid}`));
    assert.equal(await readFile(join(byUid.get(known.uid)!.archivePath!, 'output.log'), 'utf8'), 'known\r\n');
    assert.equal(byUid.get(anonymous.uid)!.archivePath, join(fx.archiveDir, ORPHANS_DIR, anonymous.uid));
    assert.equal(await readFile(join(byUid.get(anonymous.uid)!.archivePath!, 'output.log'), 'utf8'), 'anonymous\r\n');

    // The expected agent is untouched and still running.
    assert.deepEqual(
      (await listSessions(fx.root)).map((s) => s.uid),
      [expected.uid],
    );
    assert.equal((await fx.waitFor(expected.uid, 'running', () => true)).sessionAlive, true);
    assert.ok((await stat(fx.paths(expected.uid).prompt)).isFile());

    // Nothing left to do; the tombstones of the cleaned agents go once they are old enough.
    assert.deepEqual((await readdir(fx.paths(strayUid).cleanedDir)).sort(), [strayUid, known.uid, anonymous.uid].sort());
    assert.deepEqual(await sweepNode({ root: fx.root, archiveDir: fx.archiveDir, expectedUids: [expected.uid], minAgeSeconds: 0, logger: fx.logger }), []);
    assert.equal((await readdir(fx.paths(strayUid).cleanedDir)).length, 3);
    await sweepNode({ root: fx.root, archiveDir: fx.archiveDir, expectedUids: [expected.uid], tombstoneTtlSeconds: 0, logger: fx.logger });
    assert.deepEqual(await readdir(fx.paths(strayUid).cleanedDir), []);
  });
});
