/**
 * The one way the node runtime starts a process (tmux clients, sandbox probes), counted by the operation it
 * serves. A spawn from the sidecar's large Node process is most of what a launch or a cleanup costs
 * in CPU (issue 8 allows two each), so the count is a metric: the sidecar exports it as
 * agent_operator_node_process_spawns_total{op}, and `npm run bench` divides it by what ran.
 *
 * The operation travels with the async context (launch() and cleanupAgent() set it), so a tmux read
 * shared by several callers (coalesce.ts) counts once, for the one whose call started it.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { execa, type Options } from 'execa';
import { Counter, type Registry } from 'prom-client';

/** launch(), cleanupAgent() (also the sweep's), and everything else (relist, heartbeat, observe). */
export const SPAWN_OPS = ['launch', 'cleanup', 'other'] as const;
export type SpawnOp = (typeof SPAWN_OPS)[number];

const currentOp = new AsyncLocalStorage<SpawnOp>();
const listeners = new Set<(op: SpawnOp) => void>();

/** Runs fn with every process it starts counted for `op`. */
export function withSpawnOp<T>(op: SpawnOp, fn: () => Promise<T>): Promise<T> {
  return currentOp.run(op, fn);
}

/** Calls `listener` for every process started from now on; returns the unsubscribe. */
export function onSpawn(listener: (op: SpawnOp) => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** execa(file, args, options), counted. */
export function spawnProcess<O extends Options>(file: string, args: readonly string[], options: O) {
  const op = currentOp.getStore() ?? 'other';
  for (const listener of listeners) listener(op);
  return execa(file, args, options);
}

/** agent_operator_node_process_spawns_total{op} in `registry`, counted from now on. */
export function registerSpawnMetric(registry: Registry): void {
  const spawns = new Counter({
    name: 'agent_operator_node_process_spawns_total',
    help: 'Processes the node runtime started (tmux clients, sandbox probes), by the operation they served',
    labelNames: ['op'],
    registers: [registry],
  });
  for (const op of SPAWN_OPS) spawns.inc({ op }, 0);
  onSpawn((op) => spawns.inc({ op }));
}
