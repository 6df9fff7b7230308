/**
 * Raw requests to the API server over the KubeConfig's credentials and its shared agent: used for LIST
 * and WATCH, where we need an AbortSignal that covers every phase (connect, headers, body) and the
 * status body on errors, which client-node's Watch does not give.
 */
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { deadlineMs } from './client.js';
import { HttpError } from './errors.js';

export type Query = Record<string, string | number | boolean | undefined>;

export interface RawRequest {
  /** Path below the server URL, e.g. /apis/orchestrator.dev/v1alpha1/agents. */
  path: string;
  query?: Query;
  signal?: AbortSignal;
}

/** Sends a GET and resolves with the response once its headers arrive; the caller reads the body. */
export async function openRequest(kc: KubeConfig, r: RawRequest): Promise<IncomingMessage> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/+$/, '') + r.path);
  for (const [k, v] of Object.entries(r.query ?? {})) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  const opts: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  r.signal?.throwIfAborted();
  const lib = url.protocol === 'http:' ? http : https;
  return new Promise((resolve, reject) => {
    const req = lib.request(url, {
      method: 'GET',
      agent: opts.agent,
      auth: opts.auth,
      headers: { ...opts.headers, Accept: 'application/json' },
      signal: r.signal,
    });
    req.once('response', resolve);
    req.once('error', reject);
    req.end();
  });
}

/** Reads the whole body as text (bounded by the request's signal). */
async function readText(res: IncomingMessage): Promise<string> {
  res.setEncoding('utf8');
  let text = '';
  for await (const chunk of res) text += chunk as string;
  return text;
}

function parseOrText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.slice(0, 1024) };
  }
}

/** Throws HttpError with the server's Status body unless the response is 2xx. */
async function ensureOk(res: IncomingMessage): Promise<void> {
  const code = res.statusCode ?? 0;
  if (code >= 200 && code < 300) return;
  throw new HttpError(code, parseOrText(await readText(res)));
}

/** A GET returning parsed JSON, with a deadline. */
export async function requestJson<T>(kc: KubeConfig, r: RawRequest & { timeoutMs?: number }): Promise<T> {
  const deadline = AbortSignal.timeout(deadlineMs(r.timeoutMs));
  const signal = r.signal ? AbortSignal.any([r.signal, deadline]) : deadline;
  const res = await openRequest(kc, { ...r, signal });
  await ensureOk(res);
  return JSON.parse(await readText(res)) as T;
}

export interface WatchEvent<T = unknown> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

/**
 * Streams a watch: `onEvent` is called synchronously for every event line. Resolves when the server
 * ends the stream (e.g. its timeoutSeconds elapsed); rejects with HttpError on a non-2xx answer, with the
 * abort reason when `signal` aborts, with whatever `onEvent` throws (the connection is then closed), and
 * on a broken connection or an unparsable line.
 */
export async function watchStream<T>(kc: KubeConfig, path: string, query: Query, signal: AbortSignal, onEvent: (e: WatchEvent<T>) => void): Promise<void> {
  let res: IncomingMessage | undefined;
  try {
    res = await openRequest(kc, { path, query: { ...query, watch: 'true' }, signal });
    await ensureOk(res);
    res.setEncoding('utf8');
    let buffered = '';
    const deliver = (line: string) => {
      if (line.trim() === '') return;
      onEvent(JSON.parse(line) as WatchEvent<T>);
    };
    for await (const chunk of res) {
      buffered += chunk as string;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        deliver(line);
      }
    }
    deliver(buffered);
  } catch (err) {
    // Surface why we stopped (our watchdog, a stop) rather than the generic AbortError the socket reports.
    throw signal.aborted ? (signal.reason ?? err) : err;
  } finally {
    res?.destroy();
  }
}
