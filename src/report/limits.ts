/**
 * Per-agent caps on what an agent may send to its report channel: reports per minute and bytes per
 * minute, each a token bucket (full at the start, refilled continuously, so a burst up to the cap is
 * fine and a steady flood is held to the rate). One agent's flood costs only that agent: the others
 * have buckets of their own. The journal's size on disk is bounded elsewhere.
 */
import { MAX_BODY_BYTES } from './protocol.js';

export interface ReportCaps {
  /** Reports (requests that name an agent) per minute, as a burst and as a sustained rate. */
  maxPerMinute: number;
  /** Request body bytes per minute; at least MAX_BODY_BYTES, so every valid report can pass. */
  maxBytesPerMinute: number;
}

export const DEFAULT_REPORT_CAPS: ReportCaps = { maxPerMinute: 120, maxBytesPerMinute: 1024 * 1024 };

/** Why caps are not usable (pure), or undefined. */
export function capsProblem(c: ReportCaps): string | undefined {
  if (!Number.isInteger(c.maxPerMinute) || c.maxPerMinute < 1) return `reports per minute must be a positive integer, got ${c.maxPerMinute}`;
  if (!Number.isInteger(c.maxBytesPerMinute) || c.maxBytesPerMinute < MAX_BODY_BYTES) {
    return `bytes per minute must be an integer of at least ${MAX_BODY_BYTES} (the largest report), got ${c.maxBytesPerMinute}`;
  }
  return undefined;
}

export interface Bucket {
  tokens: number;
  atMs: number;
}

export type Take = { ok: true; bucket: Bucket } | { ok: false; bucket: Bucket; retryAfterMs: number };

/**
 * Takes `amount` from a bucket of `capacity` refilled at `capacity` per minute (pure). A refusal
 * takes nothing and says when `amount` will be there.
 */
export function take(bucket: Bucket | undefined, capacity: number, amount: number, nowMs: number): Take {
  const perMs = capacity / 60_000;
  const start = bucket ?? { tokens: capacity, atMs: nowMs };
  const tokens = Math.min(capacity, start.tokens + Math.max(0, nowMs - start.atMs) * perMs);
  const refilled = { tokens, atMs: nowMs };
  if (tokens >= amount) return { ok: true, bucket: { tokens: tokens - amount, atMs: nowMs } };
  return { ok: false, bucket: refilled, retryAfterMs: Math.ceil((amount - tokens) / perMs) };
}

export type CapKind = 'rate' | 'bytes';

export interface Refusal {
  kind: CapKind;
  retryAfterSeconds: number;
  message: string;
}

/** The buckets of every agent with a report in the last minute or so. */
export class ReportLimiter {
  private readonly buckets = new Map<string, { count?: Bucket; bytes?: Bucket }>();

  constructor(private readonly caps: ReportCaps = DEFAULT_REPORT_CAPS) {
    const problem = capsProblem(caps);
    if (problem) throw new Error(`report caps: ${problem}`);
  }

  /** One more report from `uid`: undefined when admitted (and counted), else why not. */
  admit(uid: string, nowMs = Date.now()): Refusal | undefined {
    return this.take(uid, 'rate', 1, nowMs);
  }

  /** `bytes` of body from `uid`: undefined when within the cap (and counted), else why not. */
  charge(uid: string, bytes: number, nowMs = Date.now()): Refusal | undefined {
    return this.take(uid, 'bytes', bytes, nowMs);
  }

  forget(uid: string): void {
    this.buckets.delete(uid);
  }

  private take(uid: string, kind: CapKind, amount: number, nowMs: number): Refusal | undefined {
    const entry = this.buckets.get(uid) ?? {};
    const field = kind === 'rate' ? 'count' : 'bytes';
    const capacity = kind === 'rate' ? this.caps.maxPerMinute : this.caps.maxBytesPerMinute;
    const r = take(entry[field], capacity, amount, nowMs);
    this.buckets.set(uid, { ...entry, [field]: r.bucket });
    this.prune(nowMs);
    if (r.ok) return undefined;
    const retryAfterSeconds = Math.max(1, Math.ceil(r.retryAfterMs / 1000));
    const what = kind === 'rate' ? `${capacity} reports` : `${capacity} bytes of reports`;
    return { kind, retryAfterSeconds, message: `report ${kind === 'rate' ? 'rate' : 'bytes'} cap reached: this agent may send at most ${what} per minute; retry in ${retryAfterSeconds} s` };
  }

  /** Buckets full again are forgotten (a full bucket is what a new one is), so the map stays small. */
  private prune(nowMs: number): void {
    if (this.buckets.size < 1024) return;
    for (const [uid, e] of this.buckets) if ((!e.count || nowMs - e.count.atMs > 60_000) && (!e.bytes || nowMs - e.bytes.atMs > 60_000)) this.buckets.delete(uid);
  }
}
