/**
 * The frame of a long-running component: metrics and probe servers up, the work run until
 * SIGINT/SIGTERM, then drained, and everything closed in the end.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { closeConnections } from '../kube/client.js';
import type { ReconcileMetrics } from '../observability/metrics.js';
import { startProbeServers, type Check } from '../observability/probes.js';
import { untilSignal } from './flags.js';

export async function serve(o: {
  name: string;
  logger: Logger;
  kubeConfig: KubeConfig;
  metrics: ReconcileMetrics;
  flags: Record<string, unknown>;
  readyz: Record<string, Check>;
  /** Liveness checks beside `ping`. */
  healthz?: Record<string, Check>;
  /** Logged with the start line. */
  facts: Record<string, unknown>;
  /** What a shutdown means for this component, for the log. */
  onShutdown: string;
  run: (signal: AbortSignal) => Promise<void>;
}): Promise<number> {
  const probes = await startProbeServers({
    metricsAddr: String(o.flags['metrics-bind-address']),
    healthAddr: String(o.flags['health-probe-bind-address']),
    registry: o.metrics.registry,
    healthz: { ping: () => undefined, ...o.healthz },
    readyz: o.readyz,
  });
  o.logger.info({ metrics: probes.metricsUrl, health: probes.healthUrl, ...o.facts }, `${o.name} starting`);
  const stop = new AbortController();
  const signal = untilSignal();
  void signal.promise.then((sig) => {
    o.logger.info({ signal: sig }, `shutting down: ${o.onShutdown}`);
    stop.abort();
  });
  try {
    await o.run(stop.signal);
  } finally {
    signal.dispose();
    await probes.close();
    closeConnections(o.kubeConfig);
  }
  o.logger.info(`${o.name} stopped`);
  return 0;
}
