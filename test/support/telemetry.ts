/** What the operator tells admins, read the way they read it: Events about an Agent, and Prometheus metrics. */
import { EventsV1Api, type EventsV1Event } from '@kubernetes/client-node';
import { kubeConfig, waitFor } from './cluster.js';

/** events.k8s.io Events about the object with this UID. */
export async function eventsAbout(namespace: string, uid: string): Promise<EventsV1Event[]> {
  const api = kubeConfig().makeApiClient(EventsV1Api);
  const list = await api.listNamespacedEvent({ namespace });
  return list.items.filter((e) => e.regarding?.uid === uid);
}

/**
 * How often each reason was recorded about the object: a repeat is a new Event or a bump of an
 * Event's series.count (the recorder aggregates), so both count.
 */
export async function eventCounts(namespace: string, uid: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const e of await eventsAbout(namespace, uid)) {
    const reason = e.reason ?? '';
    counts[reason] = (counts[reason] ?? 0) + (e.series?.count ?? 1);
  }
  return counts;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (the sample lines; comments skipped). */
export function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** GET <metricsUrl>/metrics, checked to be Prometheus text, parsed. */
export async function scrape(metricsUrl: string): Promise<Sample[]> {
  const res = await fetch(`${metricsUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`GET ${metricsUrl}/metrics: HTTP ${res.status}`);
  const type = res.headers.get('content-type') ?? '';
  if (!type.startsWith('text/plain')) throw new Error(`GET ${metricsUrl}/metrics: content-type ${type}, not Prometheus text`);
  return parsePrometheus(await res.text());
}

/** The sum of the samples named `name` whose labels include `labels`; undefined when there is none. */
export function metricValue(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const matching = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return matching.length === 0 ? undefined : matching.reduce((sum, s) => sum + s.value, 0);
}

/** Waits until every reason was recorded about the object; returns the counts then. */
export function waitForEvents(namespace: string, uid: string, reasons: readonly string[], timeoutMs = 15_000): Promise<Record<string, number>> {
  return waitFor(
    async () => {
      const counts = await eventCounts(namespace, uid);
      return reasons.every((r) => counts[r]) ? counts : undefined;
    },
    { timeoutMs, what: `Events ${reasons.join(', ')} about ${namespace}/${uid}` },
  );
}

/** The Events of an agent that ran once and exited 0, each recorded once. */
export const EXITED_ONCE = { Scheduled: 1, SessionStarted: 1, Exited: 1, CleanedUp: 1 } as const;
