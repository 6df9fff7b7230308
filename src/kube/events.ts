/**
 * An EventRecorder writing events.k8s.io/v1 Events. They share storage with core/v1 Events, where
 * `regarding` reads as `involvedObject`: `kubectl describe agent x` lists them (it selects core/v1
 * Events by involvedObject name, namespace, kind and uid).
 *
 * Like client-go's recorders it aggregates: the same type + reason + action + note about the same
 * object within `windowMs` bumps the first Event's `series.count` instead of creating a new Event; at
 * most one write per such series is in flight, later repeats are folded into the next write.
 *
 * Recording never throws and never blocks the caller: failures are logged, every write has a timeout.
 */
import { EventsV1Api, PatchStrategy, V1MicroTime, type EventsV1Event, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { withTimeout } from './backoff.js';
import { callOptions } from './client.js';
import { describeError, isNotFound } from './errors.js';
import { withDefaults } from './options.js';
import type { KubeObject } from './resources.js';

export type EventType = 'Normal' | 'Warning';

export interface EventRecorderOptions {
  logger: Logger;
  /** e.g. `orchestrator.dev/controller`. */
  reportingController: string;
  /** This process, e.g. the pod or host name. */
  reportingInstance: string;
  /** Deadline of each write. Default 10 s. */
  timeoutMs?: number;
  /** Repeats within this window join the first Event's series. Default 10 min (client-go's aggregation window). */
  windowMs?: number;
  /** Series remembered at most (oldest forgotten first). Default 4096. */
  maxSeries?: number;
  now?: () => number;
}

/**
 * The object an Event is about. apiVersion and kind must be set for `kubectl describe` to find the
 * Event: objects from ResourceClient and the informer have them (LIST items of core types do not).
 */
export type EventSubject = KubeObject;

interface Series {
  namespace: string;
  /** The Event's name (a new one if the first expired). */
  name: string;
  objectName: string;
  count: number;
  lastObserved: number;
  /** The Event exists on the server. */
  created: boolean;
  /** Changes not yet written. */
  dirty: boolean;
  writing: Promise<void> | undefined;
  build: (name: string) => EventsV1Event;
}

const DEFAULTS = { timeoutMs: 10_000, windowMs: 10 * 60_000, maxSeries: 4096, now: () => Date.now() };
/** Validation limits of events.k8s.io/v1. */
const NOTE_MAX_BYTES = 1024;
const REASON_MAX = 128;
const NAME_MAX = 253;

/** Cuts `s` to at most `max` UTF-8 bytes without splitting a character. */
export function truncateUtf8(s: string, max: number): string {
  if (Buffer.byteLength(s) <= max) return s;
  let out = Buffer.from(s).subarray(0, max).toString('utf8');
  // A cut in the middle of a character decodes as U+FFFD: drop it.
  while (out.endsWith('\uFFFD') || Buffer.byteLength(out) > max) out = out.slice(0, -1);
  return out;
}

export class EventRecorder {
  private readonly o: EventRecorderOptions & typeof DEFAULTS;
  private readonly api: EventsV1Api;
  private readonly series = new Map<string, Series>();
  private readonly inFlight = new Set<Promise<void>>();
  private counter = 0;

  constructor(kc: KubeConfig, options: EventRecorderOptions) {
    this.o = withDefaults(DEFAULTS, options);
    this.api = kc.makeApiClient(EventsV1Api);
  }

  normal(regarding: EventSubject, reason: string, note: string, action?: string): void {
    this.event(regarding, 'Normal', reason, note, action);
  }

  warning(regarding: EventSubject, reason: string, note: string, action?: string): void {
    this.event(regarding, 'Warning', reason, note, action);
  }

  /** Records an Event about `regarding`; `action` defaults to `reason`. */
  event(regarding: EventSubject, type: EventType, reason: string, note: string, action = reason): void {
    try {
      this.record(regarding, type, reason.slice(0, REASON_MAX), truncateUtf8(note, NOTE_MAX_BYTES), action.slice(0, REASON_MAX));
    } catch (err) {
      this.o.logger.error({ err, reason }, 'recording an event failed');
    }
  }

  /** Waits (at most `timeoutMs`) for the writes in flight; for shutdown and tests. */
  async flush(timeoutMs = this.o.timeoutMs): Promise<void> {
    const settled = async () => {
      while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    };
    await withTimeout(settled(), timeoutMs, 'events in flight').catch(() => undefined);
  }

  private record(regarding: EventSubject, type: EventType, reason: string, note: string, action: string): void {
    const meta = regarding.metadata ?? {};
    if (!regarding.kind || !regarding.apiVersion) this.o.logger.warn({ object: meta.name, reason }, 'event about an object without kind/apiVersion');
    const now = this.o.now();
    const key = JSON.stringify([meta.uid ?? '', meta.namespace ?? '', meta.name ?? '', regarding.kind, type, reason, action, note]);
    const existing = this.series.get(key);
    if (existing && now - existing.lastObserved <= this.o.windowMs) {
      existing.count++;
      existing.lastObserved = now;
      existing.dirty = true;
      this.pump(existing);
      return;
    }
    const namespace = meta.namespace || 'default';
    const ref = {
      apiVersion: regarding.apiVersion,
      kind: regarding.kind,
      name: meta.name,
      namespace: meta.namespace,
      uid: meta.uid,
      resourceVersion: meta.resourceVersion,
    };
    const eventTime = new V1MicroTime(now);
    const objectName = meta.name ?? 'unnamed';
    const s: Series = {
      namespace,
      name: this.eventName(objectName, now),
      objectName,
      count: 1,
      lastObserved: now,
      created: false,
      dirty: true,
      writing: undefined,
      build: (name) => ({
        apiVersion: 'events.k8s.io/v1',
        kind: 'Event',
        metadata: { name, namespace },
        eventTime,
        type,
        reason,
        action,
        note,
        regarding: ref,
        reportingController: this.o.reportingController,
        reportingInstance: this.o.reportingInstance,
      }),
    };
    this.series.delete(key);
    this.series.set(key, s);
    this.evict();
    this.pump(s);
  }

  /** client-go's naming: `<object name>.<hex nanoseconds>`, unique per process by a counter. */
  private eventName(objectName: string, now: number): string {
    const suffix = (BigInt(now) * 1_000_000n + BigInt(this.counter++ % 1_000_000)).toString(16);
    // A cut name may end in '-' or '.', which no DNS subdomain label may: trim them or the Event is rejected.
    return `${objectName.slice(0, NAME_MAX - suffix.length - 1).replace(/[-.]+$/, '')}.${suffix}`;
  }

  private evict(): void {
    for (const [key, s] of this.series) {
      if (this.series.size <= this.o.maxSeries) return;
      if (!s.writing) this.series.delete(key);
    }
  }

  /** Starts a write loop for the series unless one is running (it picks up the latest count). */
  private pump(s: Series): void {
    if (s.writing) return;
    const run = (async () => {
      while (s.dirty) {
        s.dirty = false;
        await this.write(s);
      }
    })().finally(() => {
      s.writing = undefined;
      this.inFlight.delete(run);
    });
    s.writing = run;
    this.inFlight.add(run);
  }

  private async write(s: Series): Promise<void> {
    const opts = callOptions({ timeoutMs: this.o.timeoutMs });
    const count = s.count;
    try {
      if (!s.created) {
        const body = s.build(s.name);
        if (count > 1) body.series = { count, lastObservedTime: new V1MicroTime(s.lastObserved) };
        await this.api.createNamespacedEvent({ namespace: s.namespace, body }, opts);
        s.created = true;
        return;
      }
      const patch = { series: { count, lastObservedTime: new V1MicroTime(s.lastObserved) } };
      await this.api.patchNamespacedEvent({ namespace: s.namespace, name: s.name, body: patch }, callOptions({ timeoutMs: this.o.timeoutMs, contentType: PatchStrategy.MergePatch }));
    } catch (err) {
      if (s.created && isNotFound(err)) {
        // The Event expired (events have a TTL) while the series went on: start a new one.
        s.created = false;
        s.name = this.eventName(s.objectName, this.o.now());
        s.dirty = true;
        return;
      }
      this.o.logger.warn({ err: describeError(err), event: `${s.namespace}/${s.name}` }, 'writing an event failed');
    }
  }
}
