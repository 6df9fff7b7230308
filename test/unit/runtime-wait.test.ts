import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { waitFor, WaitTimeoutError, withKeyLock, withTimeout } from '../../src/sidecar/runtime/wait.js';

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
    await assert.rejects(waitFor(async () => undefined, { timeoutMs: 30, intervalMs: 5, what: 'the moon' }), (err: unknown) => {
      assert.ok(err instanceof WaitTimeoutError);
      assert.match(err.message, /30 ms waiting for the moon/);
      return true;
    });
  });
  it('propagates a probe error', async () => {
    await assert.rejects(waitFor(async () => Promise.reject(new Error('boom')), { timeoutMs: 100, what: 'x' }), /boom/);
  });
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
    await assert.rejects(withKeyLock('k', async () => Promise.reject(new Error('x'))), /x/);
    assert.equal(await withKeyLock('k', async () => 'next'), 'next');
  });
});
