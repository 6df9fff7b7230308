/** The end of an agent's kept output (what get_agent_output answers from), read from real files: head, ring, gap, archive. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { archiveOutput, captureLimits, readOutputEnd, workspaceOutput } from '../../src/sidecar/runtime/capture.js';

describe('readOutputEnd', () => {
  let root: string;
  before(async () => (root = await mkdtemp(join(tmpdir(), 'output-end-'))));
  after(async () => rm(root, { recursive: true, force: true }));

  const l = captureLimits(4096); // head 2048, segments of 409 bytes, 4 slots
  /** A workspace with these capture files (name to content). */
  async function workspace(name: string, files: Record<string, string>): Promise<string> {
    const dir = join(root, name);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text);
    return dir;
  }
  const head = 'h'.repeat(2047) + '\n';
  const seg = (c: string) => `${c.repeat(408)}\n`;

  const cases: { name: string; files: Record<string, string>; max: number; want: { text: string; cut: boolean } | undefined }[] = [
    { name: 'nothing printed yet: none', files: {}, max: 4096, want: undefined },
    { name: 'within the head: all of it', files: { 'output.log': 'a\nb\n' }, max: 4096, want: { text: 'a\nb\n', cut: false } },
    { name: 'within the head, more than asked: its end, cut', files: { 'output.log': 'a\nb\n' }, max: 2, want: { text: 'b\n', cut: true } },
    {
      name: 'past the head, nothing dropped: head and ring in order, the segment in progress last',
      files: { 'output.log': head, 'output.tail.0': seg('x'), 'output.tail.index': '1\n', 'output.tail.new': 'y\n' },
      max: 8192,
      want: { text: head + seg('x') + 'y\n', cut: false },
    },
    {
      name: 'past the ring: the tail alone (the head ends before a gap), oldest slot first, cut at its start',
      files: { 'output.log': head, 'output.tail.0': seg('e'), 'output.tail.1': seg('b'), 'output.tail.2': seg('c'), 'output.tail.3': seg('d'), 'output.tail.index': '5\n', 'output.tail.new': 'f\n' },
      max: 8192,
      want: { text: seg('b') + seg('c') + seg('d') + seg('e') + 'f\n', cut: true },
    },
    {
      name: 'past the ring, less asked than the tail: the newest bytes only',
      files: { 'output.log': head, 'output.tail.0': seg('e'), 'output.tail.1': seg('b'), 'output.tail.2': seg('c'), 'output.tail.3': seg('d'), 'output.tail.index': '5\n' },
      max: 500,
      want: { text: seg('d').slice(-91) + seg('e'), cut: true },
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const dir = await workspace(c.name.replace(/\W+/g, '-'), c.files);
      const got = await readOutputEnd(await workspaceOutput(dir, l), c.max);
      assert.deepEqual(got && { text: got.text, cut: got.cut }, c.want);
    });
  }

  it('an archive: output.log then output-tail.log; truncated, the tail alone', async () => {
    const dir = await workspace('archive', { 'output.log': 'first\n', 'output-tail.log': 'last\n' });
    assert.deepEqual(await readOutputEnd(archiveOutput(dir, false), 4096), { text: 'first\nlast\n', cut: false });
    assert.deepEqual(await readOutputEnd(archiveOutput(dir, true), 4096), { text: 'last\n', cut: true });
    const small = await workspace('archive-small', { 'output.log': 'only\n' });
    assert.deepEqual(await readOutputEnd(archiveOutput(small, false), 4096), { text: 'only\n', cut: false });
  });

  it('without recorded limits (an older launch): output.log alone', async () => {
    const dir = await workspace('unrecorded', { 'output.log': 'old\n', 'output.tail.0': 'ignored\n', 'output.tail.index': '1\n' });
    assert.deepEqual(await readOutputEnd(await workspaceOutput(dir, undefined), 4096), { text: 'old\n', cut: false });
  });

  it('never follows a symlink in place of the output', async () => {
    const dir = await workspace('symlink', {});
    await writeFile(join(root, 'secret'), 'secret\n');
    await symlink(join(root, 'secret'), join(dir, 'output.log'));
    assert.equal(await readOutputEnd(await workspaceOutput(dir, l), 4096), undefined);
  });
});
