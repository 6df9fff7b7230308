/** readOptional against the traps a hostile process could plant where the sidecar reads (real files, FIFOs, links). */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { link, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readOptional } from '../../src/sidecar/runtime/files.js';

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
});
