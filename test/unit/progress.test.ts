import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { progressProblem, RelistProgress, type ProgressObservation } from '../../src/sidecar/progress.js';

const T0 = 1_764_000_000_000;
const s = (n: number) => n * 1000;

describe('progressProblem', () => {
  const base: ProgressObservation = { now: T0 + s(100), thresholdMs: s(60), startedAt: T0, pending: 2 };
  const cases: { name: string; o: Partial<ProgressObservation>; want: RegExp | undefined }[] = [
    { name: 'a pass just now: healthy', o: { lastPassAt: T0 + s(99) }, want: undefined },
    { name: 'a pass exactly at the threshold: healthy', o: { lastPassAt: T0 + s(40) }, want: undefined },
    {
      name: 'no pass for longer than the threshold, work pending: unhealthy, with the figures',
      o: { lastPassAt: T0 + s(6) },
      want: /^relist last completed 94s ago; threshold 60s; 2 agent\(s\) or queued key\(s\) waiting$/,
    },
    { name: 'stalled but nothing pending: healthy (nothing is held up)', o: { lastPassAt: T0 + s(6), pending: 0 }, want: undefined },
    { name: 'not started yet (registering): healthy', o: { startedAt: undefined, pending: 3 }, want: undefined },
    { name: 'started, no pass yet, within the threshold: healthy', o: { startedAt: T0 + s(50) }, want: undefined },
    { name: 'started, never a pass, past the threshold: unhealthy', o: {}, want: /^relist has not completed since it started 100s ago; threshold 60s/ },
    {
      name: 'the last error and the queue head are told',
      o: { lastPassAt: T0, lastError: 'timed out after 2000 ms waiting for open of /x', oldestQueuedMs: s(70) },
      want: /100s ago; .*oldest queued key waiting 70s; last error: timed out after 2000 ms waiting for open of \/x$/,
    },
    { name: 'a clock that went back: healthy', o: { lastPassAt: T0 + s(200) }, want: undefined },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = progressProblem({ ...base, ...c.o });
      if (c.want === undefined) assert.equal(got, undefined);
      else assert.match(got ?? '(healthy)', c.want);
    });
  }
});

describe('RelistProgress', () => {
  it('records passes and failures; a pass clears the error; started counts from the first start', () => {
    const p = new RelistProgress();
    assert.equal(p.observe(T0, 1, 1, undefined).startedAt, undefined);
    p.started(T0);
    p.started(T0 + 5);
    p.failed('boom');
    assert.deepEqual(p.observe(T0 + 10, 1, 1, 4), { now: T0 + 10, thresholdMs: 1, startedAt: T0, lastError: 'boom', pending: 1, oldestQueuedMs: 4 });
    p.passed(T0 + 20);
    assert.deepEqual(p.observe(T0 + 30, 1, 0, undefined), { now: T0 + 30, thresholdMs: 1, startedAt: T0, lastPassAt: T0 + 20, pending: 0 });
    assert.equal(p.lastPassSeconds(), (T0 + 20) / 1000);
  });
});
