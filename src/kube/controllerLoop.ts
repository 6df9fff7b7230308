/**
 * The run loop every controller here shares, as controller-runtime's `Controller.Start` is written
 * once: start the informers, wait for their caches, run the workers until the signal aborts, drain
 * the work in hand, stop.
 */
import type { Logger } from 'pino';
import { runWorkers, type ReconcileResult, type WorkerOptions, type WorkQueue } from './workqueue.js';

/** What the loop needs of an informer. */
export interface CacheSource {
  start(): void;
  waitForSync(timeoutMs?: number, signal?: AbortSignal): Promise<void>;
  stop(): Promise<void>;
}

export interface ControllerLoop<K> {
  informers: readonly CacheSource[];
  queue: WorkQueue<K>;
  workers: number;
  reconcile: (key: K) => Promise<ReconcileResult>;
  logger: Logger;
  onReconcile?: WorkerOptions<K>['onReconcile'];
  /** Once the caches are filled, before the first worker starts. */
  onSynced?: () => void;
}

/** Runs `c` until `signal` aborts; returns once the workers have drained and the informers stopped. */
export async function runController<K>(c: ControllerLoop<K>, signal: AbortSignal): Promise<void> {
  for (const i of c.informers) i.start();
  try {
    try {
      // The informers retry forever: an API server that is down at start only delays this.
      await Promise.all(c.informers.map((i) => i.waitForSync(Infinity, signal)));
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    }
    c.onSynced?.();
    const workers = runWorkers(c.queue, c.workers, c.reconcile, { logger: c.logger, onReconcile: c.onReconcile });
    await aborted(signal);
    await c.queue.shutDownWithDrain();
    await workers;
  } finally {
    c.queue.shutDown();
    await Promise.all(c.informers.map((i) => i.stop()));
  }
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
}
