/** readOptional against the traps a hostile process could plant where the sidecar reads (real files, FIFOs, links). */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { link, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readOptional, stateFileVerdict, writeFileAtomic } from '../../src/sidecar/runtime/files.js';

describe('readOptional', () => {
  it('reads a regular file, says undefined for a missing one, and refuses every trap at once', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ao-state-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'ok'), '0\n');
    assert.equal((await readOptional(join(dir, 'ok')))?.toString(), '0\n');
    assert.equal(await readOptional(join(dir, 'missing')), undefined);

    execFileSync('mkfifo', [join(dir, 'fifo')], { timeout: 5_000 });
    await symlink('/etc/shadow', join(dir, 'shadow'));
    await symlink('/dev/zero', join(dir, 'zero'));
    await writeFile(join(dir, 'big'), Buffer.alloc(2048));
    await link(join(dir, 'ok'), join(dir, 'hardlink'));
    const t0 = Date.now();
    await assert.rejects(readOptional(join(dir, 'fifo')), /not a regular file/);
    await assert.rejects(readOptional(join(dir, 'shadow')), /symbolic link/);
    await assert.rejects(readOptional(join(dir, 'zero')), /symbolic link/);
    await assert.rejects(readOptional('/dev/zero'), /not a regular file/);
    await assert.rejects(readOptional(join(dir, 'big'), 1024), /2048 bytes, more than 1024/);
    await assert.rejects(readOptional(join(dir, 'hardlink')), /2 links/);
    assert.ok(Date.now() - t0 < 2_000, 'nothing blocked');
  });

  it('decides from the opened file: a file unlinked since it was opened is gone, not a trap', () => {
    const file = (nlink: number, size = 2, isFile = true) => ({ isFile: () => isFile, nlink, size });
    const table: [string, ReturnType<typeof file>, string][] = [
      ['one link', file(1), 'read'],
      ['unlinked while open (another agent cleaned up)', file(0), 'gone'],
      ['a hard link planted beside it', file(2), 'it has 2 links'],
      ['too big', file(1, 2048), '2048 bytes, more than 1024'],
      ['a FIFO or device', file(1, 0, false), 'not a regular file'],
    ];
    for (const [what, st, want] of table) assert.equal(stateFileVerdict(st, 1024), want, what);
  });

  it('never fails a read because the file is removed meanwhile (a launch reading every agent\'s uid while another is cleaned up)', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ao-state-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'sandbox-uid');
    let stop = false;
    const churn = (async () => {
      while (!stop) {
        // As the node writes state files (replaced whole, never grown in place), and as cleanup removes them.
        await writeFileAtomic(path, '200001\n', 0o600);
        await unlink(path);
      }
    })();
    try {
      for (let i = 0; i < 2000; i++) {
        const got = await readOptional(path);
        assert.ok(got === undefined || got.toString() === '200001\n', `read ${i}: ${got?.toString()}`);
      }
    } finally {
      stop = true;
      await churn;
    }
  });
});
