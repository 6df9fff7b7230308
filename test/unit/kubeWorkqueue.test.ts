import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiException } from '@kubernetes/client-node';
import { StaleObjectError } from '../../src/kube/errors.js';
import { ExponentialRateLimiter, runWorkers, WorkQueue, type ReconcileLabel } from '../../src/kube/workqueue.js';
import { silentLogger } from '../support/kubeFixtures.js';

/** One step of a queue script: an operation and, for get/len, what it must yield. */
type Step = { add: string } | { done: string } | { get: string | undefined } | { len: number } | { shutDown: true };

async function play(q: WorkQueue, steps: Step[]): Promise<void> {
  for (const [i, s] of steps.entries()) {
    const at = `step ${i}: ${JSON.stringify(s)}`;
    if ('add' in s) q.add(s.add);
    else if ('done' in s) q.done(s.done);
    else if ('len' in s) assert.equal(q.len(), s.len, at);
    else if ('shutDown' in s) q.shutDown();
    else {
      // A get on an empty live queue would wait forever: a script only gets what it expects to be there.
      const got = await Promise.race([q.get(), sleep(200).then(() => 'timeout' as const)]);
      assert.equal(got, s.get, at);
    }
  }
}

describe('WorkQueue semantics', () => {
  const cases: { name: string; steps: Step[] }[] = [
    { name: 'FIFO', steps: [{ add: 'a' }, { add: 'b' }, { add: 'c' }, { get: 'a' }, { get: 'b' }, { get: 'c' }, { len: 0 }] },
    { name: 'a key added while queued is not duplicated', steps: [{ add: 'a' }, { add: 'b' }, { add: 'a' }, { len: 2 }, { get: 'a' }, { get: 'b' }, { len: 0 }] },
    {
      name: 'a key added while processing is re-queued after done, once',
      steps: [{ add: 'a' }, { get: 'a' }, { add: 'a' }, { add: 'a' }, { len: 0 }, { done: 'a' }, { len: 1 }, { get: 'a' }, { done: 'a' }, { len: 0 }],
    },
    {
      name: 'a processing key is not handed to a second worker',
      steps: [{ add: 'a' }, { add: 'b' }, { get: 'a' }, { add: 'a' }, { get: 'b' }, { len: 0 }, { done: 'a' }, { get: 'a' }],
    },
    { name: 'done of an unknown key is harmless', steps: [{ done: 'x' }, { add: 'a' }, { get: 'a' }, { done: 'a' }, { len: 0 }] },
    {
      name: 'shutDown: get yields undefined at once, queued keys dropped, adds ignored',
      steps: [{ add: 'a' }, { add: 'b' }, { shutDown: true }, { len: 0 }, { get: undefined }, { add: 'c' }, { len: 0 }, { get: undefined }],
    },
    {
      name: 'shutDown while processing: done does not requeue',
      steps: [{ add: 'a' }, { get: 'a' }, { add: 'a' }, { shutDown: true }, { done: 'a' }, { len: 0 }, { get: undefined }],
    },
  ];
  for (const c of cases) it(c.name, () => play(new WorkQueue(), c.steps));

  it('a waiting get receives the next add', async () => {
    const q = new WorkQueue();
    const pending = q.get();
    q.add('a');
    assert.equal(await pending, 'a');
    assert.equal(q.len(), 0);
  });

  it('shutDown releases waiting gets with undefined', async () => {
    const q = new WorkQueue();
    const pending = [q.get(), q.get()];
    q.shutDown();
    assert.deepEqual(await Promise.all(pending), [undefined, undefined]);
  });
});

describe('WorkQueue delays', () => {
  it('addAfter adds once the delay has passed', async () => {
    const q = new WorkQueue();
    q.addAfter('a', 40);
    assert.equal(q.len(), 0);
    await sleep(80);
    assert.equal(q.len(), 1);
  });

  const earliest: { name: string; delays: number[]; presentAt: number; absentAt?: number }[] = [
    { name: 'a shorter delay replaces a longer one', delays: [1000, 20], presentAt: 80 },
    { name: 'a longer delay does not postpone a shorter one', delays: [20, 1000], presentAt: 80 },
    { name: 'zero or negative delay adds at once', delays: [0], presentAt: 0 },
  ];
  for (const c of earliest) {
    it(c.name, async () => {
      const q = new WorkQueue();
      for (const d of c.delays) q.addAfter('a', d);
      await sleep(c.presentAt);
      assert.equal(q.len(), 1);
      assert.equal(await q.get(), 'a');
      q.shutDown();
    });
  }

  it('shutDown cancels delayed adds', async () => {
    const q = new WorkQueue();
    q.addAfter('a', 20);
    q.shutDown();
    await sleep(50);
    assert.equal(q.len(), 0);
  });

  it('addRateLimited waits the limiter delay, which grows per failure; forget resets it', async () => {
    const q = new WorkQueue({ rateLimiter: new ExponentialRateLimiter(30, 10_000) });
    q.addRateLimited('a'); // 30 ms
    assert.equal(q.numRequeues('a'), 1);
    await sleep(60);
    assert.equal(await q.get(), 'a');
    q.done('a');
    q.addRateLimited('a'); // 60 ms
    await sleep(40);
    assert.equal(q.len(), 0, 'second retry waits longer than the first');
    await sleep(60);
    assert.equal(q.len(), 1);
    q.forget('a');
    assert.equal(q.numRequeues('a'), 0);
    q.shutDown();
  });
});

describe('WorkQueue drain', () => {
  it('hands out queued keys, waits for work in progress, then reports drained', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('b');
    assert.equal(await q.get(), 'a');
    let drained: boolean | undefined;
    const draining = q.shutDownWithDrain(2000).then((d) => (drained = d));
    q.add('c'); // refused: shutting down
    assert.equal(await q.get(), 'b');
    q.done('a');
    await sleep(10);
    assert.equal(drained, undefined, 'b is still in progress');
    q.done('b');
    await draining;
    assert.equal(drained, true);
    assert.equal(await q.get(), undefined);
  });

  it('reports false when work in progress outlasts the timeout', async () => {
    const q = new WorkQueue();
    q.add('a');
    await q.get();
    assert.equal(await q.shutDownWithDrain(30), false);
  });

  it('an idle queue drains at once', async () => {
    assert.equal(await new WorkQueue().shutDownWithDrain(10), true);
  });
});

describe('ExponentialRateLimiter', () => {
  const cases: { name: string; base?: number; max?: number; delays: number[] }[] = [
    { name: 'client-go defaults: 5 ms doubling', delays: [5, 10, 20, 40, 80, 160] },
    { name: 'capped at max', base: 100, max: 350, delays: [100, 200, 350, 350] },
    { name: 'default cap is 1000 s', base: 500_000, delays: [500_000, 1_000_000, 1_000_000] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const rl = new ExponentialRateLimiter<string>(c.base, c.max);
      assert.deepEqual(
        c.delays.map(() => rl.when('k')),
        c.delays,
      );
      assert.equal(rl.numRequeues('k'), c.delays.length);
      assert.equal(rl.when('other'), c.delays[0], 'keys back off independently');
      rl.forget('k');
      assert.equal(rl.when('k'), c.delays[0]);
    });
  }
});

describe('runWorkers', () => {
  type Outcome = { key: string; result: ReconcileLabel; error?: unknown };
  const conflict = new ApiException(409, 'Conflict', { reason: 'Conflict' }, {});

  const cases: {
    name: string;
    /** What each successive reconcile of key 'k' does. */
    behaviour: ('ok' | 'fail' | 'conflict' | 'stale' | 'requeueAfter')[];
    results: ReconcileLabel[];
    errors: number;
  }[] = [
    { name: 'success', behaviour: ['ok'], results: ['success'], errors: 0 },
    { name: 'error: counted, retried with backoff until success', behaviour: ['fail', 'fail', 'ok'], results: ['error', 'error', 'success'], errors: 2 },
    { name: '409 conflict: requeued, not an error', behaviour: ['conflict', 'ok'], results: ['requeue', 'success'], errors: 0 },
    { name: 'stale finalizer patch counts as a conflict', behaviour: ['stale', 'ok'], results: ['requeue', 'success'], errors: 0 },
    { name: 'requeueAfter: runs again after the delay', behaviour: ['requeueAfter', 'ok'], results: ['requeue_after', 'success'], errors: 0 },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const q = new WorkQueue<string>({ rateLimiter: new ExponentialRateLimiter(1, 20) });
      const outcomes: Outcome[] = [];
      let calls = 0;
      const workers = runWorkers(
        q,
        2,
        async () => {
          const b = c.behaviour[calls++];
          if (b === 'fail') throw new Error('boom');
          if (b === 'conflict') throw conflict;
          if (b === 'stale') throw new StaleObjectError('changed');
          if (b === 'requeueAfter') return { requeueAfterMs: 30 };
          return undefined;
        },
        { logger: silentLogger(), onReconcile: (o) => outcomes.push(o) },
      );
      q.add('k');
      const deadline = Date.now() + 3000;
      while (outcomes.length < c.results.length && Date.now() < deadline) await sleep(5);
      q.shutDown();
      await workers;
      assert.deepEqual(
        outcomes.map((o) => o.result),
        c.results,
      );
      assert.equal(outcomes.filter((o) => o.error !== undefined).length, c.errors);
      assert.equal(q.numRequeues('k'), 0, 'success forgets the failures');
    });
  }

  it('never runs one key on two workers at once, and drains on shutdown', async () => {
    const q = new WorkQueue<string>();
    const active = new Map<string, number>();
    let maxActive = 0;
    let total = 0;
    const workers = runWorkers(
      q,
      4,
      async (key) => {
        const n = (active.get(key) ?? 0) + 1;
        active.set(key, n);
        maxActive = Math.max(maxActive, n);
        await sleep(5);
        active.set(key, n - 1);
        total++;
      },
      { logger: silentLogger() },
    );
    for (let i = 0; i < 20; i++) {
      for (const k of ['a', 'b', 'c']) q.add(k);
      await sleep(1);
    }
    assert.equal(await q.shutDownWithDrain(2000), true);
    await workers;
    assert.equal(maxActive, 1);
    assert.ok(total >= 3 && total <= 60, `processed ${total} times`);
  });

  it('feeds the queue metrics', async () => {
    const seen = { add: 0, retry: 0, depths: [] as number[], queued: 0, worked: 0 };
    const q = new WorkQueue<string>({
      rateLimiter: new ExponentialRateLimiter(1, 5),
      metrics: {
        add: () => seen.add++,
        retry: () => seen.retry++,
        depth: (n) => seen.depths.push(n),
        queued: (s) => {
          assert.ok(s >= 0);
          seen.queued++;
        },
        worked: (s) => {
          assert.ok(s >= 0);
          seen.worked++;
        },
      },
    });
    q.add('a');
    q.add('b');
    assert.equal(await q.get(), 'a');
    q.done('a');
    q.addRateLimited('a');
    await sleep(20);
    assert.deepEqual(seen.depths, [1, 2, 1, 2]);
    assert.equal(seen.add, 3);
    assert.equal(seen.retry, 1);
    assert.equal(seen.queued, 1);
    assert.equal(seen.worked, 1);
    q.shutDown();
  });
});

describe('WorkQueue.oldestQueuedMs', () => {
  it('is how long the head has waited for a worker, not counting processing or delays', async () => {
    let now = 0;
    const q = new WorkQueue<string>({ now: () => now });
    assert.equal(q.oldestQueuedMs(), undefined);
    q.add('a');
    now = 10;
    q.add('b');
    now = 25;
    assert.equal(q.oldestQueuedMs(), 25);
    assert.equal(await q.get(), 'a');
    assert.equal(q.oldestQueuedMs(), 15, 'b, queued at 10');
    q.add('a'); // while processing: waits for done, not for a worker
    assert.equal(await q.get(), 'b');
    assert.equal(q.oldestQueuedMs(), undefined);
    now = 40;
    q.done('a');
    now = 45;
    assert.equal(q.oldestQueuedMs(), 5, 'a, queued again at done');
    q.shutDown();
    assert.equal(q.oldestQueuedMs(), undefined);
  });
});
