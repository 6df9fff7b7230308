import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { WaitTimeoutError, withTimeout } from '../../src/kube/backoff.js';
import { nextInterval, waitFor, withKeyLock } from '../../src/sidecar/runtime/wait.js';

describe('waitFor', () => {
  it('returns the first defined value', async () => {
    let calls = 0;
    assert.equal(await waitFor(async () => (++calls === 3 ? 'ok' : undefined), { timeoutMs: 1_000, intervalMs: 1, what: 'x' }), 'ok');
    assert.equal(calls, 3);
  });
  it('accepts falsy values other than undefined', async () => {
    assert.equal(await waitFor(async () => 0, { timeoutMs: 10, what: 'x' }), 0);
  });
  it('times out naming what it waited for', async () => {
    await assert.rejects(
      waitFor(async () => undefined, { timeoutMs: 30, intervalMs: 5, what: 'the moon' }),
      (err: unknown) => {
        assert.ok(err instanceof WaitTimeoutError);
        assert.match(err.message, /30 ms waiting for the moon/);
        return true;
      },
    );
  });
  it('slows down while the condition is not met: few probes over a long wait', async () => {
    let calls = 0;
    await assert.rejects(
      waitFor(async () => void calls++, { timeoutMs: 400, intervalMs: 1, maxIntervalMs: 1000, what: 'x' }),
      WaitTimeoutError,
    );
    // Pauses 1, 2, 3, 5, 8, 12, 18, 27, 41, 62, 93, 140: about 13 probes in 400 ms, not 400.
    assert.ok(calls >= 5 && calls <= 20, `${calls} probes`);
  });
  it('propagates a probe error', async () => {
    await assert.rejects(
      waitFor(async () => Promise.reject(new Error('boom')), { timeoutMs: 100, what: 'x' }),
      /boom/,
    );
  });
});

describe('nextInterval', () => {
  for (const [now, max, want] of [
    [10, 250, 15],
    [1, 250, 2],
    [200, 250, 250],
    [250, 250, 250],
    [5, 50, 8],
  ] as const) {
    it(`${now} ms, at most ${max}: ${want}`, () => assert.equal(nextInterval(now, max), want));
  }
});

describe('withTimeout', () => {
  it('passes a result through', async () => assert.equal(await withTimeout(Promise.resolve(7), 100, 'x'), 7));
  it('rejects when too slow', async () => assert.rejects(withTimeout(sleep(200), 20, 'a slow hook'), /waiting for a slow hook/));
});

describe('withKeyLock', () => {
  it('serialises calls with the same key in call order, and not across keys', async () => {
    const log: string[] = [];
    const job = (key: string, name: string, ms: number) =>
      withKeyLock(key, async () => {
        log.push(`start ${name}`);
        await sleep(ms);
        log.push(`end ${name}`);
        return name;
      });
    const results = await Promise.all([job('a', 'a1', 30), job('a', 'a2', 1), job('b', 'b1', 5), job('a', 'a3', 1)]);
    assert.deepEqual(results, ['a1', 'a2', 'b1', 'a3']);
    assert.deepEqual(
      log.filter((l) => / a\d/.test(l)),
      ['start a1', 'end a1', 'start a2', 'end a2', 'start a3', 'end a3'],
    );
    assert.ok(log.indexOf('end b1') < log.indexOf('end a1'), 'b did not wait for a');
  });
  it('releases the lock when the function throws', async () => {
    await assert.rejects(
      withKeyLock('k', async () => Promise.reject(new Error('x'))),
      /x/,
    );
    assert.equal(await withKeyLock('k', async () => 'next'), 'next');
  });
});
