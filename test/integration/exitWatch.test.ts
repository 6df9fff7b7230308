/** ExitWatches on real directories: the launcher's atomic write of exit-code is seen at once. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { ExitWatches } from '../../src/sidecar/exitWatch.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { waitFor } from '../support/cluster.js';

const UID_A = '0f0e0d0c-0b0a-4908-8706-050403020100';
const UID_B = '1f1e1d1c-1b1a-4918-8716-151413121110';

async function setup(t: TestContext) {
  const root = await mkdtemp(join(tmpdir(), 'exitwatch-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const seen: string[] = [];
  const watches = new ExitWatches(root, (uid) => seen.push(uid), pino({ level: 'silent' }));
  t.after(() => watches.closeAll());
  const workspace = async (uid: string) => {
    const { dir } = workspacePaths(root, uid);
    await mkdir(dir, { recursive: true });
    return dir;
  };
  return { root, seen, watches, workspace };
}

/** What the launcher does: write a temp file, rename it into place. */
async function writeExitCode(dir: string, code: number): Promise<void> {
  await writeFile(join(dir, 'exit-code.tmp'), `${code}\n`);
  await rename(join(dir, 'exit-code.tmp'), join(dir, 'exit-code'));
}

describe('ExitWatches', () => {
  it('reports the agent whose exit-code appears, and only it; other files are not exits', async (t) => {
    const { seen, watches, workspace } = await setup(t);
    const a = await workspace(UID_A);
    const b = await workspace(UID_B);
    watches.watch(UID_A);
    watches.watch(UID_B);
    watches.watch(UID_A); // once per agent
    assert.equal(watches.size, 2);
    await writeFile(join(a, 'output.log'), 'noise');
    await writeExitCode(b, 3);
    await waitFor(() => seen.includes(UID_B), { timeoutMs: 5000, what: 'the exit of B' });
    await sleep(100);
    assert.ok(!seen.includes(UID_A), `A reported without an exit: ${seen.join(', ')}`);
    await writeExitCode(a, 0);
    await waitFor(() => seen.includes(UID_A), { timeoutMs: 5000, what: 'the exit of A' });
  });

  it('an exit written before the watch began is reported at once', async (t) => {
    const { seen, watches, workspace } = await setup(t);
    await writeExitCode(await workspace(UID_A), 0);
    await workspace(UID_B);
    watches.watch(UID_A);
    watches.watch(UID_B);
    await waitFor(() => seen.includes(UID_A), { timeoutMs: 5000, what: 'the earlier exit of A' });
    await sleep(100);
    assert.deepEqual(seen, [UID_A]);
  });

  it('after unwatch nothing is reported; a workspace removed under its watch ends it quietly', async (t) => {
    const { seen, watches, workspace } = await setup(t);
    const a = await workspace(UID_A);
    const b = await workspace(UID_B);
    watches.watch(UID_A);
    watches.watch(UID_B);
    watches.unwatch(UID_A);
    await writeExitCode(a, 0);
    await rm(b, { recursive: true, force: true });
    await sleep(200);
    assert.deepEqual(seen, []);
  });

  it('a workspace that is not there is not watched', async (t) => {
    const { watches } = await setup(t);
    watches.watch(UID_A);
    assert.equal(watches.size, 0);
  });
});
