/**
 * A work queue with client-go's semantics, and the worker loop that drains it.
 *
 * - Keyed and deduplicated: a key added while queued is queued once; a key added while being processed
 *   is queued again only after `done(key)`, so one key is never processed by two workers at once.
 * - `addAfter` (delayed, the earliest of several delays wins) and `addRateLimited` (per-key exponential
 *   backoff, like ItemExponentialFailureRateLimiter: 5 ms · 2^n, capped at 1000 s); `forget` resets it.
 * - `shutDown()` stops at once; `shutDownWithDrain()` hands out what is queued and waits for the work
 *   in progress, bounded by a timeout.
 */
import type { Logger } from 'pino';
import { backoffDelay, withTimeout } from './backoff.js';
import { describeError, isConflict } from './errors.js';

export interface RateLimiter<K> {
  /** The delay before the next retry of `key`; counts a failure. */
  when(key: K): number;
  forget(key: K): void;
  numRequeues(key: K): number;
}

/** base·2^failures, capped: client-go's ItemExponentialFailureRateLimiter (defaults 5 ms and 1000 s). */
export class ExponentialRateLimiter<K> implements RateLimiter<K> {
  private readonly failures = new Map<K, number>();
  constructor(
    private readonly baseMs = 5,
    private readonly maxMs = 1_000_000,
  ) {}
  when(key: K): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    return backoffDelay(n, { baseMs: this.baseMs, maxMs: this.maxMs });
  }
  forget(key: K): void {
    this.failures.delete(key);
  }
  numRequeues(key: K): number {
    return this.failures.get(key) ?? 0;
  }
}

/** Hooks for the workqueue_* metrics (names as client-go's). */
export interface QueueMetrics {
  /** workqueue_adds_total */
  add?(): void;
  /** workqueue_depth */
  depth?(n: number): void;
  /** workqueue_queue_duration_seconds: from first add to get. */
  queued?(seconds: number): void;
  /** workqueue_work_duration_seconds: from get to done. */
  worked?(seconds: number): void;
  /** workqueue_retries_total */
  retry?(): void;
}

export interface WorkQueueOptions<K> {
  rateLimiter?: RateLimiter<K>;
  metrics?: QueueMetrics;
  now?: () => number;
}

export class WorkQueue<K = string> {
  private queue: K[] = [];
  /** Keys that need processing (queued, or re-added while processing). */
  private readonly dirty = new Set<K>();
  private readonly processing = new Map<K, number>();
  private readonly addedAt = new Map<K, number>();
  /** When each key in `queue` joined it (FIFO: the head's is the oldest). */
  private readonly enqueuedAt = new Map<K, number>();
  private readonly waiting = new Map<K, { at: number; timer: NodeJS.Timeout }>();
  private getters: ((key: K | undefined) => void)[] = [];
  private drainWaiters: (() => void)[] = [];
  private shuttingDown = false;
  private draining = false;
  private readonly rateLimiter: RateLimiter<K>;
  private readonly metrics: QueueMetrics;
  private readonly now: () => number;

  constructor(o: WorkQueueOptions<K> = {}) {
    this.rateLimiter = o.rateLimiter ?? new ExponentialRateLimiter<K>();
    this.metrics = o.metrics ?? {};
    this.now = o.now ?? (() => performance.now());
  }

  add(key: K): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.metrics.add?.();
    this.dirty.add(key);
    if (!this.addedAt.has(key)) this.addedAt.set(key, this.now());
    if (this.processing.has(key)) return;
    this.enqueue(key);
  }

  /** Adds `key` after `ms`; if it is already waiting, the earlier time wins. */
  addAfter(key: K, ms: number): void {
    if (this.shuttingDown) return;
    if (ms <= 0) return this.add(key);
    const at = this.now() + ms;
    const existing = this.waiting.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.waiting.delete(key);
      this.add(key);
    }, ms);
    this.waiting.set(key, { at, timer });
  }

  /** Adds `key` after its rate limiter's delay (one more failure counted). */
  addRateLimited(key: K): void {
    if (this.shuttingDown) return;
    this.metrics.retry?.();
    this.addAfter(key, this.rateLimiter.when(key));
  }

  /** Resets the key's failure count (call after a successful reconcile). */
  forget(key: K): void {
    this.rateLimiter.forget(key);
  }

  numRequeues(key: K): number {
    return this.rateLimiter.numRequeues(key);
  }

  /** The next key to process (now marked processing), or undefined once the queue is shut down. */
  get(): Promise<K | undefined> {
    if (this.shuttingDown && (!this.draining || this.queue.length === 0)) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) {
      this.metrics.depth?.(this.queue.length);
      return Promise.resolve(this.begin(key));
    }
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** Marks `key` processed; if it was added meanwhile, it is queued again now. */
  done(key: K): void {
    const started = this.processing.get(key);
    if (started === undefined) return;
    this.processing.delete(key);
    this.metrics.worked?.((this.now() - started) / 1000);
    if (this.dirty.has(key) && !this.shuttingDown) this.enqueue(key);
    this.checkDrained();
  }

  /** Keys waiting to be processed (workqueue_depth); delayed keys are not counted until due. */
  len(): number {
    return this.queue.length;
  }

  /** How long the key at the head has waited for a worker (ms), or undefined when none waits. */
  oldestQueuedMs(): number | undefined {
    const head = this.queue[0];
    const at = head === undefined ? undefined : this.enqueuedAt.get(head);
    return at === undefined ? undefined : this.now() - at;
  }

  isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Stops now: adds are ignored, delayed keys dropped, and get() resolves undefined (queued keys are dropped). */
  shutDown(): void {
    this.beginShutdown();
    this.queue = [];
    this.enqueuedAt.clear();
    this.dirty.clear();
    this.metrics.depth?.(0);
    this.checkDrained();
  }

  /**
   * Stops taking new keys, lets workers take what is queued and waits until nothing is queued or in
   * progress. Resolves true when drained, false when `timeoutMs` ran out first.
   */
  async shutDownWithDrain(timeoutMs = 30_000): Promise<boolean> {
    this.draining = true;
    this.beginShutdown();
    if (this.isDrained()) return true;
    const drained = new Promise<boolean>((resolve) => this.drainWaiters.push(() => resolve(true)));
    return withTimeout(drained, timeoutMs, 'the queue to drain').catch(() => false);
  }

  private beginShutdown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.waiting.values()) clearTimeout(timer);
    this.waiting.clear();
    // Getters only wait when the queue is empty; with adds refused, nothing will come for them.
    for (const g of this.getters.splice(0)) g(undefined);
  }

  private isDrained(): boolean {
    return this.queue.length === 0 && this.processing.size === 0;
  }

  private checkDrained(): void {
    if (this.shuttingDown && this.isDrained()) for (const w of this.drainWaiters.splice(0)) w();
  }

  private enqueue(key: K): void {
    const getter = this.getters.shift();
    if (getter) return getter(this.begin(key));
    this.queue.push(key);
    this.enqueuedAt.set(key, this.now());
    this.metrics.depth?.(this.queue.length);
  }

  private begin(key: K): K {
    this.dirty.delete(key);
    this.enqueuedAt.delete(key);
    const now = this.now();
    const added = this.addedAt.get(key);
    this.addedAt.delete(key);
    if (added !== undefined) this.metrics.queued?.((now - added) / 1000);
    this.processing.set(key, now);
    return key;
  }
}

/** What a reconcile asks for: nothing (done), or to run again after a delay. */
export type ReconcileResult = { requeueAfterMs?: number } | void;

/** controller-runtime's result label values. */
export type ReconcileLabel = 'success' | 'error' | 'requeue' | 'requeue_after';

export interface WorkerOptions<K> {
  logger: Logger;
  /** For controller_runtime_reconcile_total{result}, _errors_total and _time_seconds. */
  onReconcile?: (o: { key: K; result: ReconcileLabel; seconds: number; error?: unknown }) => void;
}

/**
 * Runs `n` workers until the queue shuts down. Each key: success → forget; requeueAfterMs → forget
 * and add after the delay; 409 Conflict (stale read) → requeue with the per-key backoff (5 ms at first,
 * so at once in practice, but bounded if the cache stays stale) without counting an error; any other
 * error → logged, counted, requeued with the per-key backoff.
 */
export async function runWorkers<K>(queue: WorkQueue<K>, n: number, reconcile: (key: K) => Promise<ReconcileResult>, o: WorkerOptions<K>): Promise<void> {
  const worker = async () => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      const started = performance.now();
      let result: ReconcileLabel;
      let error: unknown;
      try {
        const r = await reconcile(key);
        queue.forget(key);
        if (r && r.requeueAfterMs !== undefined) {
          queue.addAfter(key, r.requeueAfterMs);
          result = 'requeue_after';
        } else {
          result = 'success';
        }
      } catch (err) {
        queue.addRateLimited(key);
        if (isConflict(err)) {
          result = 'requeue';
          o.logger.debug({ key, err: describeError(err) }, 'conflict (stale read); requeued');
        } else {
          result = 'error';
          error = err;
          o.logger.error({ key, err, requeues: queue.numRequeues(key) }, 'reconcile failed; requeued with backoff');
        }
      } finally {
        queue.done(key);
      }
      o.onReconcile?.({ key, result, seconds: (performance.now() - started) / 1000, error });
    }
  };
  await Promise.all(Array.from({ length: n }, worker));
}
