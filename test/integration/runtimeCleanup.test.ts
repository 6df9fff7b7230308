/**
 * Cleanup for real (docs/architecture.md lifecycle step 9): hostile processes that ignore SIGTERM/SIGHUP and escape
 * their process group, archive verified against recomputed checksums, re-runs and crash recovery.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CleanupRecord } from '../../src/api/agent.js';
import { archiveLocation, MANIFEST_FILE, RECORD_FILE, writeArchive, type Manifest } from '../../src/sidecar/runtime/archive.js';
import { cleanupAgent, type CleanupOptions } from '../../src/sidecar/runtime/cleanup.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { onSpawn, type SpawnOp } from '../../src/sidecar/runtime/spawn.js';
import { killSession } from '../../src/sidecar/runtime/tmux.js';
import { livePids } from '../support/procs.js';
import { hostPid } from '../support/sandbox.js';
import { nodeFixture, type NodeFixture } from '../support/runtimeFixture.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function clean(fx: NodeFixture, uid: string, over: Partial<CleanupOptions> = {}): Promise<CleanupRecord> {
  return cleanupAgent({
    root: fx.root,
    archiveDir: fx.archiveDir,
    uid,
    namespace: 'team-a',
    name: `agent-${uid.slice(0, 8)}`,
    gracePeriodSeconds: 1,
    trigger: 'Test',
    cgroups: fx.sandbox.cgroups!,
    logger: fx.logger,
    ...over,
  });
}

/** The archive's files hashed here, compared with its manifest and with the record. */
async function assertArchiveMatches(record: CleanupRecord): Promise<Manifest> {
  assert.ok(record.archivePath);
  const manifest = JSON.parse(await readFile(join(record.archivePath, MANIFEST_FILE), 'utf8')) as Manifest;
  for (const f of manifest.files) {
    const content: Buffer = await readFile(join(record.archivePath, f.name));
    assert.equal(content.length, f.bytes, f.name);
    assert.equal(sha256(content), f.sha256, f.name);
  }
  assert.deepEqual(
    record.archivedFiles,
    manifest.files.map(({ name, bytes, sha256: s }) => ({ name, bytes, sha256: s })),
  );
  const names = (await readdir(record.archivePath)).filter((n) => !n.startsWith('.')).sort();
  assert.deepEqual(names, [...manifest.files.map((f) => f.name), MANIFEST_FILE, RECORD_FILE].sort());
  return manifest;
}

async function assertWorkspaceGone(fx: NodeFixture, uid: string): Promise<void> {
  await assert.rejects(stat(fx.paths(uid).prompt), { code: 'ENOENT' });
  await assert.rejects(stat(fx.paths(uid).dir), { code: 'ENOENT' });
  assert.deepEqual(
    (await listSessions(fx.root)).filter((s) => s.uid === uid),
    [],
  );
}

// Ignores TERM and HUP; starts a setsid'd child that ignores them too and keeps the marker, and a
// child in the pane's group with an empty environment (found only through the group); reports pids.
// `$$$$` is the shell's `$$`: the command goes through Kubernetes expansion, where `$$` means `$`.
const HOSTILE_AGENT = `trap '' TERM HUP INT
setsid /bin/sh -c 'trap "" TERM HUP INT; echo $$$$ > setsid.pid; while :; do sleep 1; done' &
env -i /bin/sh -c 'trap "" TERM HUP INT; echo $$$$ > noenv.pid; while :; do sleep 1; done' &
echo $$$$ > main.pid
echo ready
while :; do sleep 1; done`;

describe('cleanupAgent', () => {
  it('kills a hostile agent and its escaped children, archives verified logs and removes everything', async (t) => {
    const fx = await nodeFixture(t);
    const { uid, observation } = await fx.launch({ command: ['/bin/sh', '-c', HOSTILE_AGENT] });
    const p = fx.paths(uid);
    const pids = [observation.panePid!];
    // The pids the agent wrote are those of its PID namespace: found on the host below the pane.
    for (const f of ['main.pid', 'setsid.pid', 'noenv.pid']) pids.push(await hostPid(Number((await fx.waitForLine(join(p.scratch, f))).trim()), observation.panePid!));
    await writeFile(p.reports, '{"state":"working"}\n');
    await writeFile(p.findings, '{"type":"x"}\n');
    assert.deepEqual(await livePids(pids), pids);

    const t0 = Date.now();
    const record = await clean(fx, uid, { trigger: 'Stopped' });
    t.diagnostic(`hostile cleanup took ${Date.now() - t0} ms (grace 1 s; record says ${record.durationMilliseconds} ms)`);

    assert.deepEqual(record.errors, []);
    assert.equal(record.trigger, 'Stopped');
    assert.equal(record.escalatedToSigkill, true);
    assert.ok(record.processesKilled >= 4, `processesKilled ${record.processesKilled}`);
    assert.equal(record.verifiedNoProcesses, true);
    assert.equal(record.sessionKilled, true);
    assert.equal(record.promptDeleted, true);
    assert.equal(record.workspaceDeleted, true);
    assert.equal(record.logsArchived, true);
    assert.ok(record.durationMilliseconds! >= 1000, 'waited the grace period before SIGKILL');
    assert.deepEqual(await livePids(pids), []);
    await assertWorkspaceGone(fx, uid);

    assert.equal(record.archivePath, archiveLocation(fx.archiveDir, { uid, namespace: 'team-a', name: `agent-${uid.slice(0, 8)}` }).dir);
    const manifest = await assertArchiveMatches(record);
    // The launcher, outside the sandbox, outlived it and recorded how it ended (SIGKILL).
    assert.deepEqual(
      manifest.files.map((f) => f.name),
      ['agent.json', 'exit-code', 'findings.jsonl', 'output.log', 'reports.jsonl'],
    );
    assert.equal(await readFile(join(record.archivePath, 'exit-code'), 'utf8'), '137\n');
    assert.equal(record.cgroupRemoved, true);
    assert.ok(record.cpuMilliseconds !== undefined, 'CPU time from the cgroup');
    assert.equal(manifest.trigger, 'Stopped');
    assert.equal(await readFile(join(record.archivePath, 'output.log'), 'utf8'), 'ready\r\n');
    assert.equal(await readFile(join(record.archivePath, 'reports.jsonl'), 'utf8'), '{"state":"working"}\n');
    assert.deepEqual(JSON.parse(await readFile(join(record.archivePath, RECORD_FILE), 'utf8')), record);
  });

  it('cleans an agent that exited by itself without signalling anything, and a re-run is a truthful no-op', async (t) => {
    const fx = await nodeFixture(t);
    const { uid } = await fx.launch({ command: ['/bin/sh', '-c', 'echo done; exit 0'] });
    await fx.waitExited(uid);
    const t0 = Date.now();
    const first = await clean(fx, uid, { trigger: 'Exited' });
    t.diagnostic(`cleanup of an exited agent took ${Date.now() - t0} ms`);
    assert.deepEqual(first.errors, []);
    assert.equal(first.processesKilled, 0);
    assert.equal(first.escalatedToSigkill, false);
    assert.equal(first.sessionKilled, true);
    const manifest = await assertArchiveMatches(first);
    assert.deepEqual(
      manifest.files.map((f) => f.name),
      ['agent.json', 'exit-code', 'output.log'],
    );
    assert.equal(await readFile(join(first.archivePath!, 'exit-code'), 'utf8'), '0\n');
    const manifestStat = await stat(join(first.archivePath!, MANIFEST_FILE));

    // Again, by a caller that no longer knows the namespace and name (e.g. after a restart).
    const again = await cleanupAgent({ root: fx.root, archiveDir: fx.archiveDir, uid, trigger: 'Test', cgroups: fx.sandbox.cgroups!, logger: fx.logger, gracePeriodSeconds: 1 });
    // Its cgroup is gone with the first run: there is no usage left to measure.
    assert.ok(first.cpuMilliseconds !== undefined);
    assert.equal(again.cpuMilliseconds, undefined);
    const { cpuMilliseconds: _, ...firstWithoutUsage } = first;
    assert.deepEqual(
      { ...again, startTime: '', completionTime: '', durationMilliseconds: 0, trigger: '' },
      { ...firstWithoutUsage, startTime: '', completionTime: '', durationMilliseconds: 0, trigger: '' },
    );
    assert.equal((await stat(join(first.archivePath!, MANIFEST_FILE))).mtimeMs, manifestStat.mtimeMs, 'the archive was not rewritten');
    assert.equal((JSON.parse(await readFile(join(first.archivePath!, RECORD_FILE), 'utf8')) as { trigger: string }).trigger, 'Exited', 'the first record is kept');
  });

  it('spawns two processes per launch and two per cleanup of an exited agent (issue 8)', async (t) => {
    const fx = await nodeFixture(t);
    const ops: SpawnOp[] = [];
    t.after(onSpawn((op) => ops.push(op)));
    const count = (op: SpawnOp) => ops.filter((o) => o === op).length;
    // The first launch starts the node's tmux server; the second finds it running. Both count the same.
    for (const first of [true, false]) {
      const launched = count('launch');
      const { uid, started } = await fx.launch({ command: ['/bin/sh', '-c', 'echo done; exit 0'] });
      assert.equal(started, true);
      assert.equal(count('launch') - launched, 2, `spawns of a launch${first ? ' that starts the tmux server' : ''}`);
      await fx.waitFor(uid, 'the pane to be dead', (o) => o.exited && o.sessionExists && !o.sessionAlive);
      const cleaned = count('cleanup');
      const record = await clean(fx, uid, { trigger: 'Exited' });
      assert.deepEqual(record.errors, []);
      assert.equal(record.sessionKilled, true);
      assert.equal(count('cleanup') - cleaned, 2, 'spawns of a cleanup');
    }
    assert.deepEqual(await listSessions(fx.root), []);
  });

  it('converges after a crash: session already gone, a half-written archive left behind', async (t) => {
    const fx = await nodeFixture(t);
    const { uid } = await fx.launch({ command: ['/bin/sh', '-c', 'echo partial; exec sleep 30'] });
    await fx.waitFor(uid, 'output', (o) => o.outputBytes > 0);
    await killSession(fx.root, `agent-${uid}`);
    const loc = archiveLocation(fx.archiveDir, { uid, namespace: 'team-a', name: `agent-${uid.slice(0, 8)}` });
    const stale = join(loc.parent, `.tmp-${loc.base}.0123456789ab`);
    await mkdir(stale, { recursive: true });
    await writeFile(join(stale, 'output.log'), 'part');

    const record = await clean(fx, uid);
    assert.deepEqual(record.errors, []);
    assert.equal(record.logsArchived, true);
    assert.equal(record.sessionKilled, true);
    assert.equal(record.verifiedNoProcesses, true);
    await assertArchiveMatches(record);
    assert.equal(await readFile(join(record.archivePath!, 'output.log'), 'utf8'), 'partial\r\n');
    assert.deepEqual(
      (await readdir(loc.parent)).filter((n) => n.startsWith('.')),
      [],
    );
    await assertWorkspaceGone(fx, uid);
  });

  it('converges after a crash between archiving and deleting: reuses the archive, and replaces an invalid one', async (t) => {
    const fx = await nodeFixture(t);
    const reuse = await fx.launch({ command: ['/bin/sh', '-c', 'echo a; exit 1'] });
    const replace = await fx.launch({ command: ['/bin/sh', '-c', 'echo b; exit 2'] });
    for (const { uid } of [reuse, replace]) {
      await fx.waitExited(uid);
      await killSession(fx.root, `agent-${uid}`);
      await fx.waitFor(uid, 'the writer to finish', (o) => o.outputBytes === 3);
    }
    const locOf = (uid: string) => archiveLocation(fx.archiveDir, { uid, namespace: 'team-a', name: `agent-${uid.slice(0, 8)}` });
    const written = await writeArchive({
      location: locOf(reuse.uid),
      sourceDir: fx.paths(reuse.uid).dir,
      uid: reuse.uid,
      namespace: 'team-a',
      name: `agent-${reuse.uid.slice(0, 8)}`,
      trigger: 'Crashed',
    });
    await mkdir(locOf(replace.uid).dir, { recursive: true });
    await writeFile(join(locOf(replace.uid).dir, MANIFEST_FILE), '{"version":1,"files":[');

    const reused = await clean(fx, reuse.uid);
    assert.deepEqual(reused.errors, []);
    const m1 = await assertArchiveMatches(reused);
    assert.equal(m1.archivedAt, written.archivedAt, 'the verified archive was reused');
    assert.equal(m1.trigger, 'Crashed');

    const replaced = await clean(fx, replace.uid);
    assert.deepEqual(replaced.errors, []);
    const m2 = await assertArchiveMatches(replaced);
    assert.equal(m2.trigger, 'Test');
    assert.equal(await readFile(join(replaced.archivePath!, 'output.log'), 'utf8'), 'b\r\n');
    for (const uid of [reuse.uid, replace.uid]) await assertWorkspaceGone(fx, uid);
    assert.deepEqual(
      (await readdir(locOf(replace.uid).parent)).filter((n) => n.startsWith('.')),
      [],
    );
  });

  it('leaves a tombstone so a late duplicate event can never start the agent again', async (t) => {
    const fx = await nodeFixture(t);
    const { uid } = await fx.launch({ command: ['/bin/sh', '-c', 'echo run; exec sleep 30'] });
    await fx.waitFor(uid, 'its output', (o) => o.outputBytes > 0);
    const first = await clean(fx, uid);
    assert.deepEqual(first.errors, []);
    const again = await fx.launch({ uid, command: ['/bin/sh', '-c', 'echo run; exec sleep 30'] });
    assert.equal(again.started, false);
    assert.equal(again.tombstoned, true);
    assert.equal(again.observation.workspaceExists, false);
    await assertWorkspaceGone(fx, uid);
    assert.equal(await readFile(join(first.archivePath!, 'output.log'), 'utf8'), 'run\r\n');
  });

  it('keepLogs=false archives nothing and still removes everything', async (t) => {
    const fx = await nodeFixture(t);
    const { uid } = await fx.launch({ command: ['sleep', '30'] });
    const record = await clean(fx, uid, { keepLogs: false, gracePeriodSeconds: 0 });
    assert.deepEqual(record.errors, []);
    assert.equal(record.logsArchived, false);
    assert.equal(record.archivePath, undefined);
    assert.equal(record.archivedFiles, undefined);
    assert.ok(record.processesKilled >= 1, `processesKilled ${record.processesKilled}`);
    assert.equal(record.verifiedNoProcesses, true);
    assert.equal(record.workspaceDeleted, true);
    await assertWorkspaceGone(fx, uid);
    await assert.rejects(stat(fx.archiveDir), { code: 'ENOENT' });
  });

  it('keeps the workspace when its logs cannot be archived, and says so', async (t) => {
    const fx = await nodeFixture(t);
    const { uid } = await fx.launch({ command: ['/bin/sh', '-c', 'echo x'] });
    await fx.waitExited(uid);
    await writeFile(fx.archiveDir, 'a file where the archive directory should be');
    const record = await clean(fx, uid);
    assert.equal(record.logsArchived, false);
    assert.equal(record.promptDeleted, true);
    assert.equal(record.workspaceDeleted, false);
    assert.equal(record.sessionKilled, true);
    assert.equal(record.errors?.length, 2, JSON.stringify(record.errors));
    assert.match(record.errors[0]!, /^archive logs: /);
    assert.match(record.errors[1]!, /kept, because its logs are not archived/);
    assert.ok((await stat(fx.paths(uid).output)).size > 0);
  });
});
