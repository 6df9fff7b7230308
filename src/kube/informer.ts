/**
 * A shared informer (reflector + cache) that keeps going whatever happens to its watch:
 *
 * - LIST (paginated, consistent read) then WATCH from the list's resourceVersion, with bookmarks and a
 *   randomised server-side timeoutSeconds, so every watch is renewed regularly;
 * - an inactivity watchdog: no event and no bookmark for `inactivityTimeoutMs` aborts the request (a
 *   half-open TCP connection otherwise stays silent for tens of minutes) and re-watches from the last
 *   resourceVersion;
 * - 410 Gone (HTTP status or a watch ERROR event) relists and diffs the new list against the cache, so
 *   objects deleted while we were away are reported as deletes;
 * - any other failure backs off (capped exponential, jittered) and retries forever, logging each time;
 * - optional periodic resync re-emits every cached object as an update.
 *
 * Handlers are called synchronously and must not block: enqueue keys and return.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { backoffDelay, randomBetween, sleep, type BackoffOptions } from './backoff.js';
import { describeError, HttpError, isGone } from './errors.js';
import { withDefaults } from './options.js';
import { requestJson, watchStream, type WatchEvent } from './request.js';
import { resourcePath, type KubeObject, type ResourceKind } from './resources.js';

/** client-go's MetaNamespaceKeyFunc: `namespace/name`, or `name` for cluster-scoped objects. */
export function objectKey(o: KubeObject): string {
  const ns = o.metadata?.namespace;
  return ns ? `${ns}/${o.metadata?.name ?? ''}` : (o.metadata?.name ?? '');
}

/** The inverse of objectKey. */
export function splitKey(key: string): { namespace?: string; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

export interface InformerOptions {
  resource: ResourceKind;
  logger: Logger;
  /** Watch one namespace only (namespaced resources); default all. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Re-emit every cached object as an update this often (0: never). Default 0. */
  resyncPeriodMs?: number;
  /** Server-side watch timeout, picked at random in this range for each watch. Default 300..600 s. */
  watchTimeoutSeconds?: { min: number; max: number };
  /**
   * Abort a watch after this long without any event or bookmark. The API server sends a bookmark about
   * once a minute, so a quiet but healthy watch is never idle this long. Default 150 s.
   */
  inactivityTimeoutMs?: number;
  /** Deadline of each LIST page. Default 60 s. */
  listTimeoutMs?: number;
  listPageSize?: number;
  /** Between retries after a failure. Default 800 ms .. 30 s, +50 % jitter (client-go's reflector backoff). */
  backoff?: BackoffOptions;
  /** A watch that ends normally sooner than this without any event counts as a failure (no hot loop). Default 1 s. */
  minWatchDurationMs?: number;
  random?: () => number;
  /** Called on every failure (after logging): for metrics. */
  onError?: (err: unknown, phase: 'list' | 'watch') => void;
}

type AddHandler<T> = (obj: T) => void;
type UpdateHandler<T> = (oldObj: T, newObj: T) => void;
type DeleteHandler<T> = (obj: T) => void;

/** Why a watch request was aborted by us. */
class WatchAbort extends Error {
  constructor(readonly why: 'stall' | 'stop') {
    super(`watch aborted: ${why}`);
  }
}

type Tunables = 'watchTimeoutSeconds' | 'inactivityTimeoutMs' | 'listTimeoutMs' | 'listPageSize' | 'backoff' | 'minWatchDurationMs';
const DEFAULTS: Required<Pick<InformerOptions, Tunables>> = {
  watchTimeoutSeconds: { min: 300, max: 600 },
  inactivityTimeoutMs: 150_000,
  listTimeoutMs: 60_000,
  listPageSize: 500,
  backoff: { baseMs: 800, maxMs: 30_000, jitter: 0.5 },
  minWatchDurationMs: 1000,
};

export class Informer<T extends KubeObject> {
  private readonly store = new Map<string, T>();
  private readonly adds: AddHandler<T>[] = [];
  private readonly updates: UpdateHandler<T>[] = [];
  private readonly deletes: DeleteHandler<T>[] = [];
  private readonly stopController = new AbortController();
  private readonly o: InformerOptions & Required<Pick<InformerOptions, Tunables>>;
  private readonly log: Logger;
  private synced = false;
  private syncWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Where the next watch starts; undefined: relist first. */
  private resourceVersion: string | undefined;
  private running: Promise<void> | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private eventsSinceList = 0;

  constructor(
    private readonly kc: KubeConfig,
    options: InformerOptions,
  ) {
    this.o = withDefaults(DEFAULTS, options);
    this.log = options.logger.child({ informer: options.resource.plural, selector: options.labelSelector });
  }

  onAdd(fn: AddHandler<T>): this {
    this.adds.push(fn);
    return this;
  }
  onUpdate(fn: UpdateHandler<T>): this {
    this.updates.push(fn);
    return this;
  }
  onDelete(fn: DeleteHandler<T>): this {
    this.deletes.push(fn);
    return this;
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }
  list(): T[] {
    return [...this.store.values()];
  }
  keys(): string[] {
    return [...this.store.keys()];
  }
  hasSynced(): boolean {
    return this.synced;
  }
  /** The resourceVersion the cache is at (the last event, bookmark or list seen). */
  lastResourceVersion(): string | undefined {
    return this.resourceVersion;
  }

  /** Starts listing and watching in the background. */
  start(): void {
    if (this.running) return;
    this.running = this.run();
    const period = this.o.resyncPeriodMs ?? 0;
    if (period > 0) {
      this.resyncTimer = setInterval(() => this.resync(), period);
      this.resyncTimer.unref();
    }
  }

  /**
   * Resolves once the first LIST is in the cache; rejects after `timeoutMs` (Infinity: no limit),
   * when `signal` aborts, or when stopped first.
   */
  waitForSync(timeoutMs = 60_000, signal?: AbortSignal): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.stopController.signal.aborted) return Promise.reject(new Error('informer stopped'));
    if (signal?.aborted) return Promise.reject(new Error(`informer ${this.o.resource.plural}: waiting for sync aborted`));
    return new Promise((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.syncWaiters = this.syncWaiters.filter((w) => w !== waiter);
      };
      const waiter = {
        resolve: () => {
          settle();
          resolve();
        },
        reject: (e: Error) => {
          settle();
          reject(e);
        },
      };
      const onAbort = () => waiter.reject(new Error(`informer ${this.o.resource.plural}: waiting for sync aborted`));
      const timer = Number.isFinite(timeoutMs) ? setTimeout(() => waiter.reject(new Error(`informer ${this.o.resource.plural}: not synced after ${timeoutMs} ms`)), timeoutMs) : undefined;
      signal?.addEventListener('abort', onAbort, { once: true });
      this.syncWaiters.push(waiter);
    });
  }

  /** Aborts the list/watch in flight and resolves when the loop has exited. */
  async stop(): Promise<void> {
    this.stopController.abort(new WatchAbort('stop'));
    clearInterval(this.resyncTimer);
    for (const w of this.syncWaiters.splice(0)) w.reject(new Error('informer stopped'));
    await this.running;
  }

  private get stopped(): boolean {
    return this.stopController.signal.aborted;
  }

  private async run(): Promise<void> {
    let failures = 0;
    const fail = async (err: unknown, phase: 'list' | 'watch') => {
      const delay = backoffDelay(failures++, this.o.backoff, this.o.random);
      this.log.warn({ err: describeError(err), phase, retryInMs: delay, failures }, 'list/watch failed; retrying');
      this.o.onError?.(err, phase);
      await sleep(delay, this.stopController.signal);
    };
    while (!this.stopped) {
      if (this.resourceVersion === undefined) {
        try {
          await this.relist();
        } catch (err) {
          if (!this.stopped) await fail(err, 'list');
          continue;
        }
      }
      try {
        const r = await this.watchOnce(this.resourceVersion!);
        if (r.events === 0 && r.durationMs < this.o.minWatchDurationMs && !r.stalled) {
          await fail(new Error(`watch closed after ${r.durationMs} ms without events`), 'watch');
        } else {
          failures = 0;
        }
      } catch (err) {
        if (this.stopped) break;
        if (isGone(err)) {
          // Our resourceVersion was compacted away: start over from a fresh list. A 410 straight after
          // a list is not expected; back off then, so that a server answering 410 always cannot make
          // us relist in a loop.
          this.log.info({ resourceVersion: this.resourceVersion }, 'resourceVersion too old (410); relisting');
          this.resourceVersion = undefined;
          if (this.eventsSinceList === 0) await fail(err, 'watch');
          continue;
        }
        await fail(err, 'watch');
      }
    }
  }

  /** LISTs everything (page by page) and replaces the cache, emitting the differences. */
  private async relist(): Promise<void> {
    const path = resourcePath(this.o.resource, this.o.namespace);
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await requestJson<{ items?: T[]; metadata?: { resourceVersion?: string; continue?: string } }>(this.kc, {
        path,
        query: {
          labelSelector: this.o.labelSelector,
          fieldSelector: this.o.fieldSelector,
          limit: this.o.listPageSize,
          continue: cont,
        },
        signal: this.stopController.signal,
        timeoutMs: this.o.listTimeoutMs,
      });
      items.push(...(page.items ?? []));
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?.continue || undefined;
    } while (cont);
    this.replace(items);
    this.resourceVersion = rv;
    this.eventsSinceList = 0;
    this.log.debug({ count: items.length, resourceVersion: rv }, 'listed');
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters.splice(0)) w.resolve();
    }
  }

  private replace(items: T[]): void {
    const fresh = new Map(items.map((i) => [objectKey(i), i] as const));
    for (const [key, old] of this.store) {
      if (!fresh.has(key)) {
        this.store.delete(key);
        this.emitDelete(old);
      }
    }
    for (const [key, obj] of fresh) {
      const old = this.store.get(key);
      this.store.set(key, obj);
      if (!old) this.emitAdd(obj);
      else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.emitUpdate(old, obj);
    }
  }

  private async watchOnce(fromRv: string): Promise<{ events: number; durationMs: number; stalled: boolean }> {
    const started = Date.now();
    const stall = new AbortController();
    const signal = AbortSignal.any([this.stopController.signal, stall.signal]);
    const watchdog = setTimeout(() => stall.abort(new WatchAbort('stall')), this.o.inactivityTimeoutMs);
    const { min, max } = this.o.watchTimeoutSeconds;
    let events = 0;
    try {
      await watchStream<T>(
        this.kc,
        resourcePath(this.o.resource, this.o.namespace),
        {
          resourceVersion: fromRv,
          allowWatchBookmarks: true,
          timeoutSeconds: randomBetween(min, max, this.o.random),
          labelSelector: this.o.labelSelector,
          fieldSelector: this.o.fieldSelector,
        },
        signal,
        (e) => {
          watchdog.refresh();
          events++;
          this.handle(e);
        },
      );
      return { events, durationMs: Date.now() - started, stalled: false };
    } catch (err) {
      if (err instanceof WatchAbort && err.why === 'stall') {
        this.log.warn({ idleMs: this.o.inactivityTimeoutMs, resourceVersion: this.resourceVersion }, 'watch silent for too long; re-watching');
        return { events, durationMs: Date.now() - started, stalled: true };
      }
      throw err;
    } finally {
      clearTimeout(watchdog);
    }
  }

  private handle(e: WatchEvent<T>): void {
    if (e.type === 'ERROR') {
      const status = e.object as { code?: number; message?: string };
      throw new HttpError(status.code ?? 500, status, `watch error event: ${status.message ?? 'no message'}`);
    }
    this.eventsSinceList++;
    const obj = e.object;
    const rv = obj.metadata?.resourceVersion;
    if (e.type === 'BOOKMARK') {
      if (rv) this.resourceVersion = rv;
      return;
    }
    const key = objectKey(obj);
    const old = this.store.get(key);
    if (e.type === 'DELETED') {
      this.store.delete(key);
      this.emitDelete(obj);
    } else {
      this.store.set(key, obj);
      if (old) this.emitUpdate(old, obj);
      else this.emitAdd(obj);
    }
    if (rv) this.resourceVersion = rv;
  }

  private resync(): void {
    if (!this.synced) return;
    for (const obj of this.store.values()) this.emitUpdate(obj, obj);
  }

  private call(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      // A faulty handler must not stop the informer; it is a bug to fix, so log it loudly.
      this.log.error({ err, handler: what }, 'informer handler threw');
    }
  }
  private emitAdd(obj: T): void {
    for (const h of this.adds) this.call('add', () => h(obj));
  }
  private emitUpdate(oldObj: T, newObj: T): void {
    for (const h of this.updates) this.call('update', () => h(oldObj, newObj));
  }
  private emitDelete(obj: T): void {
    for (const h of this.deletes) this.call('delete', () => h(obj));
  }
}
