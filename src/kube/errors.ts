/**
 * Classifying API errors. Three shapes reach callers: client-node's ApiException (`.code`, generated
 * API clients), our HttpError (`.statusCode`, raw list/watch requests) and plain network errors.
 */
import { ApiException } from '@kubernetes/client-node';

/**
 * A non-2xx HTTP answer: one received (a raw request to the API server; `body` is the parsed
 * metav1.Status when the server sent one) or one to send (the report endpoint; `headers` go with it).
 */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly body: unknown,
    message?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message ?? `HTTP ${statusCode}: ${statusMessage(body) ?? 'no message'}`);
    this.name = 'HttpError';
  }
}

/**
 * Our own write was based on stale state (a failed JSON-patch `test`, a precondition that no longer
 * holds). Counts as a conflict: re-read and requeue.
 */
export class StaleObjectError extends Error {
  readonly statusCode = 409;
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'StaleObjectError';
  }
}

/** The HTTP status of an API error, or undefined for network errors and anything else. */
export function statusCode(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  if (typeof err === 'object' && err !== null) {
    const e = err as { statusCode?: unknown; code?: unknown };
    if (typeof e.statusCode === 'number') return e.statusCode;
    // ApiException from another copy of client-node (instanceof fails across copies).
    if (typeof e.code === 'number' && 'body' in e) return e.code;
  }
  return undefined;
}

export const isConflict = (err: unknown): boolean => statusCode(err) === 409;
export const isNotFound = (err: unknown): boolean => statusCode(err) === 404;
/** 410 Gone: the resourceVersion asked for is older than what etcd still holds. */
export const isGone = (err: unknown): boolean => statusCode(err) === 410;
export const isInvalid = (err: unknown): boolean => statusCode(err) === 422;

/** The metav1.Status body of an API error (parsed), when there is one. */
/** The fields of a metav1.Status this code reads. */
export interface StatusBody {
  message?: string;
  reason?: string;
  code?: number;
  details?: { causes?: unknown[] };
}

export function statusBody(err: unknown): StatusBody | undefined {
  if (typeof err !== 'object' || err === null || !('body' in err)) return undefined;
  let body = err.body;
  if (typeof body === 'string') {
    const text = body;
    try {
      body = JSON.parse(text);
    } catch {
      return { message: text };
    }
  }
  return typeof body === 'object' && body !== null ? body : undefined;
}

function statusMessage(body: unknown): string | undefined {
  return typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string' ? (body as { message: string }).message : undefined;
}

/** A short, log-friendly description (ApiException's own message embeds headers and the whole body). */
export function describeError(err: unknown): string {
  const code = statusCode(err);
  if (code !== undefined) {
    const msg = statusBody(err)?.message ?? (err instanceof HttpError || err instanceof StaleObjectError ? err.message : '');
    return `HTTP ${code}${msg ? `: ${msg}` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}
