/** Delays, sleeps and timeouts shared by every layer (the informer, the work queue, leader election, the sidecar, the report server). */

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  /** Fraction of the delay added at random (0.5 → up to +50 %), so that many clients do not retry in step. */
  jitter?: number;
}

/** base·2^attempt capped at max, plus jitter. `attempt` counts from 0. `random` is injectable for tests. */
export function backoffDelay(attempt: number, o: BackoffOptions, random: () => number = Math.random): number {
  // 2^attempt overflows to Infinity for big attempts; Math.min copes, but keep the exponent bounded anyway.
  const exp = Math.min(o.baseMs * 2 ** Math.min(attempt, 64), o.maxMs);
  return Math.round(exp * (1 + (o.jitter ?? 0) * random()));
}

/** Uniform random integer in [min, max]. */
export function randomBetween(min: number, max: number, random: () => number = Math.random): number {
  return Math.floor(min + (max - min + 1) * random());
}

/** Resolves after `ms`, or early (without throwing) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class WaitTimeoutError extends Error {
  constructor(what: string, timeoutMs: number) {
    super(`timed out after ${timeoutMs} ms waiting for ${what}`);
    this.name = 'WaitTimeoutError';
  }
}

/** Resolves or rejects like `promise`, or rejects once `timeoutMs` passed (the timer never outlives it). */
export async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(what, timeoutMs)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
