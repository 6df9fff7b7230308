/**
 * Lease-based leader election (coordination.k8s.io/v1), following client-go's leaderelection package:
 *
 * - a candidate takes the Lease when it is free (no holder, e.g. released) or when its record has not
 *   changed for leaseDuration as measured on OUR clock since we saw it change (clocks of different
 *   machines are never compared);
 * - every write is an update at the resourceVersion we read (optimistic concurrency), so two
 *   candidates can never both believe they took it;
 * - the leader renews every retryPeriod; if it cannot renew for renewDeadline (< leaseDuration), or sees
 *   another holder, it stops leading at once (onStoppedLeading: callers exit), before anyone else may
 *   take over;
 * - on graceful shutdown it releases the Lease (empty holder), so the next candidate takes over at once.
 *
 * Defaults are controller-runtime's: lease 15 s, renew deadline 10 s, retry period 2 s.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease, type V1LeaseSpec } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { sleep } from './backoff.js';
import { callOptions } from './client.js';
import { describeError, isConflict, isNotFound } from './errors.js';
import { withDefaults } from './options.js';

export interface LeaderElectionOptions {
  namespace: string;
  /** Lease name, e.g. `agent-operator-controller`. */
  name: string;
  /** Unique per process; see defaultIdentity(). */
  identity: string;
  logger: Logger;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Clear the holder on graceful shutdown so the next candidate need not wait. Default true. */
  releaseOnCancel?: boolean;
  /** Called once leading; `signal` aborts when leadership ends. May run for as long as it leads. */
  onStartedLeading: (signal: AbortSignal) => void | Promise<void>;
  /** Called when leadership ends, whatever the reason (lost, or shut down). Callers exit immediately. */
  onStoppedLeading: () => void;
  /** Called when the observed holder changes (including to ourselves). */
  onNewLeader?: (identity: string) => void;
  random?: () => number;
}

const DEFAULTS = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, releaseOnCancel: true };
/** client-go's JitterFactor for acquire retries. */
const JITTER = 1.2;

/** `<hostname>_<uuid>`, as client-go's examples build it. */
export function defaultIdentity(): string {
  return `${hostname()}_${randomUUID()}`;
}

type Attempt = 'acquired' | 'heldByOther' | 'failed';

export class LeaderElector {
  private readonly o: LeaderElectionOptions & typeof DEFAULTS;
  private readonly api: CoordinationV1Api;
  private readonly log: Logger;
  private leading = false;
  /** The last lease record seen and when (monotonic ms) it was first seen in that state. */
  private observed: { key: string; at: number; holder: string; durationMs: number } | undefined;

  constructor(kc: KubeConfig, options: LeaderElectionOptions) {
    this.o = withDefaults(DEFAULTS, options);
    const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = this.o;
    if (!(leaseDurationMs > renewDeadlineMs)) throw new Error('leaseDurationMs must be greater than renewDeadlineMs');
    if (!(renewDeadlineMs > retryPeriodMs * JITTER)) throw new Error(`renewDeadlineMs must be greater than retryPeriodMs × ${JITTER}`);
    this.api = kc.makeApiClient(CoordinationV1Api);
    this.log = options.logger.child({ lease: `${options.namespace}/${options.name}`, identity: options.identity });
  }

  isLeader(): boolean {
    return this.leading;
  }

  /**
   * Campaigns until leading, leads until the lease is lost or `signal` aborts, then returns (after
   * onStoppedLeading). Returns without calling anything if `signal` aborts before leadership.
   */
  async run(signal: AbortSignal): Promise<void> {
    const { retryPeriodMs, renewDeadlineMs } = this.o;
    const random = this.o.random ?? Math.random;
    while (!signal.aborted) {
      if ((await this.tryAcquireOrRenew(renewDeadlineMs)) === 'acquired') break;
      await sleep(retryPeriodMs * (1 + JITTER * random()), signal);
    }
    if (signal.aborted) return;

    this.leading = true;
    this.log.info('started leading');
    const leadership = new AbortController();
    Promise.resolve()
      .then(() => this.o.onStartedLeading(leadership.signal))
      .catch((err: unknown) => this.log.error({ err }, 'onStartedLeading failed'));

    let lastRenew = performance.now();
    let lost = false;
    while (!signal.aborted) {
      await sleep(retryPeriodMs, signal);
      if (signal.aborted) break;
      const left = lastRenew + renewDeadlineMs - performance.now();
      const r = await this.tryAcquireOrRenew(Math.max(left, 1));
      if (r === 'acquired') {
        lastRenew = performance.now();
        continue;
      }
      if (r === 'heldByOther' || performance.now() - lastRenew >= renewDeadlineMs) {
        lost = true;
        this.log.error({ reason: r === 'heldByOther' ? 'another holder' : 'renew deadline exceeded' }, 'leadership lost');
        break;
      }
    }
    this.leading = false;
    leadership.abort();
    if (!lost && this.o.releaseOnCancel) await this.release();
    this.log.info('stopped leading');
    this.o.onStoppedLeading();
  }

  private async tryAcquireOrRenew(timeoutMs: number): Promise<Attempt> {
    const { namespace, name, identity } = this.o;
    const opts = callOptions({ timeoutMs });
    const durationS = Math.ceil(this.o.leaseDurationMs / 1000);
    const now = new V1MicroTime();
    try {
      let lease: V1Lease;
      try {
        lease = await this.api.readNamespacedLease({ namespace, name }, opts);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        const spec: V1LeaseSpec = { holderIdentity: identity, leaseDurationSeconds: durationS, acquireTime: now, renewTime: now, leaseTransitions: 0 };
        const created = await this.api.createNamespacedLease({ namespace, body: { metadata: { namespace, name }, spec } }, opts);
        this.observe(created);
        return 'acquired';
      }
      this.observe(lease);
      const spec = lease.spec ?? {};
      const holder = spec.holderIdentity ?? '';
      const ours = holder === identity;
      if (holder && !ours && this.observed && performance.now() < this.observed.at + this.observed.durationMs) return 'heldByOther';
      const next: V1LeaseSpec = {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: durationS,
        renewTime: now,
        acquireTime: ours && spec.acquireTime ? spec.acquireTime : now,
        leaseTransitions: ours ? (spec.leaseTransitions ?? 0) : (spec.leaseTransitions ?? 0) + 1,
      };
      const updated = await this.api.replaceNamespacedLease({ namespace, name, body: { ...lease, spec: next } }, opts);
      this.observe(updated);
      return 'acquired';
    } catch (err) {
      // 409: someone else wrote first (another candidate, or our previous write timed out but landed).
      if (isConflict(err)) this.log.debug('lease update conflict');
      else this.log.warn({ err: describeError(err) }, 'lease acquire/renew failed');
      return 'failed';
    }
  }

  /** Records the lease's state; the expiry clock restarts whenever the record changes. */
  private observe(lease: V1Lease): void {
    const s = lease.spec ?? {};
    const holder = s.holderIdentity ?? '';
    const key = JSON.stringify([holder, String(s.renewTime ?? ''), String(s.acquireTime ?? ''), s.leaseDurationSeconds, s.leaseTransitions]);
    if (this.observed?.key === key) return;
    const previousHolder = this.observed?.holder;
    this.observed = { key, at: performance.now(), holder, durationMs: (s.leaseDurationSeconds ?? Math.ceil(this.o.leaseDurationMs / 1000)) * 1000 };
    if (holder && holder !== previousHolder) {
      this.log.info({ holder }, 'new leader observed');
      this.o.onNewLeader?.(holder);
    }
  }

  /** Gives the lease up (if still ours): empty holder, 1 s duration, as client-go does. */
  private async release(): Promise<void> {
    const { namespace, name, identity } = this.o;
    const opts = callOptions({ timeoutMs: this.o.renewDeadlineMs });
    try {
      const lease = await this.api.readNamespacedLease({ namespace, name }, opts);
      if (lease.spec?.holderIdentity !== identity) return;
      const now = new V1MicroTime();
      const spec: V1LeaseSpec = { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now };
      await this.api.replaceNamespacedLease({ namespace, name, body: { ...lease, spec } }, opts);
      this.log.info('lease released');
    } catch (err) {
      this.log.warn({ err: describeError(err) }, 'lease release failed; the next leader waits for it to expire');
    }
  }
}
