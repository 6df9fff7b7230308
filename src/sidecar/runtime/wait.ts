/** Bounded polling of an observable condition (never a bare sleep-and-hope) and per-key serialisation. */
import { setTimeout as sleep } from 'node:timers/promises';
import { WaitTimeoutError } from '../../kube/backoff.js';

export interface WaitOptions {
  timeoutMs: number;
  /** The first pause between probes; later ones grow (see nextInterval). */
  intervalMs?: number;
  /** The longest pause between probes. */
  maxIntervalMs?: number;
  /** Named in the timeout error. */
  what: string;
}

/**
 * The pause after `intervalMs`: polls start quick and slow down, so a change that comes at once
 * is seen at once, and one that takes seconds (a grace period) costs few probes. The probes here
 * scan /proc or spawn tmux: at a fixed 20 ms, ten agents stopping at once would swamp two cores.
 */
export function nextInterval(intervalMs: number, maxIntervalMs: number): number {
  return Math.min(maxIntervalMs, Math.ceil(intervalMs * 1.5));
}

/**
 * Calls `probe` until it returns a value other than undefined, pausing between calls as
 * nextInterval says, for at most `timeoutMs` (the probe always runs at least once, and once more
 * at the deadline).
 */
export async function waitFor<T>(probe: () => Promise<T | undefined>, opts: WaitOptions): Promise<T> {
  let interval = opts.intervalMs ?? 10;
  const max = Math.max(interval, opts.maxIntervalMs ?? 100);
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    const left = deadline - Date.now();
    if (left <= 0) throw new WaitTimeoutError(opts.what, opts.timeoutMs);
    await sleep(Math.min(interval, left));
    interval = nextInterval(interval, max);
  }
}

const tails = new Map<string, Promise<void>>();

/**
 * Runs `fn` once every earlier call with the same key has finished (in call order). Launch and
 * cleanup of one agent take the same key, so a duplicate event or the sweeper never interleaves
 * with them inside one sidecar process.
 */
export async function withKeyLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const previous = tails.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => {
    release = resolve;
  });
  const tail = previous.then(() => mine);
  tails.set(key, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (tails.get(key) === tail) tails.delete(key);
  }
}
