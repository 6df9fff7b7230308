/** The node's bounds as pure decisions: the output cap's split and accounting, archive retention, journal room. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { retentionPolicy } from '../../src/cmd/sidecar.js';
import { journalHasRoom } from '../../src/report/journal.js';
import { captureAccounting, captureLimits, outputCapFor, type CaptureFiles } from '../../src/sidecar/runtime/capture.js';
import { planRetention, type ArchiveEntry, type RetentionPolicy } from '../../src/sidecar/runtime/retention.js';

describe('captureLimits', () => {
  it('gives the head half and the ring the rest: four slots and the segment being written, never above the cap', () => {
    for (const max of [4096, 4097, 10 * 2 ** 20, 123_457]) {
      const l = captureLimits(max);
      assert.equal(l.headBytes, Math.ceil(max / 2));
      assert.equal(l.segments, 4);
      const most = l.headBytes + (l.segments + 1) * l.segmentBytes;
      assert.ok(most <= max, `${max}: ${JSON.stringify(l)}`);
      assert.ok(most > max - (l.segments + 1), `${max}: the ring uses the cap`);
    }
  });
  for (const bad of [0, 4095, 1.5, Number.NaN, 2 ** 60]) {
    it(`refuses ${bad}, naming the minimum`, () => assert.throws(() => captureLimits(bad), /at least 4096/));
  }
});

describe('outputCapFor', () => {
  const node = { defaultBytes: 10_000, limitBytes: 50_000 };
  const cases: [string, number | undefined, { maxBytes: number; clamped: boolean }][] = [
    ['the spec is silent: the node default', undefined, { maxBytes: 10_000, clamped: false }],
    ['the spec asks less', 8_000, { maxBytes: 8_000, clamped: false }],
    ['the spec asks more, within the limit', 50_000, { maxBytes: 50_000, clamped: false }],
    ['the spec asks past the limit: lowered', 50_001, { maxBytes: 50_000, clamped: true }],
    ['the spec asks below the minimum: raised to it', 10, { maxBytes: 4096, clamped: false }],
  ];
  for (const [what, asked, want] of cases) it(what, () => assert.deepEqual(outputCapFor(asked, node), want));
});

describe('captureAccounting', () => {
  const l = { maxBytes: 8192, headBytes: 4096, segmentBytes: 1024, segments: 4 };
  const files = (over: Partial<CaptureFiles>): CaptureFiles => ({ headBytes: 0, completed: 0, slotBytes: [], newBytes: 0, ...over });
  const cases: [string, CaptureFiles, { totalBytes: number; droppedBytes: number; truncated: boolean; tail: string[] }][] = [
    ['nothing printed', files({}), { totalBytes: 0, droppedBytes: 0, truncated: false, tail: [] }],
    ['within the head', files({ headBytes: 100 }), { totalBytes: 100, droppedBytes: 0, truncated: false, tail: [] }],
    ['head full, first segment being written', files({ headBytes: 4096, newBytes: 10 }), { totalBytes: 4106, droppedBytes: 0, truncated: false, tail: ['output.tail.new'] }],
    [
      'ring not yet full: nothing dropped',
      files({ headBytes: 4096, completed: 3, slotBytes: [1024, 1024, 700] }),
      { totalBytes: 4096 + 2748, droppedBytes: 0, truncated: false, tail: ['output.tail.0', 'output.tail.1', 'output.tail.2'] },
    ],
    [
      'ring full exactly: nothing dropped yet',
      files({ headBytes: 4096, completed: 4, slotBytes: [1024, 1024, 1024, 1024] }),
      { totalBytes: 8192, droppedBytes: 0, truncated: false, tail: ['output.tail.0', 'output.tail.1', 'output.tail.2', 'output.tail.3'] },
    ],
    [
      'wrapped: the oldest kept is slot (completed mod 4), the dropped were full',
      files({ headBytes: 4096, completed: 94, slotBytes: [1024, 672, 1024, 1024] }),
      { totalBytes: 100_000, droppedBytes: 90 * 1024, truncated: true, tail: ['output.tail.2', 'output.tail.3', 'output.tail.0', 'output.tail.1'] },
    ],
    [
      'wrapped, capture cut off mid-segment: the partial segment is the newest',
      files({ headBytes: 4096, completed: 5, slotBytes: [1024, 1024, 1024, 1024], newBytes: 3 }),
      { totalBytes: 4096 + 1024 + 4096 + 3, droppedBytes: 1024, truncated: true, tail: ['output.tail.1', 'output.tail.2', 'output.tail.3', 'output.tail.0', 'output.tail.new'] },
    ],
  ];
  for (const [what, f, want] of cases) it(what, () => assert.deepEqual(captureAccounting(l, f), want));
});

describe('planRetention', () => {
  const DAY = 86_400_000;
  const now = 100 * DAY;
  const a = (dir: string, ageDays: number, bytes: number): ArchiveEntry => ({ dir, bytes, archivedAtMs: now - ageDays * DAY });
  const archives = [a('/a/ns/new', 1, 100), a('/a/ns/old', 10, 300), a('/a/_orphans/mid', 5, 200), a('/a/ns/oldest', 20, 50)];
  const cases: [string, RetentionPolicy, [string, 'age' | 'size'][]][] = [
    ['no limits: nothing', {}, []],
    ['everything within both limits: nothing', { maxAgeMs: 30 * DAY, maxBytes: 650 }, []],
    [
      'past the max age, oldest first',
      { maxAgeMs: 7 * DAY },
      [
        ['/a/ns/oldest', 'age'],
        ['/a/ns/old', 'age'],
      ],
    ],
    [
      'over the max bytes: oldest first until the rest fit',
      { maxBytes: 320 },
      [
        ['/a/ns/oldest', 'size'],
        ['/a/ns/old', 'size'],
      ],
    ],
    ['over by one byte: one goes', { maxBytes: 649 }, [['/a/ns/oldest', 'size']]],
    [
      'age first, then size on what is left',
      { maxAgeMs: 15 * DAY, maxBytes: 150 },
      [
        ['/a/ns/oldest', 'age'],
        ['/a/ns/old', 'size'],
        ['/a/_orphans/mid', 'size'],
      ],
    ],
    [
      'a max of 0 bytes deletes everything',
      { maxBytes: 0 },
      [
        ['/a/ns/oldest', 'size'],
        ['/a/ns/old', 'size'],
        ['/a/_orphans/mid', 'size'],
        ['/a/ns/new', 'size'],
      ],
    ],
    ['exactly the max age stays', { maxAgeMs: 20 * DAY }, []],
  ];
  for (const [what, policy, want] of cases) {
    it(what, () =>
      assert.deepEqual(
        planRetention(archives, policy, now).map((d) => [d.entry.dir, d.reason]),
        want,
      ),
    );
  }
  it('breaks ties in age by directory, so a pass is deterministic', () => {
    const same = [a('/a/b', 3, 10), a('/a/a', 3, 10)];
    assert.deepEqual(
      planRetention(same, { maxBytes: 10 }, now).map((d) => d.entry.dir),
      ['/a/a'],
    );
  });
});

describe('retentionPolicy (the sidecar flags)', () => {
  it('0 means no limit', () => assert.deepEqual(retentionPolicy(0, 0), {}));
  it('seconds and bytes', () => assert.deepEqual(retentionPolicy(60, 1024), { maxAgeMs: 60_000, maxBytes: 1024 }));
});

describe('journalHasRoom', () => {
  const cases: [number, number, number, boolean][] = [
    [0, 10, 10, true],
    [5, 5, 10, true],
    [5, 6, 10, false],
    [10, 1, 10, false],
    [0, 11, 10, false],
  ];
  for (const [size, line, max, want] of cases) it(`${size} + ${line} in ${max}: ${want}`, () => assert.equal(journalHasRoom(size, line, max), want));
});
