import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { runController, type CacheSource } from '../../src/kube/controllerLoop.js';
import { WorkQueue } from '../../src/kube/workqueue.js';
import { silentLogger } from '../support/kubeFixtures.js';

/** An informer stand-in whose sync the test releases, recording what the loop did to it. */
function source(log: string[], name: string): CacheSource & { sync: () => void } {
  let sync = () => undefined as void;
  const synced = new Promise<void>((resolve) => (sync = resolve));
  return {
    start: () => void log.push(`${name} start`),
    waitForSync: (_timeoutMs, signal) => Promise.race([synced, new Promise<never>((_, reject) => signal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true }))]),
    stop: async () => void log.push(`${name} stop`),
    sync: () => sync(),
  };
}

describe('runController', () => {
  it('starts the informers, runs no worker before every cache synced, drains the work in hand on stop, then stops the informers', async () => {
    const log: string[] = [];
    const a = source(log, 'a');
    const b = source(log, 'b');
    const queue = new WorkQueue<string>();
    queue.add('early');
    const ac = new AbortController();
    const running = runController(
      {
        informers: [a, b],
        queue,
        workers: 2,
        logger: silentLogger(),
        onSynced: () => void log.push('synced'),
        reconcile: async (key) => {
          log.push(`reconcile ${key}`);
          if (key === 'slow') {
            ac.abort(); // stopping while this key is in hand: it still finishes
            await sleep(50);
            log.push('slow done');
          }
        },
      },
      ac.signal,
    );
    await sleep(20);
    a.sync();
    await sleep(20);
    assert.deepEqual(log, ['a start', 'b start'], 'no worker before every cache synced');
    b.sync();
    await sleep(20);
    queue.add('slow');
    await running;
    assert.deepEqual(log, ['a start', 'b start', 'synced', 'reconcile early', 'reconcile slow', 'slow done', 'a stop', 'b stop']);
    assert.equal(queue.isShuttingDown(), true);
  });

  it('returns without starting workers when stopped before the caches synced', async () => {
    const log: string[] = [];
    const ac = new AbortController();
    const running = runController(
      { informers: [source(log, 'a')], queue: new WorkQueue<string>(), workers: 1, logger: silentLogger(), reconcile: async () => void log.push('reconcile'), onSynced: () => void log.push('synced') },
      ac.signal,
    );
    await sleep(10);
    ac.abort();
    await running;
    assert.deepEqual(log, ['a start', 'a stop']);
  });
});
