/**
 * The node's bounds on the real stack: an agent printing far past its output cap ends with its head
 * and tail archived and the truncation recorded, its node never holding more than the cap; an agent
 * reporting without end fills its own journal and no more; a cap asked above the node's limit is
 * lowered, and the controller says so; archive retention deletes the oldest
 * archives past the max age and the max size, each deletion counted in /metrics.
 */
import assert from 'node:assert/strict';
import { cp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { captureLimits } from '../../src/sidecar/runtime/capture.js';
import { listArchives } from '../../src/sidecar/runtime/retention.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { createTestNamespace, waitFor } from '../support/cluster.js';
import { eventsAbout, metricValue, scrape } from '../support/telemetry.js';
import { assertArchive, assertNothingLeft, createAgent, useStack, waitForAgent, waitForCleanedUp } from '../support/stack.js';

const ARCHIVE_MAX_BYTES = 1024 * 1024;
const JOURNAL_MAX_BYTES = 2048;

/** What `seq 1 n` prints through a terminal (the pty turns each \n into \r\n). */
const seqOutput = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => `${i + 1}\r\n`).join(''));

/** Bytes of captured output in a workspace now: the head, the ring's slots and the segment being written (not the ring's index). */
async function capturedBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name === 'output.log' || name === 'output.tail.new' || /^output\.tail\.\d+$/.test(name)) total += (await stat(join(dir, name)).catch(() => ({ size: 0 }))).size;
  }
  return total;
}

describe('bounds', () => {
  const stack = useStack('bounds', {
    nodes: 1,
    sweepIntervalSeconds: 1,
    sidecarArgs: [
      '--output-max-size',
      '64Ki',
      '--output-max-size-limit',
      '1Mi',
      '--report-journal-max-size',
      String(JOURNAL_MAX_BYTES),
      '--archive-max-size',
      String(ARCHIVE_MAX_BYTES),
      '--archive-max-age-seconds',
      String(7 * 86_400),
    ],
  });

  it('output far past its cap: head and tail archived, the truncation recorded, the node never holding more than the cap', async (t) => {
    const ns = await createTestNamespace(t, 'bounds-output');
    const n = 700_000;
    const expected = seqOutput(n);
    const created = await createAgent(ns, 'chatty', { command: ['sh', '-c', `seq 1 ${n}`], output: { maxSize: '256Ki' } });
    const running = await waitForAgent(ns, 'chatty', (a) => a.status?.startTime !== undefined, 'the agent to start');
    const dir = workspacePaths(stack().node(running.status!.nodeName!).root, created.metadata!.uid!).dir;
    // Sampled while it prints: what the node holds of its output never passes the cap.
    let most = 0;
    let samples = 0;
    let done = false;
    const sampler = (async () => {
      while (!done) {
        most = Math.max(most, await capturedBytes(dir));
        samples++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const a = await waitForCleanedUp(ns, 'chatty', 180_000).finally(() => (done = true));
    await sampler;
    t.diagnostic(`output ${expected.length} bytes; most held on the node ${most} bytes over ${samples} samples; cleanup ${a.status?.cleanup?.durationMilliseconds} ms`);
    assert.equal(a.status?.phase, 'Completed', a.status?.message);
    const o = a.status?.cleanup?.output;
    assert.ok(o, 'no output accounting in status.cleanup');
    assert.equal(o.maxBytes, 256 * 1024);
    assert.equal(o.totalBytes, expected.length, 'every byte printed was seen by the capture');
    assert.equal(o.truncated, true);
    assert.ok(most <= o.maxBytes, `the node held ${most} bytes of output, more than the cap ${o.maxBytes}`);
    assert.ok(samples > 5, `only ${samples} samples`);
    await assertNothingLeft(stack(), a);
    const manifest = await assertArchive(a.status.cleanup!.archivePath!);
    const head = await readFile(join(a.status.cleanup!.archivePath!, 'output.log'));
    const tail = await readFile(join(a.status.cleanup!.archivePath!, 'output-tail.log'));
    assert.equal(head.length, 128 * 1024);
    assert.ok(head.equals(expected.subarray(0, head.length)), 'output.log is the first bytes printed');
    const l = captureLimits(o.maxBytes);
    assert.ok(tail.length >= (l.segments - 1) * l.segmentBytes && tail.length <= l.segments * l.segmentBytes, `tail of ${tail.length} bytes`);
    assert.ok(tail.equals(expected.subarray(expected.length - tail.length)), 'output-tail.log is the last bytes printed');
    assert.equal(o.droppedBytes, expected.length - head.length - tail.length);
    assert.deepEqual(
      manifest.files.map((f) => f.name).filter((f) => f.startsWith('output')),
      ['output-tail.log', 'output.log'],
    );
  });

  it('an agent within its cap keeps its whole output in output.log and records no truncation', async (t) => {
    const ns = await createTestNamespace(t, 'bounds-small');
    await createAgent(ns, 'quiet', { command: ['sh', '-c', 'seq 1 1000'] });
    const a = await waitForCleanedUp(ns, 'quiet');
    const expected = seqOutput(1000);
    assert.deepEqual(a.status?.cleanup?.output, { maxBytes: 64 * 1024, totalBytes: expected.length, droppedBytes: 0, truncated: false });
    assert.ok((await readFile(join(a.status.cleanup.archivePath!, 'output.log'))).equals(expected));
    assert.ok(!a.status?.cleanup?.archivedFiles?.some((f) => f.name === 'output-tail.log'));
    await assertNothingLeft(stack(), a);
  });

  it("a cap asked above the node's limit is lowered to it: in status, a Warning Event (the controller's) and OutputCapHonored=False", async (t) => {
    const ns = await createTestNamespace(t, 'bounds-lowered');
    const created = await createAgent(ns, 'greedy', { command: ['sh', '-c', 'seq 1 1000'], output: { maxSize: '4Mi' } });
    const a = await waitForCleanedUp(ns, 'greedy');
    assert.equal(a.status?.outputMaxBytes, 1024 * 1024);
    assert.equal(a.status?.cleanup?.output?.maxBytes, 1024 * 1024);
    const warned = await waitFor(async () => (await eventsAbout(ns, created.metadata!.uid!)).find((e) => e.reason === 'OutputCapLowered'), {
      timeoutMs: 30_000,
      what: 'the OutputCapLowered Event',
    });
    assert.equal(warned.type, 'Warning');
    assert.match(warned.note ?? '', /4Mi is above node .*'s limit: 1048576 bytes/);
    const judged = await waitForAgent(ns, 'greedy', (x) => x.status?.conditions?.some((c) => c.type === 'OutputCapHonored') === true, 'the controller to judge the cap');
    const c = judged.status?.conditions?.find((x) => x.type === 'OutputCapHonored');
    assert.deepEqual([c?.status, c?.reason], ['False', 'OutputCapLowered']);
    await assertNothingLeft(stack(), a);
  });

  it('reports past the journal cap are refused (507) and the journal stays within it', async (t) => {
    const ns = await createTestNamespace(t, 'bounds-journal');
    const script = `i=0; while [ $i -lt 200 ]; do i=$((i+1)); agent-operator report --status working --message "report number $i with some words" 2>err || { echo "refused at $i"; cat err; exit 0; }; done; echo never refused`;
    await createAgent(ns, 'reporter', { command: ['sh', '-c', script] });
    const a = await waitForCleanedUp(ns, 'reporter', 180_000);
    const dir = a.status!.cleanup!.archivePath!;
    const out = await readFile(join(dir, 'output.log'), 'utf8');
    assert.match(out, /refused at \d+/);
    assert.match(out, /HTTP 507/);
    const journal = await readFile(join(dir, 'reports.jsonl'), 'utf8');
    assert.ok(Buffer.byteLength(journal) <= JOURNAL_MAX_BYTES, `journal of ${Buffer.byteLength(journal)} bytes`);
    const accepted = journal.trim().split('\n').length;
    assert.equal(Number(/refused at (\d+)/.exec(out)![1]), accepted + 1, 'every report up to the cap was recorded, the next refused');
    // What was recorded still reached status.
    assert.equal(a.status?.reportedMessage, `report number ${accepted} with some words`);
    await assertNothingLeft(stack(), a);
  });

  it('retention deletes archives past the max age, then the oldest past the max size, each counted in /metrics', async (t) => {
    const node = stack().nodes[0]!;
    const before = await scrape(node.metricsUrl);
    const count = (s: typeof before, reason: string) => metricValue(s, 'agent_operator_archive_deletions_total', { reason }) ?? Number.NaN;
    const ns = await createTestNamespace(t, 'bounds-retention');
    // An archive from ten days ago (a real one, its manifest dated back): past the 7 day max age.
    const first = await createAgent(ns, 'old', { command: ['sh', '-c', 'echo old'] });
    const old = await waitForCleanedUp(ns, 'old');
    const oldDir = old.status!.cleanup!.archivePath!;
    const aged = `${oldDir.slice(0, -first.metadata!.uid!.length)}00000000-0000-4000-8000-000000000001`;
    await cp(oldDir, aged, { recursive: true });
    const manifest = JSON.parse(await readFile(join(aged, 'manifest.json'), 'utf8')) as { archivedAt: string; uid: string };
    await writeFile(join(aged, 'manifest.json'), JSON.stringify({ ...manifest, uid: '00000000-0000-4000-8000-000000000001', archivedAt: new Date(Date.now() - 10 * 86_400_000).toISOString() }));
    // Then three agents of ~400 KiB each (cap 1 MiB): together past the 1 MiB max size.
    const names = ['big-1', 'big-2', 'big-3'];
    for (const name of names) {
      await createAgent(ns, name, { command: ['sh', '-c', 'seq 1 70000'], output: { maxSize: '1Mi' } });
      await waitForCleanedUp(ns, name, 120_000);
    }
    const after = await waitFor(
      async () => {
        const s = await scrape(node.metricsUrl);
        const total = (await listArchives(node.archiveDir)).reduce((n, e) => n + e.bytes, 0);
        return count(s, 'age') > count(before, 'age') && total <= ARCHIVE_MAX_BYTES ? s : undefined;
      },
      { timeoutMs: 30_000, what: 'retention to bring the archive within its limits', intervalMs: 250 },
    );
    await assert.rejects(stat(aged), { code: 'ENOENT' }, 'the archive past the max age is gone');
    const left = (await listArchives(node.archiveDir)).sort((x, y) => x.archivedAtMs - y.archivedAtMs);
    const total = left.reduce((n, e) => n + e.bytes, 0);
    t.diagnostic(`archives left: ${left.length}, ${total} bytes; deletions: age ${count(after, 'age')}, size ${count(after, 'size')}`);
    assert.ok(total <= ARCHIVE_MAX_BYTES);
    // The newest stays; what went for size was older than everything kept.
    const newest = await waitForAgent(ns, 'big-3', () => true, 'big-3');
    assert.ok(
      left.some((e) => e.dir === newest.status!.cleanup!.archivePath),
      'the newest archive was kept',
    );
    assert.ok(count(after, 'size') > count(before, 'size'), 'a deletion for size was counted');
    assert.equal(count(after, 'age') - count(before, 'age'), 1);
    assert.ok((metricValue(after, 'agent_operator_archive_bytes') ?? -1) <= ARCHIVE_MAX_BYTES);
  });
});
