import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { coalesce } from '../../src/sidecar/runtime/coalesce.js';

/** A run whose completion the test controls, recording when each run started. */
function controlled() {
  const runs: { resolve: (v: number) => void; reject: (e: Error) => void }[] = [];
  const run = () =>
    new Promise<number>((resolve, reject) => {
      runs.push({ resolve, reject });
    });
  return { runs, run };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('coalesce', () => {
  it('a lone caller gets its own run', async () => {
    const c = controlled();
    const scan = coalesce(c.run);
    const a = scan();
    assert.equal(c.runs.length, 1);
    c.runs[0]!.resolve(1);
    assert.equal(await a, 1);
    const b = scan();
    assert.equal(c.runs.length, 2, 'a call after a run ended starts a new one');
    c.runs[1]!.resolve(2);
    assert.equal(await b, 2);
  });

  it('callers arriving during a run share the next run, which starts only after the current one', async () => {
    const c = controlled();
    const scan = coalesce(c.run);
    const first = scan();
    const late = [scan(), scan(), scan()];
    await tick();
    assert.equal(c.runs.length, 1, 'no second run while the first is in flight');
    c.runs[0]!.resolve(1);
    assert.equal(await first, 1);
    await tick();
    assert.equal(c.runs.length, 2, 'one shared run for the three late callers');
    c.runs[1]!.resolve(2);
    assert.deepEqual(await Promise.all(late), [2, 2, 2], 'late callers never get the run that began before them');
  });

  it('a failed run fails its callers only; the next callers get a fresh run', async () => {
    const c = controlled();
    const scan = coalesce(c.run);
    const first = scan();
    const late = scan();
    c.runs[0]!.reject(new Error('EIO'));
    await assert.rejects(first, /EIO/);
    await tick();
    assert.equal(c.runs.length, 2);
    c.runs[1]!.resolve(7);
    assert.equal(await late, 7);
    const again = scan();
    c.runs[2]!.resolve(8);
    assert.equal(await again, 8);
  });
});
