/** Prometheus metrics, named as controller-runtime names its own so existing dashboards apply. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueMetrics, ReconcileLabel } from '../kube/workqueue.js';

/** Every result label (a missing one fails to compile). */
const RECONCILE_LABELS = Object.keys({ success: 0, error: 0, requeue: 0, requeue_after: 0 } satisfies Record<ReconcileLabel, 0>) as ReconcileLabel[];

export interface ReconcileMetrics {
  registry: Registry;
  reconcileTotal: Counter<'controller' | 'result'>;
  reconcileErrors: Counter<'controller'>;
  reconcileTime: Histogram<'controller'>;
  queueDepth: Gauge<'name'>;
  queueAdds: Counter<'name'>;
  queueRetries: Counter<'name'>;
}

/** A fresh registry with process metrics and the reconcile/workqueue families. */
export function newReconcileMetrics(): ReconcileMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    reconcileTotal: new Counter({
      name: 'controller_runtime_reconcile_total',
      help: 'Total number of reconciliations per controller',
      labelNames: ['controller', 'result'],
      registers: [registry],
    }),
    reconcileErrors: new Counter({
      name: 'controller_runtime_reconcile_errors_total',
      help: 'Total number of reconciliation errors per controller',
      labelNames: ['controller'],
      registers: [registry],
    }),
    reconcileTime: new Histogram({
      name: 'controller_runtime_reconcile_time_seconds',
      help: 'Length of time per reconciliation per controller',
      labelNames: ['controller'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    queueDepth: new Gauge({ name: 'workqueue_depth', help: 'Current depth of workqueue', labelNames: ['name'], registers: [registry] }),
    queueAdds: new Counter({ name: 'workqueue_adds_total', help: 'Total number of adds handled by workqueue', labelNames: ['name'], registers: [registry] }),
    queueRetries: new Counter({
      name: 'workqueue_retries_total',
      help: 'Total number of retries handled by workqueue',
      labelNames: ['name'],
      registers: [registry],
    }),
  };
}

/** The workqueue_* hooks for a queue named `name`; its series exist (at 0) from the start. */
export function queueMetricsFor(m: ReconcileMetrics, name: string): QueueMetrics {
  m.queueDepth.set({ name }, 0);
  m.queueAdds.inc({ name }, 0);
  m.queueRetries.inc({ name }, 0);
  return {
    add: () => m.queueAdds.inc({ name }),
    depth: (n) => m.queueDepth.set({ name }, n),
    retry: () => m.queueRetries.inc({ name }),
  };
}

/**
 * runWorkers' onReconcile for the controller_runtime_reconcile_* families of `controller`. Its series
 * start at 0, as controller-runtime's do, so a rate or an alert on errors works before the first one.
 */
export function reconcileObserver(m: ReconcileMetrics, controller: string): (o: { result: ReconcileLabel; seconds: number }) => void {
  for (const result of RECONCILE_LABELS) m.reconcileTotal.inc({ controller, result }, 0);
  m.reconcileErrors.inc({ controller }, 0);
  m.reconcileTime.zero({ controller });
  return ({ result, seconds }) => {
    m.reconcileTotal.inc({ controller, result });
    if (result === 'error') m.reconcileErrors.inc({ controller });
    m.reconcileTime.observe({ controller }, seconds);
  };
}
