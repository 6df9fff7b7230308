/**
 * The agents' uid allocator for real (/proc, processes running as other uids): a uid that is recorded
 * or owns a live process is never handed out, also when the /proc scan ran before the allocation got
 * its turn and a uid was released meanwhile.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { allocateUid, processUids, uidReleased, type UidRange } from '../../src/sidecar/runtime/uids.js';
import { withKeyLock } from '../../src/sidecar/runtime/wait.js';
import { workspacePaths, type WorkspacePaths } from '../../src/sidecar/runtime/workspace.js';

/** Far above the ranges the stacks take (1 000 000 + 4096 per pid), one block per test process. */
const range: UidRange = { first: 30_000_000 + (process.pid % 4096) * 64, count: 8 };

async function nodeRoot(t: TestContext): Promise<{ root: string; workspace: () => Promise<WorkspacePaths> }> {
  const root = await mkdtemp(join(tmpdir(), 'agent-operator-uids-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  return {
    root,
    workspace: async () => {
      const paths = workspacePaths(root, randomUUID());
      await mkdir(paths.dir, { recursive: true });
      return paths;
    },
  };
}

/** A process running as `uid` until the test ends. */
async function runAs(t: TestContext, uid: number): Promise<ChildProcess> {
  const child = spawn('sleep', ['60'], { uid, gid: uid, stdio: 'ignore', cwd: '/' });
  t.after(() => {
    child.kill('SIGKILL');
  });
  await once(child, 'spawn');
  return child;
}

describe('allocateUid', () => {
  it('skips recorded uids and uids that own a process; launches at once get distinct uids; an agent keeps its own', async (t) => {
    const node = await nodeRoot(t);
    await runAs(t, range.first);
    const recorded = await node.workspace();
    await writeFile(recorded.sandboxUid, `${range.first + 1}\n`);
    const fresh = await Promise.all([node.workspace(), node.workspace(), node.workspace()]);
    const ids = await Promise.all(fresh.map((p) => allocateUid(p, range)));
    assert.deepEqual(
      [...ids].sort((a, b) => a - b),
      [range.first + 2, range.first + 3, range.first + 4],
    );
    assert.equal(await allocateUid(fresh[0], range), ids[0]);
  });

  it('a uid released while an allocation waited for its turn is checked against /proc again', async (t) => {
    const node = await nodeRoot(t);
    // Agent A holds the first uid; its command has not started yet.
    const a = await node.workspace();
    await writeFile(a.sandboxUid, `${range.first}\n`);
    // B's allocation waits behind another (the lock is held); its early /proc scan sees no process of A's uid.
    let release!: () => void;
    const held = withKeyLock(`uids\0${node.root}`, () => new Promise<void>((resolve) => (release = resolve)));
    const b = allocateUid(await node.workspace(), range);
    // A scan that starts after B's call (which asks for its own at once): B's has finished once this one is done.
    await processUids(range);
    // Meanwhile A's command starts, escapes, and A's state is removed: its uid is in no record but runs.
    await runAs(t, range.first);
    await rm(a.dir, { recursive: true, force: true });
    uidReleased();
    release();
    await held;
    assert.equal(await b, range.first + 1, 'B took a uid a process still runs as (the scan from before the release was trusted)');
  });
});
