import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capsProblem, ReportLimiter, take, type Bucket } from '../../src/report/limits.js';
import { MAX_BODY_BYTES } from '../../src/report/protocol.js';

describe('report caps: the token bucket (take)', () => {
  // capacity 60 per minute: one token a second.
  const cases: Array<[string, Bucket | undefined, number, number, string]> = [
    ['a new bucket is full', undefined, 60, 0, 'ok 0'],
    ['a new bucket gives a burst up to its capacity', undefined, 1, 0, 'ok 59'],
    ['more than is left is refused, and nothing is taken', { tokens: 0.5, atMs: 0 }, 1, 0, 'refused 0.5 retry 500'],
    ['it refills with time', { tokens: 0, atMs: 0 }, 1, 1_000, 'ok 0'],
    ['it refills no further than its capacity', { tokens: 0, atMs: 0 }, 1, 3_600_000, 'ok 59'],
    ['a refusal says when the amount is there', { tokens: 2, atMs: 0 }, 10, 0, 'refused 2 retry 8000'],
    ['a clock going back refills nothing', { tokens: 1, atMs: 5_000 }, 1, 0, 'ok 0'],
  ];
  for (const [name, bucket, amount, now, want] of cases) {
    it(name, () => {
      const r = take(bucket, 60, amount, now);
      assert.equal(r.ok ? `ok ${r.bucket.tokens}` : `refused ${r.bucket.tokens} retry ${r.retryAfterMs}`, want);
    });
  }
});

describe('report caps: per agent (ReportLimiter)', () => {
  it('refuses the report over the rate, per agent, and admits again once refilled', () => {
    const l = new ReportLimiter({ maxPerMinute: 3, maxBytesPerMinute: MAX_BODY_BYTES });
    for (let i = 0; i < 3; i++) assert.equal(l.admit('a', 0), undefined);
    const refused = l.admit('a', 0);
    assert.equal(refused?.kind, 'rate');
    assert.equal(refused?.retryAfterSeconds, 20);
    assert.match(refused?.message ?? '', /^report rate cap reached: this agent may send at most 3 reports per minute; retry in 20 s$/);
    assert.equal(l.admit('b', 0), undefined, "another agent's bucket is its own");
    assert.equal(l.admit('a', 20_000), undefined);
  });

  it('refuses bytes over the cap and counts only what it admits', () => {
    const l = new ReportLimiter({ maxPerMinute: 100, maxBytesPerMinute: MAX_BODY_BYTES });
    assert.equal(l.charge('a', MAX_BODY_BYTES - 10, 0), undefined);
    const refused = l.charge('a', 100, 0);
    assert.equal(refused?.kind, 'bytes');
    assert.match(refused?.message ?? '', new RegExp(`at most ${MAX_BODY_BYTES} bytes of reports per minute`));
    assert.equal(l.charge('a', 10, 0), undefined, 'the refused 100 bytes were not taken');
  });

  it('forgets an agent: its next report starts with a full bucket', () => {
    const l = new ReportLimiter({ maxPerMinute: 1, maxBytesPerMinute: MAX_BODY_BYTES });
    assert.equal(l.admit('a', 0), undefined);
    assert.ok(l.admit('a', 0));
    l.forget('a');
    assert.equal(l.admit('a', 0), undefined);
  });

  const bad: Array<[string, number, number, RegExp]> = [
    ['zero reports', 0, MAX_BODY_BYTES, /reports per minute must be a positive integer, got 0/],
    ['a fraction of a report', 1.5, MAX_BODY_BYTES, /positive integer/],
    ['fewer bytes than the largest report', 10, MAX_BODY_BYTES - 1, new RegExp(`bytes per minute must be an integer of at least ${MAX_BODY_BYTES}`)],
  ];
  for (const [name, perMinute, bytes, message] of bad) {
    it(`refuses caps with ${name}`, () => {
      assert.match(capsProblem({ maxPerMinute: perMinute, maxBytesPerMinute: bytes }) ?? '', message);
      assert.throws(() => new ReportLimiter({ maxPerMinute: perMinute, maxBytesPerMinute: bytes }), message);
    });
  }
});
