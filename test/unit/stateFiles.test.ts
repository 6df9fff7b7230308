/** readOptional and readHead against the traps a hostile process could plant where the sidecar reads (real files, FIFOs, links). */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { link, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readHead, readOptional, stateFileVerdict, writeFileAtomic } from '../../src/sidecar/runtime/files.js';

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
    const table: [string, ReturnType<typeof file>, ReturnType<typeof stateFileVerdict>][] = [
      ['one link', file(1), 'read'],
      ['unlinked while open (another agent cleaned up)', file(0), 'gone'],
      ['a hard link planted beside it', file(2), { refused: 'it has 2 links' }],
      ['too big', file(1, 2048), { refused: '2048 bytes, more than 1024' }],
      ['a FIFO or device', file(1, 0, false), { refused: 'not a regular file' }],
    ];
    for (const [what, st, want] of table) assert.deepEqual(stateFileVerdict(st, 1024), want, what);
  });

  it("never fails a read because the file is removed meanwhile (a launch reading every agent's uid while another is cleaned up)", async (t) => {
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

describe('readHead', () => {
  it('refuses the same traps as readOptional, and reads only the head of a big file', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ao-state-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'ok'), 'started\nmore\n');
    assert.equal((await readHead(join(dir, 'ok'), 64))?.head.toString(), 'started\nmore\n');
    assert.equal((await readHead(join(dir, 'ok'), 7))?.head.toString(), 'started');
    assert.equal(await readHead(join(dir, 'missing'), 64), undefined);
    execFileSync('mkfifo', [join(dir, 'fifo')], { timeout: 5_000 });
    await symlink('/dev/zero', join(dir, 'zero'));
    await link(join(dir, 'ok'), join(dir, 'hardlink'));
    await assert.rejects(readHead(join(dir, 'fifo'), 64), /not a regular file/);
    await assert.rejects(readHead(join(dir, 'zero'), 64), /symbolic link/);
    await assert.rejects(readHead('/dev/zero', 64), /not a regular file/);
    await assert.rejects(readHead(join(dir, 'hardlink'), 64), /2 links/);
  });

  // exec-status is opened by the launcher and written in place by the exec step: readOptional refused
  // it while it grew, which failed 18 launches of a 1000-Agent soak (LaunchFailed).
  it('reads a file another process is writing in place, every time, and says when it was last written', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'ao-state-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const path = join(dir, 'exec-status');
    await writeFile(path, '');
    const writer = spawn('sh', ['-c', 'exec 3>>"$1"; while :; do printf started >&3; done', 'writer', path], { stdio: 'ignore' });
    t.after(() => writer.kill('SIGKILL'));
    let grown = 0;
    for (let i = 0; i < 500; i++) {
      const before = Date.now();
      const got = await readHead(path, 64);
      assert.ok(got && /^(started)*(s(t(a(r(te?)?)?)?)?)?$/.test(got.head.toString()) && got.head.length <= 64, `read ${i}: ${got?.head.toString()}`);
      assert.ok(got.mtimeMs <= Date.now() + 1, 'not written in the future');
      if (got.head.length === 64 && got.mtimeMs >= before - 1000) grown++;
    }
    assert.ok(grown > 0, 'the writer wrote while it was read');
  });
});
